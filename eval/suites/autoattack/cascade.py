"""AutoAttack's standard cascade on one target under one norm: APGD-CE, APGD-T, FAB-T, Square, each on the examples
nothing before it broke (APGD-T and FAB-T once per target class, the most likely wrong class first).

Every adversarial an attack returns is moved into [0, 1] and the eps-ball (`threat.project`) and scored on the exact
model; only then does it count. Successes the attack's own model claimed that the exact model does not confirm are
counted as `unverified`: adversarials within eps on the model the attack ran on that the exact model classifies
right (for binarized variants the BPDA surrogate has the exact forward pass, so these are rare: rounding at the
threshold).
"""

from __future__ import annotations

import time

import numpy as np

from dim_tf.eval.attacks import fab
from dim_tf.eval.suites.autoattack import art_attacks
from dim_tf.eval.suites.autoattack.settings import AutoAttackConfig
from dim_tf.eval.suites.autoattack.targets import Target
from dim_tf.eval.threat import TOLERANCE, ThreatModel, project

# name -> (targeted, uses the gradient, where the code comes from)
ATTACKS = {
    "apgd-ce": (False, True, f"ART {art_attacks.ART_VERSION} AutoProjectedGradientDescent, cross-entropy"),
    "apgd-t": (True, True, f"ART {art_attacks.ART_VERSION} AutoProjectedGradientDescent, targeted DLR"),
    "fab-t": (True, True, "own FAB-T (ART has no FAB): eval/attacks/fab.py"),
    "square": (False, False, f"ART {art_attacks.ART_VERSION} SquareAttack (L2 window fix: art_attacks.py)"),
}


def parameters(config: AutoAttackConfig) -> dict:
    """Each attack's parameters as the report records them."""
    return {"apgd-ce": {"iterations": config.apgd_steps, "restarts": 1, "initial_step": "2 eps"},
            "apgd-t": {"iterations": config.apgd_steps, "restarts": 1, "initial_step": "2 eps",
                       "target_classes": config.targets},
            "fab-t": {"iterations": config.fab_steps, "restarts": 1, "target_classes": config.targets,
                      "alpha_max": fab.ALPHA_MAX, "eta": fab.ETA, "beta": fab.BETA},
            "square": {"queries": config.square_queries, "p_init": 0.8, "restarts": 1}}


class Run:
    """The cascade's state on N examples: which are still robust, which attack broke each, at what distance."""

    def __init__(self, target: Target, x: np.ndarray, y: np.ndarray, norm: ThreatModel, config: AutoAttackConfig):
        from dim_tf import predict

        self.target, self.x, self.y, self.norm, self.config = target, x, y, norm, config
        self.eps = config.eps(norm)
        scores = predict.scores(target.exact, x, config.batch_size, check=False)
        self.correct = scores.argmax(axis=1) == y
        self.ranked = np.argsort(-scores, axis=1, kind="stable")  # column k: the k-th most likely class
        self.robust = self.correct.copy()
        self.found_by = np.array([None if c else "misclassified" for c in self.correct], dtype=object)
        self.distance = np.where(self.correct, np.inf, 0.0)
        self.adversarials = x.copy()
        self.estimator = art_attacks.classifier(target.differentiable, target.logit_scale)
        self.dlr_estimator = art_attacks.classifier(target.differentiable, target.logit_scale,
                                                    art_attacks.DifferenceLogitsRatio())
        self.exact_estimator = art_attacks.classifier(target.exact, target.logit_scale, remember=True)

    def labels(self, model, images: np.ndarray) -> np.ndarray:
        from dim_tf import predict

        return predict.labels(model, images, self.config.batch_size, check=False)

    def craft(self, name: str, idx: np.ndarray, rank: int | None) -> tuple[np.ndarray, object]:
        """(the attack's adversarials for examples `idx`, the model it ran on); `rank` picks the target class."""
        x, y, c = self.x[idx], self.y[idx], self.config
        if name == "apgd-ce":
            return art_attacks.apgd(self.estimator, x, y, self.norm, self.eps, c.apgd_steps, c.batch_size,
                                    targeted=False), self.target.differentiable
        if name == "apgd-t":
            return art_attacks.apgd(self.dlr_estimator, x, self.ranked[idx, rank], self.norm, self.eps,
                                    c.apgd_steps, c.batch_size, targeted=True), self.target.differentiable
        if name == "fab-t":
            return fab.fab_targeted(self.target.differentiable, x, y, self.ranked[idx, rank], self.norm, self.eps,
                                    c.fab_steps), self.target.differentiable
        return art_attacks.square(self.exact_estimator, x, y, self.norm, self.eps, c.square_queries,
                                  c.batch_size), self.target.exact

    def verify(self, name: str, idx: np.ndarray, raw: np.ndarray, model) -> tuple[int, int]:
        """Projects and scores `raw` on the exact model; records the verified ones. Returns (verified, unverified)."""
        raw = np.asarray(raw, np.float32)
        finite = np.isfinite(raw).all(axis=(1, 2, 3))
        raw = np.where(finite[:, None, None, None], raw, self.x[idx])
        adv = project(raw, self.x[idx], self.norm, self.eps)
        fooled = self.labels(self.target.exact, adv) != self.y[idx]
        within = self.norm.distance(raw, self.x[idx]) <= self.eps + TOLERANCE
        claimed = within & (self.labels(model, np.clip(raw, 0.0, 1.0)) != self.y[idx])
        hit = idx[fooled]
        if len(hit):
            self.robust[hit] = False
            self.found_by[hit] = name
            self.distance[hit] = self.norm.distance(adv[fooled], self.x[hit])
            self.adversarials[hit] = adv[fooled]
        return int(fooled.sum()), int((claimed & ~fooled).sum())

    def attack(self, name: str, log) -> dict:
        """Runs attack `name` on the still-robust examples, in batches (and per target class); returns its record."""
        import keras

        targeted = ATTACKS[name][0]
        start, attacked = time.time(), int(self.robust.sum())
        verified = unverified = 0
        for rank in (range(1, self.config.targets + 1) if targeted else [None]):
            keras.utils.set_random_seed(self.config.seed + (rank or 0))  # numpy, random and TF: ART draws from numpy
            todo = np.flatnonzero(self.robust)
            for i in range(0, len(todo), self.config.batch_size):
                idx = todo[i:i + self.config.batch_size]
                raw, model = self.craft(name, idx, rank)
                v, u = self.verify(name, idx, raw, model)
                verified, unverified = verified + v, unverified + u
            if self.config.progress and targeted and len(todo):
                log(f"    {name} target {rank}: attacked {len(todo)}, {int(self.robust.sum())} robust, "
                    f"{time.time() - start:.0f}s")
        record = {"attack": name, "attacked": attacked, "broken": verified, "unverified": unverified,
                  "accuracy_after": float(self.robust.mean()), "seconds": time.time() - start}
        log(f"  {self.target.name} {self.norm.value} {self.eps:g} {name}: attacked {attacked}, broke {verified}"
            + (f" ({unverified} claimed but not confirmed by the exact model)" if unverified else "")
            + f", accuracy now {100 * record['accuracy_after']:.1f}%, {record['seconds']:.1f}s")
        return record


def evaluate(target: Target, x: np.ndarray, y: np.ndarray, norm: ThreatModel, config: AutoAttackConfig,
             log=print) -> dict:
    """The cascade on `target` under `norm`: its report entry (per attack and per sample); `adversarials` (NumPy,
    the verified adversarial or x) is for the caller and is dropped from the JSON."""
    start = time.time()
    run = Run(target, x, y, norm, config)
    log(f"{target.name} {norm.value} {run.eps:g}: AutoAttack on {len(x)} examples ({int(run.correct.sum())} "
        "correctly classified)")
    records = [run.attack(name, log) for name in ATTACKS]
    seconds = time.time() - start
    return {"eps": run.eps, "clean_accuracy": float(run.correct.mean()), "accuracy": float(run.robust.mean()),
            "attacks": records, "correct": run.correct.tolist(), "robust": run.robust.tolist(),
            "found_by": run.found_by.tolist(),
            "distance": [None if not np.isfinite(d) else float(d) for d in run.distance],
            "seconds": seconds, "seconds_per_image": seconds / max(len(x), 1), "adversarials": run.adversarials}
