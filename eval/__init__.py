"""Evaluation of trained models (installed as dim_tf.eval): the attack table and the benchmark.

    python -m dim_tf.eval --model_dir runs/dim --attack pgd --norm linf --eps 0.1,0.3
    python -m dim_tf.eval --attack list

From Python: `dim_tf.eval.benchmark(model, images, labels, "pgd", "linf", [0.3])` -> dict, and
`dim_tf.eval.ThreatModel`. Importing this package is cheap; TensorFlow loads on first use of `benchmark`/`ATTACKS`.
"""

from dim_tf.eval.threat import EvalError, ThreatModel

__all__ = ["ATTACKS", "EvalError", "ThreatModel", "benchmark"]


def __getattr__(name):
    if name == "benchmark":
        from dim_tf.eval.runner import benchmark

        return benchmark
    if name == "ATTACKS":
        from dim_tf.eval.attacks import ATTACKS

        return ATTACKS
    raise AttributeError(f"module 'dim_tf.eval' has no attribute {name!r}")
