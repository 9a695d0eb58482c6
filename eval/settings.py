"""The settings of an evaluation: `EvalSettings`, a frozen dataclass with one field per flag of `python -m
dim_tf.eval` (same names, same defaults), and the checks of settings that need neither a model nor data, shared
by the single attack (`dim_tf.eval.single`) and the suites (`dim_tf.eval.suites`).

From Python: `single.run(EvalSettings(model_dir="runs/dim", attack="pgd", eps="0.1,0.3"))`.
"""

from __future__ import annotations

import dataclasses

from dim_tf.eval.threat import EvalError


@dataclasses.dataclass(frozen=True)
class EvalSettings:
    """What to evaluate and how; `dim_tf.eval.cli` documents each field as a flag of the same name."""

    model_dir: str | None = None
    attack: str | None = None  # a name of the attack table; with a suite, a comma list restricting it
    suite: str | None = None  # paper or adaptive
    models: str | None = None  # suites: comma list of model dirs
    output_dir: str | None = None  # suites: the report's folder
    undefended_dir: str | None = None  # adaptive suite: the undefended CNN
    budget: float = 1.0  # adaptive suite: scales every attack's steps, queries, rounds and restarts
    cells_dir: str | None = None  # paper suite: the cell store (None: OUTPUT_DIR/cells)
    max_minutes: float | None = None  # paper suite: time budget of the attack work (0: list and render only)
    variant: str = "default"  # default | bi (adaptive suite: a comma list)
    bi_gradient: str = "exact"  # exact | straight_through | sigmoid
    norm: str | None = None  # None: linf for one attack or AutoAttack, linf,l2 for the adaptive suite
    eps: str | None = None  # a radius or a comma list; None: the norm's usual radius
    num_examples: int = 1000
    batch_size: int = 250
    seed: int = 0
    restarts: int = 1
    params: str | None = None  # key=value,key=value (suites: also attack.key=value)
    output: str | None = None  # single attack: the result JSON
    data_dir: str | None = None
    strategy: str = "default"
    cpu_devices: int = 1
    progress: bool = True
    abs_samples: int | None = None
    abs_steps: int | None = None
    adaptive_report: str | None = None  # autoattack suite: the adaptive suite's JSON to compare with (matched by path)


def parse_params(text: str | None) -> dict:
    """'steps=100,rel_stepsize=0.025' -> {'steps': '100', 'rel_stepsize': '0.025'} (typed by the attack row)."""
    if not text:
        return {}
    out = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise EvalError(f"--params {text!r}: expected key=value items separated by commas")
        out[key.strip()] = value.strip()
    return out


def check_num_examples(n: int, flag: str = "num_examples") -> None:
    """Refuses a number of test images the test set cannot give."""
    from dim_tf import data

    if not 1 <= n <= data.TEST_SIZE:
        raise EvalError(f"--{flag} {n}: the test set holds {data.TEST_SIZE} images; pick 1..{data.TEST_SIZE}")


def check_run(settings: EvalSettings) -> None:
    """Checks num_examples, batch_size, restarts and strategy (shared by the single attack and the suites)."""
    from dim_tf.distribute import STRATEGIES

    check_num_examples(settings.num_examples)
    if settings.batch_size < 1:
        raise EvalError(f"--batch_size must be >= 1, got {settings.batch_size}")
    if settings.restarts < 1:
        raise EvalError(f"--restarts must be >= 1, got {settings.restarts}")
    if settings.strategy not in STRATEGIES:
        raise EvalError(f"unknown strategy {settings.strategy!r}; choose one of {', '.join(STRATEGIES)}")
