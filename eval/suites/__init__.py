"""Suites: many attacks on one or more models, one report. `python -m dim_tf.eval --suite NAME ...`.

Each suite module has `run(settings, argv, log) -> dict`, with `settings` a `dim_tf.eval.settings.EvalSettings`
(the suites' settings are fields there too) and `argv` the command line its reports record. The table maps a suite
name to its module, imported on first use so that `--help` stays fast.
"""

from __future__ import annotations

import importlib

from dim_tf.eval.threat import EvalError

SUITES = {
    "paper": "dim_tf.eval.suites.paper",  # the paper's Tables 1 and 2 (its attacks, thresholds, worst case)
    "adaptive": "dim_tf.eval.suites.adaptive",  # attacks built for DIM/biDIM, with gradient-masking sanity checks
    "autoattack": "dim_tf.eval.suites.autoattack",  # AutoAttack (standard version) through ART, vs the adaptive suite
}


def get(name: str):
    """The suite module called `name`, or `EvalError` listing the suites."""
    if name not in SUITES:
        raise EvalError(f"unknown suite {name!r}; choose one of {', '.join(SUITES)}")
    return importlib.import_module(SUITES[name])
