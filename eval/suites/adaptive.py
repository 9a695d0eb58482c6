"""`python -m dim_tf.eval --suite adaptive --model_dir runs/dim --variant default,bi --output_dir DIR`: attacks
built for DIM and biDIM, the per-sample worst case over all of them, and sanity checks that expose gradient masking.

Per model variant and threat model (L-inf 0.3 and L2 1.5, the paper's thresholds) a cascade, as in AutoAttack: each
attack runs only on the examples nothing before it broke (the main attack and the single-step one on every example):
  white-box   margin PGD (5 restarts, the main attack), for binarized variants through BPDA (straight-through
              backward pass) and once more through a sigmoid surrogate whose temperature is annealed; DLR PGD;
              targeted margin PGD against every wrong class; for binarized variants the pixel-flip search; for
              DIM-family models the feature attack (D(x) pushed toward a wrong class's reconstruction);
  single-step FGSM / FGM (through the same surrogate);
  black-box   Square (L-inf, L2), HopSkipJump (L-inf, L2), Boundary (L2), transfer from the undefended CNN and, for
              a binarized variant, from the same model without binarization.
Then a distance probe (margin PGD, and pixel flip for binarized variants, at L-inf 0.5 / L2 3.0 on what is still
unbroken there: the L-inf 0.5 accuracy is a sanity check, and both give distances for the medians), and the
strongest white-box attack with twice the steps and restarts on the unbroken examples among the first
SANITY_EXAMPLES (a sanity check).
`--budget` scales every step, query, round and restart count (at least 1).

Every adversarial any attack returns (at any eps) is verified on the exact model (forward pass with the true 0.5
threshold), moved by foolbox's BinarizationRefinementAttack to the closest point with the same binarized input
(binarized variants), and pooled: per sample, the smallest verified adversarial distance. After the probe each
pooled adversarial is shrunk by a line search toward x. Worst-case accuracy at eps = correct and no pooled
adversarial within eps; median distance over all N (0: misclassified clean, inf: never broken; inf when half or
more are never broken).

Output in --output_dir: `adaptive.json` (schema dim_tf.eval.adaptive/1: per variant and norm the cascade, per-sample
worst case, medians, sanity checks, paper-protocol numbers found for the same model, seconds) and `adaptive.md`,
both written atomically, plus one runner JSON per attack run under `attacks/`.
"""

from __future__ import annotations

import dataclasses
import functools
import glob
import json
import os
import time

import numpy as np

from dim_tf.eval import aggregate, sanity
from dim_tf.eval.threat import TOLERANCE, EvalError, ThreatModel

SCHEMA = "dim_tf.eval.adaptive/1"
LINF, L2 = ThreatModel.LINF, ThreatModel.L2
THRESHOLDS = {LINF: 0.3, L2: 1.5}  # the paper's
PROBES = {LINF: 0.5, L2: 3.0}  # distance probes; L-inf 0.5 is also the large-eps sanity check
SANITY_EXAMPLES = 200  # the doubled attack runs on the unbroken examples among these
EOT_SAMPLES = 8  # forward passes averaged per gradient when the model is stochastic at test time
BANK_PER_CLASS = 50  # feature attack: validation images per class to pick the target image from
LINE_SEARCH_STEPS = 10
# Published reference points at L-inf 0.3 (Schott et al. 2019, "Towards the first adversarially robust neural network
# model on MNIST", their accuracy-vs-eps curves).
PUBLISHED = {"binarized CNN (ABS paper)": 0.63, "binary ABS (ABS paper)": 0.77}


@dataclasses.dataclass
class Target:
    """A model variant under attack: `exact` is what is scored; `surrogate` what gradient attacks differentiate
    (same forward pass; straight-through backward for binarized variants); `annealed` (model, on_step) or None."""

    model_dir: str
    manifest: dict
    variant: str
    name: str
    base: object
    exact: object
    surrogate: object
    annealed: tuple | None
    stochastic: bool = False

    @property
    def binarized(self) -> bool:
        return self.variant == "bi"

    @property
    def dim_family(self) -> bool:
        return hasattr(self.base, "denoise") and hasattr(self.base, "internal")


@dataclasses.dataclass
class Step:
    """One attack of a cascade: `label` in the report, the `attack` row, the `model` the runner calls (a BPDA
    surrogate where the target binarizes), `params`, `restarts`, `group` (white / single / black) and whether it
    runs on every correct example (`standalone`) or only on those still unbroken."""

    label: str
    attack: object
    model: object
    params: dict
    restarts: int
    group: str
    standalone: bool = False


class Pool:
    """Per sample, the smallest verified adversarial found so far under one norm (any eps)."""

    def __init__(self, x: np.ndarray, y: np.ndarray, correct: np.ndarray, norm: ThreatModel):
        self.x, self.y, self.correct, self.norm = x, y, correct, norm
        self.distance = np.where(correct, np.inf, 0.0)
        self.adv = x.copy()
        self.by = np.array([None if c else "misclassified" for c in correct], dtype=object)

    def offer(self, idx: np.ndarray, adv: np.ndarray, fooled: np.ndarray, label) -> np.ndarray:
        """Candidates `adv` for examples `idx` (`fooled`: verified on the exact model) found by `label` (one name, or
        one per candidate); returns their distances."""
        dist = self.norm.distance(adv, self.x[idx])
        better = fooled & self.correct[idx] & (dist < self.distance[idx])
        self.distance[idx[better]] = dist[better]
        self.adv[idx[better]] = adv[better]
        self.by[idx[better]] = np.broadcast_to(np.asarray(label, dtype=object), idx.shape)[better]
        return dist

    def broken(self, eps: float) -> np.ndarray:
        return self.correct & (self.distance <= eps + TOLERANCE)

    def accuracy(self, eps: float) -> float:
        return float(np.mean(self.correct & ~self.broken(eps)))


# ------------------------------------------------------------------------------------------------------------------
# Setup
# ------------------------------------------------------------------------------------------------------------------

def parse_variants(text: str) -> list[str]:
    variants = [v.strip() for v in (text or "default").split(",") if v.strip()]
    bad = [v for v in variants if v not in ("default", "bi")]
    if bad or not variants:
        raise EvalError(f"--variant {text!r}: give default, bi or default,bi")
    return list(dict.fromkeys(variants))


def validate(opts) -> dict:
    """Checks the flags before any work; returns the model dirs and variants."""
    from dim_tf.eval import cli

    dirs = [d.strip() for d in (opts.models or opts.model_dir or "").split(",") if d.strip()]
    if not dirs:
        raise EvalError("--suite adaptive needs --model_dir DIR (or --models DIR1,DIR2)")
    for d in dirs + ([opts.undefended_dir] if opts.undefended_dir else []):
        if not os.path.isfile(os.path.join(d, "manifest.json")):
            raise EvalError(f"{d!r} is not a finished training run (no manifest.json); train it first or fix the "
                            "path")
    if not opts.budget > 0:
        raise EvalError(f"--budget must be > 0, got {opts.budget}")
    for flag, value, ok in (("attack", opts.attack, None), ("eps", opts.eps, None), ("output", opts.output, None),
                            ("params", opts.params, None), ("bi_gradient", opts.bi_gradient, "exact"),
                            ("restarts", opts.restarts, 1)):
        if value != ok:
            raise EvalError(f"--suite adaptive chooses its own attacks, eps, parameters, restarts and BPDA "
                            f"surrogates: drop --{flag} (--budget scales the attacks; --output_dir takes the report)")
    cli.check_run_flags(opts)
    return {"dirs": dirs, "variants": parse_variants(opts.variant)}


def find_undefended(opts, model_dir: str) -> str | None:
    """--undefended_dir, else a sibling cnn6/ or cnn/ of the first model dir holding a finished CNN run."""
    if opts.undefended_dir:
        return opts.undefended_dir
    parent = os.path.dirname(os.path.abspath(model_dir))
    for name in ("cnn6", "cnn"):
        path = os.path.join(parent, name)
        try:
            with open(os.path.join(path, "manifest.json")) as f:
                if json.load(f).get("model") == "cnn":
                    return path
        except (OSError, json.JSONDecodeError):
            continue
    return None


def make_target(model_dir: str, model, manifest: dict, variant: str, probe_images: np.ndarray) -> Target:
    """The exact model, its gradient surrogate and annealed surrogate, and whether it is random at test time."""
    from dim_tf import registry
    from dim_tf.eval import cli
    from dim_tf.eval.attacks import adaptive

    exact, name = cli.load_variant(model, manifest, variant, "exact")
    if variant == "bi":
        surrogate = registry.bi_variant(model, "straight_through")
        annealed = adaptive.annealed_variant(model)
    else:
        surrogate, annealed = exact, None
    first = np.asarray(exact(probe_images))
    stochastic = not np.array_equal(first, np.asarray(exact(probe_images)))
    return Target(model_dir, manifest, variant, name, model, exact, surrogate, annealed, stochastic)


def plan(target: Target, norm: ThreatModel, budget: float, sources: list[tuple[str, object, int]], bank) -> list[Step]:
    """The cascade for `target` under `norm` (see the module doc); `sources`: (name, model, PGD steps) transfer
    sources; `bank`: (images, labels) the feature attack picks its target images from. Steps, queries and restarts
    scale with `budget` (at least 1)."""
    from dim_tf.eval import attacks
    from dim_tf.eval.attacks import adaptive

    def n(value: int) -> int:
        return max(1, int(round(value * budget)))

    eot = EOT_SAMPLES if target.stochastic else 1
    grad_model = target.surrogate
    bpda = "bpda-st " if target.binarized else ""
    steps = [Step(f"{bpda}pgd_margin", attacks.get("pgd_margin"), grad_model, {"steps": n(40), "eot": eot}, n(5),
                  "white", standalone=True)]
    if target.annealed is not None:
        model, on_step = target.annealed
        row = attacks.get("pgd_margin")
        annealed_row = dataclasses.replace(row, fn=lambda *a, **k: row.fn(*a, on_step=on_step, **k))
        steps.append(Step("bpda-sigmoid-annealed pgd_margin", annealed_row, model, {"steps": n(40), "eot": eot}, 1,
                          "white"))
    steps.append(Step(f"{bpda}pgd_dlr", attacks.get("pgd_dlr"), grad_model, {"steps": n(40), "eot": eot}, 1,
                      "white"))
    steps.append(Step(f"{bpda}pgd_targeted", attacks.get("pgd_targeted"), grad_model,
                      {"steps": n(10), "targets": 9, "eot": eot}, 1, "white"))
    if target.binarized:  # under L2 a flip of a grey pixel is cheap: more rounds fit in the budget
        steps.append(Step("pixel_flip", adaptive.PIXEL_FLIP, grad_model,
                          {"rounds": n(40 if norm is LINF else 100), "candidates": 6}, 1, "white"))
    if target.dim_family:
        steps.append(Step(f"{bpda}feature", adaptive.feature_attack(target.surrogate, *bank, targets=2, steps=n(30)),
                          grad_model, {}, 1, "white"))
    steps.append(Step(f"{bpda}{'fgsm' if norm is LINF else 'fgm'}", attacks.get("fgsm" if norm is LINF else "fgm"),
                      grad_model, {}, 1, "single", standalone=True))
    steps.append(Step("square", attacks.get("square"), target.exact, {"queries": n(500)}, 1, "black"))
    decision = [("hop_skip_jump", {"steps": n(3), "initial_gradient_eval_steps": 30, "max_gradient_eval_steps": 300})]
    if norm is L2:
        decision.append(("boundary", {"steps": n(200)}))
    for name, params in decision:
        if name in attacks.ATTACKS:
            steps.append(Step(name, attacks.get(name), target.exact, params, 1, "black"))
    for source_name, source, source_steps in sources:
        steps.append(Step(f"transfer from {source_name}", adaptive.transfer(source, source_name, steps=n(source_steps)),
                          target.exact, {}, 1, "black"))
    return steps


def probe_plan(target: Target, norm: ThreatModel, budget: float) -> list[Step]:
    """The distance probe at PROBES[norm]: margin PGD and, for binarized variants, the pixel flip."""
    from dim_tf.eval import attacks
    from dim_tf.eval.attacks import adaptive

    def n(value: int) -> int:
        return max(1, int(round(value * budget)))

    probe = f"@{PROBES[norm]:g}"
    bpda = "bpda-st " if target.binarized else ""
    eot = EOT_SAMPLES if target.stochastic else 1
    steps = [Step(f"{bpda}pgd_margin {probe}", attacks.get("pgd_margin"), target.surrogate,
                  {"steps": n(40), "eot": eot}, 1, "white")]
    if target.binarized:
        steps.append(Step(f"pixel_flip {probe}", adaptive.PIXEL_FLIP, target.surrogate,
                          {"rounds": n(60), "candidates": 6}, 1, "white"))
    return steps


# ------------------------------------------------------------------------------------------------------------------
# Running a cascade
# ------------------------------------------------------------------------------------------------------------------

class Runner:
    """Runs steps on one target under one norm, verifying and pooling every adversarial."""

    def __init__(self, target: Target, x: np.ndarray, y: np.ndarray, norm: ThreatModel, opts, out_dir: str,
                 dataset, argv, log, strategy=None):
        from dim_tf.eval.runner import benchmark

        # The attacks' batches are split over the strategy's replicas (dim_tf.eval.replicas) by `benchmark`.
        self.benchmark = functools.partial(benchmark, strategy=strategy)
        self.target, self.x, self.y, self.norm = target, x, y, norm
        self.opts, self.out_dir, self.dataset, self.argv, self.log = opts, out_dir, dataset, argv, log
        self.correct = self.predict(x) == y
        self.pool = Pool(x, y, self.correct, norm)

    def predict(self, images: np.ndarray) -> np.ndarray:
        from dim_tf.eval.attacks.adaptive import scores_of

        if not len(images):
            return np.zeros(0, int)
        return scores_of(self.target.exact, images, self.opts.batch_size).argmax(1)

    def verify(self, idx: np.ndarray, adv: np.ndarray, label) -> tuple[np.ndarray, np.ndarray]:
        """Refines (binarized targets), verifies on the exact model and pools; returns (fooled, distance)."""
        if self.target.binarized and len(idx):
            from dim_tf.eval.attacks.adaptive import binarization_refinement

            adv = binarization_refinement(self.target.exact, self.x[idx], adv, self.y[idx])
        fooled = self.predict(adv) != self.y[idx]
        return fooled, self.pool.offer(idx, adv, fooled, label)

    def run(self, step: Step, eps: float, todo: np.ndarray) -> dict:
        """Runs `step` at `eps` on examples `todo` (indices); returns its record for the report."""
        from dim_tf import model_dir as md
        from dim_tf.eval import cli

        before = self.pool.broken(eps)
        record = {"label": step.label, "attack": step.attack.name, "group": step.group, "eps": eps,
                  "params": step.params, "restarts": step.restarts, "standalone": step.standalone,
                  "attacked": int(len(todo))}
        if not len(todo):
            record.update({"broken": 0, "newly_broken": 0, "seconds": 0.0, "accuracy_after": self.pool.accuracy(eps)})
            return record
        result = self.benchmark(step.model, self.x[todo], self.y[todo], step.attack, self.norm, [eps],
                                batch_size=self.opts.batch_size, seed=self.opts.seed, restarts=step.restarts,
                                params=step.params, progress=self.opts.progress, keep_adversarials=True)
        entry = result["results"][0]
        adv = entry.pop("adversarials")
        if result.get("minimal_distance"):  # a minimal attack's best adversarial counts at any distance
            adv = np.where(np.array([d is not None for d in result["minimal_distance"]["distance"]])[:, None, None,
                                                                                                    None], adv,
                           self.x[todo])
        claimed = np.asarray(entry["success"], bool)
        fooled, dist = self.verify(todo, adv, step.label)
        within = fooled & (dist <= eps + TOLERANCE)
        broken_here = np.zeros(len(self.x), bool)
        broken_here[todo[within]] = True
        cli.annotate(result, model_dir=self.target.model_dir, manifest=self.target.manifest,
                     variant=self.target.variant, variant_name=self.target.name, bi_gradient="exact",
                     dataset=self.dataset, num_examples=len(todo), strategy=self.opts.strategy, argv=self.argv)
        result["suite"] = {"name": "adaptive", "step": step.label, "indices": todo.tolist(),
                           "note": "arrays are over `indices` of the first num_examples test images"}
        slug = step.label.replace(" ", "_").replace("/", "_")
        path = os.path.join(self.out_dir, "attacks", f"{self.target.name}-{self.norm.value}-{eps:g}-{slug}.json")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        md.write_json(path, result)
        record.update({
            "broken": int(within.sum()), "newly_broken": int((broken_here & ~before).sum()),
            "accuracy_after": self.pool.accuracy(eps),
            "runner_accuracy": result["robust_accuracy"][f"{eps:g}"] * len(todo) / len(self.x)
            if step.standalone else None,
            "unverified": int((claimed & ~within).sum()), "zero_gradient": result["zero_gradient"],
            "forward_passes": result["forward_passes"], "backward_passes": result["backward_passes"],
            "seconds": result["seconds"], "json": os.path.relpath(path, self.out_dir),
            "broken_mask": broken_here})
        self.log(f"  {self.target.name} {self.norm.value} {eps:g} {step.label}: attacked {len(todo)}, broke "
                 f"{record['broken']} ({record['newly_broken']} new), accuracy now "
                 f"{100 * record['accuracy_after']:.1f}%, {result['seconds']:.1f}s"
                 + (" ZERO GRADIENT" if result["zero_gradient"] and step.attack.uses_gradient else ""))
        return record

    def cascade(self, steps: list[Step], eps: float) -> list[dict]:
        records = []
        for step in steps:
            todo = np.flatnonzero(self.correct if step.standalone else self.correct & ~self.pool.broken(eps))
            records.append(self.run(step, eps, todo))
        return records

    def shrink(self) -> None:
        """Line search from x toward each pooled adversarial for the closest point still misclassified (exact model),
        then binarization refinement; pooled again (distances can only fall)."""
        idx = np.flatnonzero(self.correct & np.isfinite(self.pool.distance))
        if not len(idx):
            return
        x, adv = self.x[idx], self.pool.adv[idx]
        lo, hi = np.zeros(len(idx)), np.ones(len(idx))
        for _ in range(LINE_SEARCH_STEPS):
            mid = (lo + hi) / 2
            fooled = self.predict((x + mid[:, None, None, None] * (adv - x)).astype(np.float32)) != self.y[idx]
            hi, lo = np.where(fooled, mid, hi), np.where(fooled, lo, mid)
        labels = np.array([f"{by} (shrunk)" for by in self.pool.by[idx]], dtype=object)
        self.verify(idx, (x + hi[:, None, None, None] * (adv - x)).astype(np.float32), labels)


SCALED = ("steps", "rounds", "queries")  # the parameters `doubled_step` doubles


def doubled_step(steps: list[Step], records: list[dict]) -> Step:
    """The strongest white-box step of a cascade (most examples newly broken; the main attack on ties or when the
    strongest has no step count to double) with twice its steps (rounds) and restarts."""
    white = [(r.get("newly_broken", 0), -i, step) for i, (step, r) in
             enumerate(zip(steps, records)) if step.group == "white" and any(k in step.params for k in SCALED)]
    _, _, best = max(white, key=lambda t: t[:2])
    return dataclasses.replace(best, label=best.label + " x2", restarts=2 * best.restarts,
                               params={k: 2 * v if k in SCALED else v for k, v in best.params.items()})


def _strip(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "broken_mask"} for r in records]


def _group_mask(records: list[dict], group: str, n: int) -> np.ndarray:
    masks = [r["broken_mask"] for r in records if r["group"] == group and "broken_mask" in r]
    return np.logical_or.reduce(masks) if masks else np.zeros(n, bool)


def evaluate(target: Target, x, y, opts, out_dir, dataset, argv, log, sources, bank, *, checks: bool = True,
             norms=(LINF, L2), strategy=None) -> dict:
    """The cascades of `target` under `norms`, the probes, the doubled-attack check; returns its report entry."""
    start = time.time()
    entry = {"model_dir": os.path.abspath(target.model_dir), "model": target.manifest.get("model"),
             "variant": target.variant, "variant_name": target.name, "stochastic": target.stochastic,
             "eot_samples": EOT_SAMPLES if target.stochastic else 1, "norms": {}, "sanity": []}
    for norm in norms:
        eps, probe = THRESHOLDS[norm], PROBES[norm]
        runner = Runner(target, x, y, norm, opts, out_dir, dataset, argv, log, strategy)
        entry["clean_accuracy"] = float(runner.correct.mean())
        log(f"{target.name} {norm.value}: cascade at {eps:g} on {len(x)} examples")
        steps = plan(target, norm, opts.budget, sources, bank)
        records = runner.cascade(steps, eps)
        white = _group_mask(records, "white", len(x))
        single = _group_mask(records, "single", len(x))
        black_records = [r for r in records if r["group"] == "black" and r["attacked"]]
        subject = f"{target.name} {norm.value} {eps:g}"
        if checks:
            entry["sanity"].append(sanity.iterative_vs_single_step(subject, white, single, runner.correct))
            entry["sanity"].append(sanity.white_vs_black_box(
                subject, int(_group_mask(records, "black", len(x)).sum()), len(x),
                [r["label"] for r in black_records]))
        cascade_accuracy = runner.pool.accuracy(eps)
        probe_records = []
        if checks:
            log(f"{target.name} {norm.value}: distance probe at {probe:g}")
            probe_records = runner.cascade(probe_plan(target, norm, opts.budget), probe)
        runner.shrink()
        doubled = None
        if checks:
            first = np.zeros(len(x), bool)
            first[:SANITY_EXAMPLES] = True
            todo = np.flatnonzero(first & runner.correct & ~runner.pool.broken(eps))
            twice = doubled_step(steps, records)
            log(f"{target.name} {norm.value}: {twice.label} on the {len(todo)} unbroken of the first "
                f"{int(first.sum())}")
            doubled = runner.run(twice, eps, todo)
            counts = ", ".join(f"{k} {v}" for k, v in twice.params.items() if k in SCALED)
            entry["sanity"].append(sanity.more_steps_and_restarts(
                subject, doubled.get("newly_broken", 0), int(min(len(x), SANITY_EXAMPLES)),
                f"{twice.label} ({twice.restarts} restarts, {counts}) on the first "
                f"{min(len(x), SANITY_EXAMPLES)} examples"))
            if norm is LINF:
                entry["sanity"].append(sanity.large_eps(f"{target.name} {norm.value} {probe:g}",
                                                        runner.pool.accuracy(probe), probe))
        pool = runner.pool
        outcome = aggregate.Outcome(pool.correct, pool.broken(eps), pool.distance)
        entry["norms"][norm.value] = {
            "eps": eps, "probe_eps": probe if checks else None,
            "accuracy": outcome.accuracy, "cascade_accuracy": cascade_accuracy,
            "median_distance": aggregate.finite_or_none(outcome.median_distance),
            "accuracy_at_probe": pool.accuracy(probe) if checks else None,
            "broken": pool.broken(eps).tolist(),
            "distance": [aggregate.finite_or_none(d) for d in pool.distance],
            "found_by": pool.by.tolist(),
            "cascade": _strip(records), "probe": _strip(probe_records),
            "doubled": None if doubled is None else _strip([doubled])[0],
            "white_box_accuracy": float(np.mean(runner.correct & ~white)),
            "strongest": max((r for r in records if r["group"] == "white"), key=lambda r: r.get("broken", 0))[
                "label"],
        }
        log(f"{target.name} {norm.value} {eps:g}: worst-case accuracy {100 * outcome.accuracy:.1f}%, median "
            f"distance {outcome.median_distance:.3g}")
    if checks:
        probe_x = x[:min(len(x), 100)]
        for model, what in ((target.exact, "exact model"),) + (
                ((target.surrogate, "BPDA straight-through surrogate"),) if target.binarized else ()):
            zero, missing = sanity.score_gradient_zero(model, probe_x)
            entry["sanity"].append(sanity.zero_gradient(target.name, zero, missing, what))
    entry["seconds"] = time.time() - start
    return entry


# ------------------------------------------------------------------------------------------------------------------
# Paper-protocol numbers already on disk
# ------------------------------------------------------------------------------------------------------------------

def protocol_numbers(model_dir: str, variant: str, exclude: str) -> list[dict]:
    """Accuracies at the paper's thresholds for this model dir and variant found in existing JSONs: `--suite paper`
    summaries (suite.json) and single-attack runner results (`python -m dim_tf.eval --attack ...`; a suite's
    per-attack JSONs are skipped), under MODEL_DIR/eval/ and the model dir's sibling eval/ folder (e.g.
    runs/eval/), excluding `exclude` (this suite's output)."""
    from dim_tf.eval.runner import SCHEMA as RESULT_SCHEMA

    model_dir = os.path.abspath(model_dir)
    roots = [os.path.join(model_dir, "eval"), os.path.join(os.path.dirname(model_dir), "eval")]
    found, seen = [], set()
    for root in roots:
        for path in sorted(glob.glob(os.path.join(root, "**", "*.json"), recursive=True)):
            path = os.path.abspath(path)
            if path in seen or path.startswith(os.path.abspath(exclude) + os.sep):
                continue
            seen.add(path)
            try:
                with open(path) as f:
                    data = json.load(f)
            except (OSError, json.JSONDecodeError, UnicodeDecodeError):
                continue
            if not isinstance(data, dict):
                continue
            if data.get("schema") == RESULT_SCHEMA and "suite" not in data:  # a suite's runs: read its summary
                model = data.get("model") or {}
                if model.get("dir") != model_dir or model.get("variant") != variant:
                    continue
                norm = data.get("threat_model")
                threshold = {"linf": 0.3, "l2": 1.5}.get(norm)
                acc = (data.get("robust_accuracy") or {}).get(f"{threshold:g}") if threshold else None
                if acc is None:
                    continue
                found.append({"source": "single attack", "file": path, "attack": data["attack"]["name"],
                              "norm": norm, "eps": threshold, "accuracy": acc,
                              "bi_gradient": model.get("bi_gradient"), "variant_name": model.get("variant_name"),
                              "num_examples": data.get("num_examples"), "zero_gradient": data.get("zero_gradient")})
            elif data.get("suite") == "paper" and isinstance(data.get("columns"), list):
                for col in data["columns"]:
                    if col.get("model_dir") != model_dir or col.get("variant") != variant:
                        continue
                    for key, att in (col.get("attacks") or {}).items():
                        norm, _, attack = key.partition(":")
                        if norm in ("linf", "l2"):
                            found.append({"source": "paper suite", "file": path, "attack": attack, "norm": norm,
                                          "eps": {"linf": 0.3, "l2": 1.5}[norm], "accuracy": att.get("accuracy"),
                                          "bi_gradient": "exact" if variant == "bi" else None,
                                          "variant_name": col.get("variant_name"),
                                          "num_examples": data.get("num_examples"),
                                          "zero_gradient": att.get("zero_gradient")})
                    for norm, agg in (col.get("all") or {}).items():
                        if norm in ("linf", "l2"):
                            found.append({"source": "paper suite", "file": path, "attack": "all (worst case)",
                                          "norm": norm, "eps": {"linf": 0.3, "l2": 1.5}[norm],
                                          "accuracy": agg.get("accuracy"), "median_distance":
                                              agg.get("median_distance"), "bi_gradient": "exact" if variant == "bi"
                                          else None, "variant_name": col.get("variant_name"),
                                          "num_examples": data.get("num_examples"), "zero_gradient": None})
    return found


# ------------------------------------------------------------------------------------------------------------------
# Report
# ------------------------------------------------------------------------------------------------------------------

def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _dist(value) -> str:
    return "inf" if value is None else f"{value:.3g}"


def render(report: dict) -> str:
    """adaptive.md: summary table, protocol numbers, references, sanity checks, cascades."""
    lines = [f"# Adaptive evaluation ({report['num_examples']} test images, seed {report['seed']}, budget "
             f"{report['budget']:g})", "",
             "Worst case per sample over every attack below (verified on the exact model); accuracy at the paper's "
             "thresholds, median adversarial distance over all examples (inf: half or more never broken).", "",
             "| model | clean | L-inf 0.3 worst case | median L-inf | L2 1.5 worst case | median L2 | paper protocol "
             "(same model) | seconds |", "|---|---|---|---|---|---|---|---|"]
    for m in report["models"]:
        proto = []
        for p in m["protocol"]:
            if p["source"] == "paper suite" and p["attack"].startswith("all") or p["source"] == "single attack":
                grad = f", {p['bi_gradient']}" if p.get("bi_gradient") and p["bi_gradient"] != "exact" else ""
                masked = " (zero gradient: masked)" if p.get("zero_gradient") else ""
                proto.append(f"{p['norm']} {p['attack']}{grad}: {_pct(p['accuracy'])}{masked} "
                             f"(n={p.get('num_examples')})")
        li, l2 = m["norms"].get("linf", {}), m["norms"].get("l2", {})
        lines.append(f"| {m['variant_name']} | {_pct(m['clean_accuracy'])} | {_pct(li.get('accuracy'))} | "
                     f"{_dist(li.get('median_distance'))} | {_pct(l2.get('accuracy'))} | "
                     f"{_dist(l2.get('median_distance'))} | {'; '.join(proto) or 'none found'} | {m['seconds']:.0f} |")
    lines += ["", "Paper-protocol numbers (same model dir and variant) were read from: " + (", ".join(sorted({
        p["file"] for m in report["models"] for p in m["protocol"]})) or
        "no JSON found (run `--suite paper` or single attacks first)") + ".", "",
        "The worst case counts every verified adversarial found, also at the probe eps (L-inf 0.5, L2 3.0) once "
        "refined and line-searched toward x; the cascade accuracy is what the attacks run at the threshold left.",
        ""]
    ref = report.get("references") or {}
    lines += ["## Reference points (L-inf 0.3)", ""]
    for label, acc in PUBLISHED.items():
        lines.append(f"- {label}: {100 * acc:.0f}%")
    if ref.get("bicnn"):
        lines.append(f"- biCNN here ({ref['bicnn']['model_dir']}), same L-inf cascade: "
                     f"{_pct(ref['bicnn']['accuracy'])}")
    if ref.get("without_defense"):
        lines.append(f"- undefended CNN, main attack: {_pct(ref['without_defense']['accuracy'])}")
    for verdict in ref.get("verdicts", []):
        lines.append(f"- **{verdict}**")
    lines += ["", "## Sanity checks", ""]
    for check in report["sanity"]:
        lines.append(f"- {check['status']} `{check['name']}` [{check['subject']}]: {check['value']} (limit "
                     f"{check['limit']})" + (f"; {check['note']}" if check["note"] else ""))
    for m in report["models"]:
        lines += ["", f"## {m['variant_name']}" + (" (random at test time: EOT over "
                                                     f"{m['eot_samples']} draws)" if m["stochastic"] else
                                                     " (deterministic at test time: no EOT needed)"), ""]
        for norm, n in m["norms"].items():
            lines += [f"### {norm} {n['eps']:g}: worst case {_pct(n['accuracy'])} (cascade at {n['eps']:g}: "
                      f"{_pct(n['cascade_accuracy'])}), median distance "
                      f"{_dist(n['median_distance'])}" + (f", accuracy at {n['probe_eps']:g}: "
                                                          f"{_pct(n['accuracy_at_probe'])}" if n["probe_eps"] else ""),
                      "", "| attack | group | eps | attacked | broke | new | accuracy after | seconds |",
                      "|---|---|---|---|---|---|---|---|"]
            for r in n["cascade"] + n["probe"] + ([n["doubled"]] if n["doubled"] else []):
                lines.append(f"| {r['label']} | {r['group']} | {r['eps']:g} | {r['attacked']} | {r.get('broken', 0)} "
                             f"| {r.get('newly_broken', 0)} | {_pct(r.get('accuracy_after'))} | "
                             f"{r.get('seconds', 0):.0f} |")
            lines.append("")
    lines += ["", f"Total {report['seconds']['total']:.0f}s. Command: `{report['command']}`", ""]
    return "\n".join(lines)


def verdicts(models: list[dict], bicnn: dict | None) -> list[str]:
    out = []
    for m in models:
        acc = m["norms"].get("linf", {}).get("accuracy")
        if not m["variant"] == "bi" or acc is None:
            continue
        for label, ref in PUBLISHED.items():
            out.append(f"{m['variant_name']} {100 * acc:.1f}% at L-inf 0.3 (adaptive worst case) "
                       f"{'beats' if acc > ref else 'does not beat'} the {label} ({100 * ref:.0f}%)")
        if bicnn:
            gap = acc - bicnn["accuracy"]
            verdict = "beats" if gap > 0 else "does NOT beat"
            if abs(gap) < 0.01:
                verdict += " (within 1 point: on par with)"
            out.append(f"{m['variant_name']} {100 * acc:.1f}% vs biCNN {100 * bicnn['accuracy']:.1f}% under the same "
                       f"L-inf 0.3 cascade: {m['variant_name']} {verdict} the binarized CNN")
    return out


def run(opts, argv=None, log=print) -> dict:
    """Runs the suite (see the module doc); writes adaptive.json and adaptive.md; returns the report."""
    settings = validate(opts)
    from dim_tf import data, distribute, model_dir as md
    from dim_tf.eval import cli

    start = time.time()
    strategy = distribute.strategy_from_flag(opts.strategy)
    out_dir = opts.output_dir or os.path.join(settings["dirs"][0], "eval", "adaptive")
    cli.check_writable(os.path.join(out_dir, "adaptive.json"))
    command = " ".join(["python -m dim_tf.eval", *(argv or [])[1:]])
    undefended_dir = find_undefended(opts, settings["dirs"][0])
    undefended = None
    if undefended_dir:
        with strategy.scope():
            undefended, undefended_manifest = md.load(undefended_dir)
        log(f"adaptive suite: undefended CNN {undefended_dir}")
    else:
        log("adaptive suite: no undefended CNN found (--undefended_dir): no transfer from it, no no-defense check, "
            "no biCNN reference")
    models, checks, seconds = [], [], {}
    dataset = None
    for model_dir in settings["dirs"]:
        with strategy.scope():
            model, manifest = md.load(model_dir)
        dataset = data.load(manifest.get("dataset", "mnist"), cli.pick_data_dir(opts.data_dir, manifest))
        test = dataset.test.take(opts.num_examples)
        x, y = test.images, test.labels
        bank_idx = np.concatenate([np.flatnonzero(dataset.validation.labels == c)[:BANK_PER_CLASS]
                                   for c in range(10)])
        bank = (dataset.validation.images[bank_idx], dataset.validation.labels[bank_idx])
        for variant in settings["variants"]:
            with strategy.scope():
                target = make_target(model_dir, model, manifest, variant, x[:min(len(x), 64)])
            sources = [(f"undefended CNN ({os.path.basename(os.path.normpath(undefended_dir))})", undefended, 100)] \
                if undefended is not None else []
            if target.binarized:
                sources.append((f"{manifest.get('model')} without binarization", model, 50))
            log(f"== {target.name} ({model_dir}): {len(x)} examples, budget {opts.budget:g}")
            entry = evaluate(target, x, y, opts, out_dir, dataset, argv, log, sources, bank, strategy=strategy)
            entry["protocol"] = protocol_numbers(model_dir, variant, out_dir)
            checks += entry["sanity"]
            seconds[target.name] = entry["seconds"]
            models.append(entry)
    references = {"published_linf_0.3": PUBLISHED, "verdicts": []}
    if undefended is not None:
        test = dataset.test.take(opts.num_examples)
        cnn = make_target(undefended_dir, undefended, undefended_manifest, "default", test.images[:64])
        runner = Runner(cnn, test.images, test.labels, LINF, opts, out_dir, dataset, argv, log, strategy)
        main = plan(cnn, LINF, opts.budget, [], None)[0]
        log(f"== without defense: {main.label} on {cnn.name} at L-inf 0.3")
        rec = runner.run(main, THRESHOLDS[LINF], np.flatnonzero(runner.correct))
        references["without_defense"] = {"model_dir": os.path.abspath(undefended_dir), "attack": main.label,
                                         "accuracy": runner.pool.accuracy(THRESHOLDS[LINF]),
                                         "seconds": rec["seconds"]}
        checks.append(sanity.without_defense(f"{cnn.name} linf 0.3", references["without_defense"]["accuracy"]))
        if any(m["variant"] == "bi" for m in models):
            bicnn = make_target(undefended_dir, undefended, undefended_manifest, "bi", test.images[:64])
            log(f"== reference: {bicnn.name}, the L-inf 0.3 cascade")
            sources = [(f"{bicnn.manifest.get('model')} without binarization", undefended, 100)]
            ref = evaluate(bicnn, test.images, test.labels, opts, out_dir, dataset, argv, log, sources, None,
                           checks=False, norms=(LINF,), strategy=strategy)
            references["bicnn"] = {"model_dir": os.path.abspath(undefended_dir),
                                   "accuracy": ref["norms"]["linf"]["accuracy"],
                                   "white_box_accuracy": ref["norms"]["linf"]["white_box_accuracy"],
                                   "clean_accuracy": ref["clean_accuracy"], "seconds": ref["seconds"],
                                   "cascade": ref["norms"]["linf"]["cascade"]}
            seconds[bicnn.name + " (reference)"] = ref["seconds"]
    else:
        checks.append(sanity.skipped("without_defense", "-", "no undefended CNN (--undefended_dir)"))
    references["verdicts"] = verdicts(models, references.get("bicnn"))
    seconds["total"] = time.time() - start
    report = {"schema": SCHEMA, "suite": "adaptive", "command": command, "num_examples": opts.num_examples,
              "seed": opts.seed, "budget": opts.budget, "output_dir": os.path.abspath(out_dir),
              "thresholds": {n.value: e for n, e in THRESHOLDS.items()},
              "probes": {n.value: e for n, e in PROBES.items()}, "models": models,
              "sanity": [c.to_json() for c in checks], "references": references, "seconds": seconds,
              "undefended_dir": os.path.abspath(undefended_dir) if undefended_dir else None,
              "conventions": __doc__.strip(), "versions": md.library_versions(),
              "written": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    for m in report["models"]:
        m["sanity"] = [c.to_json() for c in m["sanity"]]
    md.write_json(os.path.join(out_dir, "adaptive.json"), report)
    with md.atomic_path(os.path.join(out_dir, "adaptive.md"), ".md") as tmp, open(tmp, "w") as f:
        f.write(render(report))
    log("sanity checks:")
    for c in checks:
        log("  " + c.line())
    for v in references["verdicts"]:
        log(v)
    log("seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items()))
    log(f"adaptive suite -> {os.path.join(out_dir, 'adaptive.json')}, adaptive.md")
    return report
