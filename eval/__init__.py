"""Evaluation of trained models (installed as dim_tf.eval): the attack table, one attack on one model, the suites.

    python -m dim_tf.eval --model_dir runs/dim --attack pgd --norm linf --eps 0.1,0.3
    python -m dim_tf.eval --attack list

From Python: `dim_tf.eval.run_attack(model, images, labels, "pgd", "linf", [0.3])` -> dict (one attack, scored),
`dim_tf.eval.ThreatModel`, and `EvalSettings` for `dim_tf.eval.single.run` and the suites. Importing this package
is cheap; TensorFlow loads on first use of `run_attack`/`ATTACKS`.
"""

from dim_tf.eval.settings import EvalSettings
from dim_tf.eval.threat import EvalError, ThreatModel

__all__ = ["ATTACKS", "EvalError", "EvalSettings", "ThreatModel", "run_attack"]


def __getattr__(name):
    if name == "run_attack":
        from dim_tf.eval.attack_run import run_attack

        return run_attack
    if name == "ATTACKS":
        from dim_tf.eval.attacks import ATTACKS

        return ATTACKS
    raise AttributeError(f"module 'dim_tf.eval' has no attribute {name!r}")
