"""The per-sample worst case of AutoAttack and the adaptive suite: which adaptive report belongs to a target
(`find`), and what the two found on the images both attacked (`combine`).

An adaptive report (`adaptive.json`, schema dim_tf.eval.adaptive/1) stores, per model variant and norm, `broken`
(an adversarial within the threshold was verified) and `found_by` ("misclassified" for a clean error) over the
first `num_examples` test images; the suite here attacks the first N, so both cover images 0..min - 1. A report
entry matches a target when its `weights_fingerprint` equals the target's (reports that record one), or, for a report
named with --adaptive_report, by its variant and model folder when it records no fingerprint: the report says which.
A fingerprint that differs is refused: the model changed since that report was made.
"""

from __future__ import annotations

import dataclasses
import glob
import os

import numpy as np

from dim_tf.eval import results
from dim_tf.eval.suites.autoattack.settings import ADAPTIVE_SCHEMA
from dim_tf.eval.threat import EvalError, ThreatModel


@dataclasses.dataclass(frozen=True)
class Match:
    """An adaptive report's entry for one target: the file, the entry, and how it was matched."""

    path: str
    report: dict
    entry: dict
    how: str  # "fingerprint" or "path"


def results_dir() -> str:
    """The committed results (eval/results/ of the repository, installed beside this package)."""
    import dim_tf.eval

    return os.path.join(os.path.dirname(dim_tf.eval.__file__), "results")


def candidates(model_dir: str) -> list[str]:
    """Adaptive reports that may hold the model: the committed eval/results/adaptive*.json, and adaptive.json files
    under the model dir's eval/ and its sibling eval/ (the adaptive suite's default and usual output folders)."""
    parent = os.path.dirname(os.path.abspath(model_dir))
    patterns = [os.path.join(results_dir(), "adaptive*.json"),
                os.path.join(os.path.abspath(model_dir), "eval", "**", "adaptive.json"),
                os.path.join(parent, "eval", "**", "adaptive.json")]
    return list(dict.fromkeys(p for pattern in patterns for p in sorted(glob.glob(pattern, recursive=True))))


def _folder(path) -> str:
    return os.path.basename(os.path.normpath(str(path or "")))


def find(target, norm: ThreatModel, explicit: str | None) -> tuple[Match | None, str]:
    """(the adaptive entry for `target` under `norm`, a note on the search). With `explicit` (--adaptive_report)
    only that file is read; a recorded fingerprint must then equal the target's (`EvalError` otherwise)."""
    paths = [explicit] if explicit else candidates(target.model_dir)
    unfingerprinted = []
    for path in paths:
        report = results.read_report(path, ADAPTIVE_SCHEMA)
        if report is None:
            continue
        for entry in report.get("models") or []:
            if entry.get("variant") != target.variant or norm.value not in (entry.get("norms") or {}):
                continue
            recorded = entry.get("weights_fingerprint")
            if recorded == target.fingerprint:
                return Match(path, report, entry, "fingerprint"), "matched by weights fingerprint"
            if recorded is None and _folder(entry.get("model_dir")) == target.folder:
                if explicit:
                    return Match(path, report, entry, "path"), ("matched by path: named with --adaptive_report, "
                                                                "it records no weights fingerprint")
                unfingerprinted.append(results.shown_path(path))
            elif recorded is not None and explicit and _folder(entry.get("model_dir")) == target.folder:
                raise EvalError(f"--adaptive_report {path}: its {target.name} was made on weights {recorded}, but "
                                f"{target.model_dir} now holds weights {target.fingerprint}: the model in "
                                f"{target.folder} changed since (retrained?); rerun the adaptive suite on it")
    if unfingerprinted:
        return None, (f"{', '.join(unfingerprinted)} records no weights fingerprint: name it with --adaptive_report "
                      "to compare by path")
    if explicit:
        return None, f"{explicit} holds no {target.variant} entry of {target.folder} under {norm.value}"
    return None, "no adaptive report of this model variant and norm found"


def adaptive_robust(entry_norm: dict) -> np.ndarray:
    """Per sample of an adaptive report's norm entry: correct and not broken within the threshold."""
    correct = np.array([by != "misclassified" for by in entry_norm["found_by"]])
    return correct & ~np.asarray(entry_norm["broken"], bool)


def combine(autoattack_robust, adaptive_robust_, autoattack_correct=None, adaptive_correct=None) -> dict:
    """The worst case of the two on the images both attacked (the first min(N, M)): each one's robust accuracy
    there, the per-sample combined accuracy (robust to both), and the images each broke that the other missed
    (test-set indices). The clean agreement says whether both saw the same model (1.0 for the same weights)."""
    a, b = np.asarray(autoattack_robust, bool), np.asarray(adaptive_robust_, bool)
    n = min(len(a), len(b))
    a, b = a[:n], b[:n]
    out = {"num_examples": n, "autoattack_accuracy": float(a.mean()) if n else None,
           "adaptive_accuracy": float(b.mean()) if n else None,
           "worst_case_accuracy": float((a & b).mean()) if n else None,
           "autoattack_only": np.flatnonzero(b & ~a).tolist(), "adaptive_only": np.flatnonzero(a & ~b).tolist()}
    if autoattack_correct is not None and adaptive_correct is not None:
        out["clean_agreement"] = float(np.mean(np.asarray(autoattack_correct, bool)[:n] ==
                                               np.asarray(adaptive_correct, bool)[:n])) if n else None
    return out


def compare(norm: ThreatModel, norm_result: dict, match: Match | None, note: str) -> dict:
    """The `adaptive` entry of a norm's result: the match (file, how, the adaptive run's images) and `combine`."""
    if match is None:
        return {"matched": False, "note": note}
    entry_norm = match.entry["norms"][norm.value]
    if abs(entry_norm.get("eps", norm_result["eps"]) - norm_result["eps"]) > 1e-9:
        return {"matched": False, "note": f"{results.shown_path(match.path)} attacked {norm.value} at eps "
                f"{entry_norm['eps']:g}, not {norm_result['eps']:g}"}
    robust = adaptive_robust(entry_norm)
    correct = np.array([by != "misclassified" for by in entry_norm["found_by"]])
    return {"matched": True, "how": match.how, "note": note, "file": results.shown_path(match.path),
            "adaptive_num_examples": len(robust), "adaptive_seed": match.report.get("seed"),
            "adaptive_budget": match.report.get("budget"), "adaptive_command": match.report.get("command"),
            **combine(norm_result["robust"], robust, norm_result["correct"], correct)}

