"""Running the adaptive suite's cascades: `Pool` keeps, per example, the smallest verified adversarial any attack found;
`Cascade` runs the planned steps on one target under one norm (each attack's result written as a result JSON under
`attacks/`), verifies every adversarial on the exact model and shrinks the pooled ones; `evaluate` runs a target's
cascades, probes and sanity checks and returns its entry of the report."""

from __future__ import annotations

import functools
import os
import time

import numpy as np

from dim_tf.eval import aggregate, results, sanity
from dim_tf.eval.settings import EvalSettings
from dim_tf.eval.suites.adaptive import planning
from dim_tf.eval.suites.adaptive.planning import (EOT_SAMPLES, L2, LINF, PROBES, SANITY_EXAMPLES, SCALED, THRESHOLDS,
                                                  Step, Target)
from dim_tf.eval.threat import TOLERANCE, ThreatModel
from dim_tf.fingerprint import weights_fingerprint

LINE_SEARCH_STEPS = 10


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


class Cascade:
    """Runs steps on one target under one norm, verifying and pooling every adversarial. `settings` gives the batch
    size, seed, progress bars and strategy name of the attack runs."""

    def __init__(self, target: Target, x: np.ndarray, y: np.ndarray, norm: ThreatModel, settings: EvalSettings,
                 out_dir: str, dataset, argv, log, strategy=None):
        from dim_tf.eval import attack_run

        # The attacks' batches are split over the strategy's replicas (dim_tf.eval.replicas) by `run_attack`.
        self.run_attack = functools.partial(attack_run.run_attack, strategy=strategy)
        self.target, self.x, self.y, self.norm = target, x, y, norm
        self.settings, self.out_dir, self.dataset, self.argv, self.log = settings, out_dir, dataset, argv, log
        self.correct = self.predict(x) == y
        self.pool = Pool(x, y, self.correct, norm)

    def predict(self, images: np.ndarray) -> np.ndarray:
        from dim_tf import predict

        return predict.labels(self.target.exact, images, self.settings.batch_size, check=False)

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

        before = self.pool.broken(eps)
        record = {"label": step.label, "attack": step.attack.name, "group": step.group, "eps": eps,
                  "params": step.params, "restarts": step.restarts, "standalone": step.standalone,
                  "attacked": int(len(todo))}
        if not len(todo):
            record.update({"broken": 0, "newly_broken": 0, "seconds": 0.0, "accuracy_after": self.pool.accuracy(eps)})
            return record
        result = self.run_attack(step.model, self.x[todo], self.y[todo], step.attack, self.norm, [eps],
                                 batch_size=self.settings.batch_size, seed=self.settings.seed,
                                 restarts=step.restarts, params=step.params, progress=self.settings.progress,
                                 keep_adversarials=True)
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
        results.annotate(result, model_dir=self.target.model_dir, manifest=self.target.manifest,
                         variant=self.target.variant, variant_name=self.target.name, bi_gradient="exact",
                         dataset=self.dataset, num_examples=len(todo), strategy=self.settings.strategy,
                         argv=self.argv)
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


def _strip(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "broken_mask"} for r in records]


def _group_mask(records: list[dict], group: str, n: int) -> np.ndarray:
    masks = [r["broken_mask"] for r in records if r["group"] == group and "broken_mask" in r]
    return np.logical_or.reduce(masks) if masks else np.zeros(n, bool)


def evaluate(target: Target, x, y, settings: EvalSettings, out_dir, dataset, argv, log, sources, bank, *,
             checks: bool = True, norms=(LINF, L2), strategy=None) -> dict:
    """The cascades of `target` under `norms`, the probes, the doubled-attack check; returns its report entry."""
    start = time.time()
    entry = {"model_dir": results.shown_path(target.model_dir), "model": target.manifest.get("model"),
             "weights_fingerprint": weights_fingerprint(target.base),  # what --suite autoattack matches on
             "variant": target.variant, "variant_name": target.name, "stochastic": target.stochastic,
             "eot_samples": EOT_SAMPLES if target.stochastic else 1, "norms": {}, "sanity": []}
    for norm in norms:
        eps, probe = THRESHOLDS[norm], PROBES[norm]
        cascade_run = Cascade(target, x, y, norm, settings, out_dir, dataset, argv, log, strategy)
        entry["clean_accuracy"] = float(cascade_run.correct.mean())
        log(f"{target.name} {norm.value}: cascade at {eps:g} on {len(x)} examples")
        steps = planning.plan(target, norm, settings.budget, sources, bank)
        records = cascade_run.cascade(steps, eps)
        white = _group_mask(records, "white", len(x))
        single = _group_mask(records, "single", len(x))
        black_records = [r for r in records if r["group"] == "black" and r["attacked"]]
        subject = f"{target.name} {norm.value} {eps:g}"
        if checks:
            entry["sanity"].append(sanity.iterative_vs_single_step(subject, white, single, cascade_run.correct))
            entry["sanity"].append(sanity.white_vs_black_box(
                subject, int(_group_mask(records, "black", len(x)).sum()), len(x),
                [r["label"] for r in black_records]))
        cascade_accuracy = cascade_run.pool.accuracy(eps)
        probe_records = []
        if checks:
            log(f"{target.name} {norm.value}: distance probe at {probe:g}")
            probe_records = cascade_run.cascade(planning.probe_plan(target, norm, settings.budget), probe)
        cascade_run.shrink()
        doubled = None
        if checks:
            first = np.zeros(len(x), bool)
            first[:SANITY_EXAMPLES] = True
            todo = np.flatnonzero(first & cascade_run.correct & ~cascade_run.pool.broken(eps))
            twice = planning.doubled_step(steps, records)
            log(f"{target.name} {norm.value}: {twice.label} on the {len(todo)} unbroken of the first "
                f"{int(first.sum())}")
            doubled = cascade_run.run(twice, eps, todo)
            counts = ", ".join(f"{k} {v}" for k, v in twice.params.items() if k in SCALED)
            entry["sanity"].append(sanity.more_steps_and_restarts(
                subject, doubled.get("newly_broken", 0), int(min(len(x), SANITY_EXAMPLES)),
                f"{twice.label} ({twice.restarts} restarts, {counts}) on the first "
                f"{min(len(x), SANITY_EXAMPLES)} examples"))
            if norm is LINF:
                entry["sanity"].append(sanity.large_eps(f"{target.name} {norm.value} {probe:g}",
                                                        cascade_run.pool.accuracy(probe), probe))
        pool = cascade_run.pool
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
            "white_box_accuracy": float(np.mean(cascade_run.correct & ~white)),
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

