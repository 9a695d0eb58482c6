"""Minimum-distance optimisation attacks: they look for the smallest adversarial perturbation instead of taking
an eps. Carlini-Wagner L2 (CleverHans' version, corrected in `dim_tf.eval.cleverhans_compat`)."""

from __future__ import annotations

from dim_tf.eval import cleverhans_compat as ch
from dim_tf.eval.attacks.base import Attack, positive
from dim_tf.eval.threat import ThreatModel


def cw_l2(model_fn, x, y, eps, norm, params, restart=0):
    """The smallest-L2 adversarial found per example (x where none); `eps` is unused (kind "minimal")."""
    attack = ch.CarliniWagnerL2(model_fn, y=y.numpy(), targeted=False, batch_size=len(x), clip_min=0.0, clip_max=1.0,
                                binary_search_steps=params["binary_search_steps"],
                                max_iterations=params["max_iterations"], abort_early=params["abort_early"],
                                confidence=params["confidence"], initial_const=params["initial_const"],
                                learning_rate=params["learning_rate"])
    return attack.attack(x.numpy())


ROWS = (
    Attack("cw_l2", "optimization", (ThreatModel.L2,), cw_l2,
           {"binary_search_steps": 6, "max_iterations": 200, "learning_rate": 0.05, "initial_const": 0.01,
            "confidence": 0.0, "abort_early": True}, kind="minimal",
           source="cleverhans 4.0.0 carlini_wagner_l2 (own corrected version: it crashes on Keras 3)",
           description="Carlini & Wagner's L2 attack (2017): Adam on a tanh-box, binary search on the constant; "
                       "minimal distance, thresholded at each eps",
           check=lambda p: positive(p, "binary_search_steps", "max_iterations", "initial_const", "learning_rate"),
           loss="margin"),
)
