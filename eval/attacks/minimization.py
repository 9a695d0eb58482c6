"""foolbox's white-box minimum-norm attacks: each looks for the smallest adversarial perturbation (kind "minimal":
run once, thresholded at every eps). DDN (L2), DeepFool (L2, L-inf) and Brendel-Bethge (L0, L1, L2, L-inf), all
foolbox 3.3.4 code run unchanged through `dim_tf.eval.attacks._foolbox`."""

from __future__ import annotations

import numpy as np

from dim_tf.eval.attacks import _foolbox as fbx
from dim_tf.eval.attacks.base import Attack, positive
from dim_tf.eval.foolbox_compat import foolbox as fb
from dim_tf.eval.threat import EvalError, ThreatModel

LINF, L2, L1, L0 = ThreatModel.LINF, ThreatModel.L2, ThreatModel.L1, ThreatModel.L0


def ddn(model_fn, x, y, eps, norm, params, restart=0):
    """Decoupled direction and norm: `steps` gradient steps with the L2 radius grown or shrunk by `gamma`."""
    attack = fb.attacks.DDNAttack(init_epsilon=params["init_epsilon"], steps=params["steps"], gamma=params["gamma"])
    return fbx.run(attack, model_fn, x, y)


DEEPFOOL = {L2: fb.attacks.L2DeepFoolAttack, LINF: fb.attacks.LinfDeepFoolAttack}


def deepfool(model_fn, x, y, eps, norm, params, restart=0):
    """DeepFool: steps to the linearised nearest boundary among the `candidates` top classes, `overshoot` beyond."""
    attack = DEEPFOOL[norm](steps=params["steps"], candidates=params["candidates"], overshoot=params["overshoot"],
                            loss=params["loss"])
    return fbx.run(attack, model_fn, x, y)


BRENDEL_BETHGE = {L0: fb.attacks.L0BrendelBethgeAttack, L1: fb.attacks.L1BrendelBethgeAttack,
                  L2: fb.attacks.L2BrendelBethgeAttack, LINF: fb.attacks.LinfinityBrendelBethgeAttack}
# foolbox's L0 Brendel-Bethge counts only changes above this as changed pixels; the L0 distance here counts all.
L0_NEGLIGIBLE = 1e-4


def brendel_bethge(model_fn, x, y, eps, norm, params, restart=0):
    """Brendel-Bethge: from a blended-noise start (or the nearest other-class image of the batch where that fails),
    binary search to the boundary, then `steps` trust-region steps along it towards x."""
    attack = BRENDEL_BETHGE[norm](steps=params["steps"], lr=params["lr"], lr_decay=params["lr_decay"],
                                  lr_num_decay=params["lr_num_decay"], momentum=params["momentum"],
                                  overshoot=params["overshoot"], binary_search_steps=params["binary_search_steps"])
    init = fbx.blended_noise(norm, params["init_directions"], params["init_steps"])
    adv, _ = fbx.run_from_starts(attack, init, model_fn, x, y, norm)
    return _drop_negligible_changes(model_fn, np.asarray(x, np.float32), y, adv) if norm is L0 else adv


def _drop_negligible_changes(model_fn, x: np.ndarray, y, adv: np.ndarray) -> np.ndarray:
    """`adv` with changes of at most L0_NEGLIGIBLE reset to x, where it stays adversarial."""
    snapped = np.where(np.abs(adv - x) <= L0_NEGLIGIBLE, x, adv)
    keep = fbx.is_adversarial(model_fn, snapped, y)
    return np.where(keep[:, None, None, None], snapped, adv)


def _deepfool_checks(p):
    positive(p, "steps", "overshoot")
    if not 2 <= p["candidates"] <= 10:
        raise EvalError(f"candidates {p['candidates']} must lie in 2..10 (the top classes DeepFool tries)")
    if p["loss"] not in ("logits", "crossentropy"):
        raise EvalError(f"loss {p['loss']!r} must be logits or crossentropy")


ROWS = (
    Attack("ddn", "minimization", (L2,), ddn, {"steps": 100, "init_epsilon": 1.0, "gamma": 0.05}, kind="minimal",
           source=f"{fbx.SOURCE} DDNAttack (unchanged)",
           description="Decoupled direction and norm (Rony et al. 2019): cross-entropy gradient steps, L2 radius "
                       "adapted per example; minimal distance",
           check=lambda p: positive(p, "init_epsilon", "steps", "gamma"), loss="cross_entropy"),
    Attack("deepfool", "minimization", (L2, LINF), deepfool,
           {"steps": 50, "candidates": 10, "overshoot": 0.02, "loss": "logits"}, kind="minimal",
           source=f"{fbx.SOURCE} L2DeepFoolAttack / LinfDeepFoolAttack (unchanged)",
           description="DeepFool (Moosavi-Dezfooli et al. 2016): steps to the linearised nearest class boundary; "
                       "minimal distance", check=_deepfool_checks,
           loss=lambda p: "cross_entropy" if p.get("loss") == "crossentropy" else "margin"),
    Attack("brendel_bethge", "minimization", (L0, L1, L2, LINF), brendel_bethge,
           {"steps": 100, "lr": 1e-3, "lr_decay": 0.5, "lr_num_decay": 20, "momentum": 0.8, "overshoot": 1.1,
            "binary_search_steps": 10, "init_directions": 100, "init_steps": 100}, kind="minimal", randomized=True,
           source=f"{fbx.SOURCE} L0/L1/L2/LinfinityBrendelBethgeAttack (unchanged; init: "
                  "LinearSearchBlendedUniformNoiseAttack, nearest other-class image where it fails)",
           description="Brendel-Bethge (2019): walks the decision boundary towards x with a trust-region step on the "
                       "logit margin; minimal distance",
           check=lambda p: positive(p, "steps", "lr", "lr_decay", "lr_num_decay", "overshoot", "binary_search_steps",
                                    "init_directions", "init_steps"), loss="margin"),
)
