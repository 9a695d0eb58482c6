"""Gradient-free attacks that read the model's scores (logits) only: immune to masked or missing gradients.
SPSA (CleverHans' algorithm, corrected and batched in `dim_tf.eval.cleverhans_compat`)."""

from __future__ import annotations

from dim_tf.eval import cleverhans_compat as ch
from dim_tf.eval.attacks.base import Attack, _positive, params_checks
from dim_tf.eval.threat import EvalError, ThreatModel


def spsa(model_fn, x, y, eps, norm, params, restart=0):
    """L-inf SPSA from a random start; each example stops once misclassified."""
    return ch.spsa(model_fn, x.numpy(), y.numpy(), eps, params["steps"], clip_min=0.0, clip_max=1.0,
                   early_stop_loss_threshold=0.0, learning_rate=params["learning_rate"], delta=params["delta"],
                   spsa_samples=params["spsa_samples"], spsa_iters=params["spsa_iters"])


def _spsa_checks(p):
    _positive(p, "steps", "learning_rate", "delta", "spsa_samples", "spsa_iters")
    if p["spsa_samples"] % 2:
        raise EvalError(f"spsa_samples {p['spsa_samples']} must be even (the probes are mirrored)")


params_checks["spsa"] = _spsa_checks

ROWS = (
    Attack("spsa", "score_based", (ThreatModel.LINF,), spsa,
           {"steps": 100, "learning_rate": 0.01, "delta": 0.01, "spsa_samples": 128, "spsa_iters": 1},
           randomized=True, uses_gradient=False,
           source="cleverhans 4.0.0 spsa (own corrected, batched version: it crashes on Keras 3)",
           description="SPSA (Uesato et al. 2018): Adam on a finite-difference gradient estimate, margin loss; "
                       "needs no gradient"),
)
