"""What the AutoAttack suite runs (`AutoAttackConfig`, frozen) and the checks that turn the command line's
`EvalSettings` into it before any model or data is touched: model dirs, variants, norms, the BPDA surrogate, the
output, the adaptive report to compare with, ART installed. The attacks, their parameters and the thresholds are the
suite's own, so `--attack`, `--eps`, `--params` and `--restarts` are refused; `--budget` scales the iterations and
queries for quick looks."""

from __future__ import annotations

import dataclasses
import json
import os

from dim_tf.eval.paper_numbers import THRESHOLDS
from dim_tf.eval.settings import EvalSettings, check_run
from dim_tf.eval.suites.adaptive.settings import parse_norms, parse_variants
from dim_tf.eval.threat import EvalError, ThreatModel

ADAPTIVE_SCHEMA = "dim_tf.eval.adaptive/1"


@dataclasses.dataclass(frozen=True)
class AutoAttackConfig:
    """One run of the suite. The counts are those of AutoAttack's standard version (Croce & Hein 2020): APGD-CE and
    APGD-T 100 iterations, APGD-T and FAB-T against the `targets` most likely wrong classes, FAB-T 100 iterations,
    Square 5,000 queries; eps is the adaptive suite's threshold of each norm (L-inf 0.3, L2 1.5)."""

    model_dirs: tuple[str, ...]
    variants: tuple[str, ...] = ("default",)
    norms: tuple[ThreatModel, ...] = (ThreatModel.LINF,)
    num_examples: int = 1000  # the first N test images
    batch_size: int = 250
    seed: int = 0
    surrogate: str = "straight_through"  # the backward pass the gradient attacks use on bi variants (BPDA)
    apgd_steps: int = 100
    targets: int = 9
    fab_steps: int = 100
    square_queries: int = 5000
    budget: float = 1.0  # the factor the counts above were scaled by (recorded in the report)
    adaptive_report: str | None = None  # an adaptive.json to compare with, matched by path (else found by fingerprint)
    output: str | None = None  # the report JSON (the markdown beside it); default MODEL_DIR/eval/autoattack/
    data_dir: str | None = None
    progress: bool = True

    @staticmethod
    def eps(norm: ThreatModel) -> float:
        return THRESHOLDS[norm.value]

    def output_path(self) -> str:
        return self.output or os.path.join(self.model_dirs[0], "eval", "autoattack", "autoattack.json")


def check_adaptive_report(path: str) -> None:
    """Refuses an --adaptive_report that is not an adaptive suite's JSON."""
    try:
        with open(path) as f:
            report = json.load(f)
    except OSError as e:
        raise EvalError(f"--adaptive_report {path!r}: {e.strerror}; give an adaptive.json of --suite adaptive") \
            from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise EvalError(f"--adaptive_report {path!r} is not JSON; give an adaptive.json of --suite adaptive") \
            from None
    if not isinstance(report, dict) or report.get("schema") != ADAPTIVE_SCHEMA:
        raise EvalError(f"--adaptive_report {path!r} is not an adaptive suite report (schema {ADAPTIVE_SCHEMA})")


def validate(settings: EvalSettings) -> AutoAttackConfig:
    """Checks the settings before any work (the model's gradient is checked once it is loaded, still before any
    attack); returns the suite's config."""
    from dim_tf import variants
    from dim_tf.eval import results
    from dim_tf.eval.suites.autoattack.art_attacks import require_art

    dirs = tuple(d.strip() for d in (settings.models or settings.model_dir or "").split(",") if d.strip())
    if not dirs:
        raise EvalError("--suite autoattack needs --model_dir DIR (or --models DIR1,DIR2)")
    for d in dirs:
        if not os.path.isfile(os.path.join(d, "manifest.json")):
            raise EvalError(f"{d!r} is not a finished training run (no manifest.json); train it first or fix the "
                            "path")
    norms = parse_norms(settings.norm or "linf", "autoattack")
    for flag, value, ok in (("attack", settings.attack, None), ("eps", settings.eps, None),
                            ("params", settings.params, None), ("restarts", settings.restarts, 1),
                            ("output_dir", settings.output_dir, None),
                            ("undefended_dir", settings.undefended_dir, None),
                            ("cells_dir", settings.cells_dir, None), ("max_minutes", settings.max_minutes, None)):
        if value != ok:
            raise EvalError(f"--suite autoattack runs AutoAttack's standard attacks at the adaptive suite's "
                            f"thresholds: drop --{flag} (--budget scales the attacks; --output takes the report's "
                            "JSON)")
    if settings.strategy != "default":
        raise EvalError("--suite autoattack runs ART eagerly on one device: drop --strategy")
    if not settings.budget > 0:
        raise EvalError(f"--budget must be > 0, got {settings.budget}")
    variants.check("default", settings.bi_gradient, EvalError)
    if settings.output:
        results.check_output(settings.output)
        if not settings.output.endswith(".json"):
            raise EvalError(f"--output {settings.output!r}: give the report's JSON file name (the markdown report "
                            "is written beside it, .md)")
    if settings.adaptive_report:
        check_adaptive_report(settings.adaptive_report)
    check_run(settings)
    require_art()

    def scaled(count: int) -> int:
        return max(1, int(round(count * settings.budget)))

    # --bi_gradient left at its default (exact) means the suite's surrogate: the exact binarization has no gradient.
    surrogate = "straight_through" if settings.bi_gradient == "exact" else settings.bi_gradient
    return AutoAttackConfig(model_dirs=dirs, variants=tuple(parse_variants(settings.variant)), norms=norms,
                            num_examples=settings.num_examples, batch_size=settings.batch_size, seed=settings.seed,
                            surrogate=surrogate, apgd_steps=scaled(AutoAttackConfig.apgd_steps),
                            fab_steps=scaled(AutoAttackConfig.fab_steps),
                            square_queries=scaled(AutoAttackConfig.square_queries), budget=settings.budget,
                            adaptive_report=settings.adaptive_report, output=settings.output,
                            data_dir=settings.data_dir, progress=settings.progress)
