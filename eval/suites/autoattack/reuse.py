"""AutoAttack results that are kept: a norm's cascade already in the report at --output, made on the same weights
(fingerprint) with the same attacks, images, seed, budget, surrogate and ART version, is taken from there instead of
being attacked again; only its comparison with the adaptive suite is redone.

Why: the cascade costs about an hour per model and norm at 1,000 images on 2 cores (Madry's network at L-inf: 3,563 s),
and the adaptive report it is compared with is often made later, on the same weights. A run that reuses nothing
writes what a fresh run writes.
"""

from __future__ import annotations

from dim_tf.eval import results
from dim_tf.eval.suites.autoattack.art_attacks import PACKAGE
from dim_tf.eval.threat import ThreatModel


def previous(path: str, schema: str, settings: dict, art_version: str) -> dict | None:
    """The report at `path` when it is a report of `schema` whose keys in `settings` (images, seed, budget, attacks
    and their parameters) hold the same values and that ART `art_version` made; else None."""
    report = results.read_report(path, schema)
    if report is None or (report.get("versions") or {}).get(PACKAGE) != art_version:
        return None
    return report if all(report.get(k) == v for k, v in settings.items()) else None


def norm_result(report: dict | None, target, norm: ThreatModel) -> dict | None:
    """The stored cascade of `target` (same variant, weights fingerprint, surrogate and logit scale) under `norm`,
    without its comparison with the adaptive suite and marked `reused` (when and by which command it was made)."""
    if report is None:
        return None
    for entry in report.get("models") or []:
        if (entry.get("weights_fingerprint") == target.fingerprint and entry.get("variant") == target.variant
                and entry.get("surrogate") == target.surrogate and entry.get("logit_scale") == target.logit_scale):
            stored = (entry.get("norms") or {}).get(norm.value)
            if stored and "robust" in stored:
                kept = {k: v for k, v in stored.items() if k not in ("adaptive", "reused")}
                return {**kept, "reused": stored.get("reused") or {"written": report.get("written"),
                                                                   "command": report.get("command")}}
    return None
