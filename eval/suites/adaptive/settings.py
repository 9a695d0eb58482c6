"""The settings the adaptive suite accepts: it picks its own attacks, eps, parameters, restarts and BPDA surrogates,
so the flags for those are refused; `--variant` and `--norm` may be comma lists (default,bi; linf,l2)."""

from __future__ import annotations

import os

from dim_tf.eval.settings import EvalSettings, check_run
from dim_tf.eval.threat import EvalError, ThreatModel

NORMS = (ThreatModel.LINF, ThreatModel.L2)  # the adaptive suite's and AutoAttack's (standard version) threat models


def parse_variants(text: str) -> list[str]:
    variants = [v.strip() for v in (text or "default").split(",") if v.strip()]
    bad = [v for v in variants if v not in ("default", "bi")]
    if bad or not variants:
        raise EvalError(f"--variant {text!r}: give default, bi or default,bi")
    return list(dict.fromkeys(variants))


def parse_norms(text: str, suite: str) -> tuple[ThreatModel, ...]:
    """'linf,l2' -> (LINF, L2); an unknown norm or one the suite does not cover is an `EvalError`."""
    norms = []
    for item in (text or "").split(","):
        norm = ThreatModel.parse(item.strip())
        if norm not in NORMS:
            raise EvalError(f"--suite {suite} covers {', '.join(n.value for n in NORMS)}, not {norm.value}: give "
                            "--norm linf, l2 or linf,l2")
        norms.append(norm)
    return tuple(dict.fromkeys(norms))


def validate(settings: EvalSettings) -> dict:
    """Checks the settings before any work; returns the model dirs and variants."""
    dirs = [d.strip() for d in (settings.models or settings.model_dir or "").split(",") if d.strip()]
    if not dirs:
        raise EvalError("--suite adaptive needs --model_dir DIR (or --models DIR1,DIR2)")
    for d in dirs + ([settings.undefended_dir] if settings.undefended_dir else []):
        if not os.path.isfile(os.path.join(d, "manifest.json")):
            raise EvalError(f"{d!r} is not a finished training run (no manifest.json); train it first or fix the "
                            "path")
    if not settings.budget > 0:
        raise EvalError(f"--budget must be > 0, got {settings.budget}")
    for flag, value, ok in (("attack", settings.attack, None), ("eps", settings.eps, None),
                            ("output", settings.output, None), ("params", settings.params, None),
                            ("bi_gradient", settings.bi_gradient, "exact"), ("restarts", settings.restarts, 1)):
        if value != ok:
            raise EvalError(f"--suite adaptive chooses its own attacks, eps, parameters, restarts and BPDA "
                            f"surrogates: drop --{flag} (--budget scales the attacks; --output_dir takes the report)")
    if settings.cells_dir or settings.max_minutes is not None:
        raise EvalError("--cells_dir and --max_minutes apply to --suite paper only (its cells); drop them")
    check_run(settings)
    return {"dirs": dirs, "variants": parse_variants(settings.variant),
            "norms": parse_norms(settings.norm or "linf,l2", "adaptive")}

