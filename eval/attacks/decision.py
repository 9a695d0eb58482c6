"""foolbox's decision-based attacks: they read only the model's top class (no gradient, no scores), so masked
gradients cannot stop them. Boundary (L2), HopSkipJump (L2, L-inf) and Pointwise (L0), foolbox 3.3.4 code run
unchanged through `dim_tf.eval.attacks._foolbox`. Each starts from an adversarial point (blended uniform noise for
Boundary and HopSkipJump, salt-and-pepper noise for Pointwise: foolbox's defaults; the nearest other-class image of
the batch where that fails), so all are kind "minimal"."""

from __future__ import annotations

import numpy as np

from dim_tf.eval.attacks import _foolbox as fbx
from dim_tf.eval.attacks.base import Attack, positive
from dim_tf.eval.foolbox_compat import foolbox as fb
from dim_tf.eval.threat import ThreatModel

LINF, L2, L0 = ThreatModel.LINF, ThreatModel.L2, ThreatModel.L0


def boundary(model_fn, x, y, eps, norm, params, restart=0):
    """Boundary attack: `steps` random steps along the boundary (spherical) and towards x (source), step sizes
    adapted to the success rates. Defaults: 3000 steps (foolbox: 25,000) from larger first steps (foolbox: 0.01,
    0.01, 1.5): the step sizes adapt only once 1,000 steps of statistics are in, and with foolbox's small ones the
    walk has barely moved by then (DIM, 10 examples, 1000 steps: median L2 9.8; with these 7.8)."""
    attack = fb.attacks.BoundaryAttack(steps=params["steps"], spherical_step=params["spherical_step"],
                                       source_step=params["source_step"], step_adaptation=params["step_adaptation"])
    init = fbx.blended_noise(norm, params["init_directions"], params["init_steps"])
    return fbx.run_from_starts(attack, init, model_fn, x, y, norm)[0]


def hop_skip_jump(model_fn, x, y, eps, norm, params, restart=0):
    """HopSkipJump: `steps` rounds of a Monte-Carlo estimate of the boundary's normal (initial_gradient_eval_steps *
    sqrt(round) queries), a geometric step along it and a binary search back to the boundary."""
    attack = fb.attacks.HopSkipJumpAttack(steps=params["steps"],
                                          initial_gradient_eval_steps=params["initial_gradient_eval_steps"],
                                          max_gradient_eval_steps=params["max_gradient_eval_steps"],
                                          gamma=params["gamma"], constraint=norm.value)
    init = fbx.blended_noise(norm, params["init_directions"], params["init_steps"])
    return fbx.run_from_starts(attack, init, model_fn, x, y, norm)[0]


def pointwise(model_fn, x, y, eps, norm, params, restart=0):
    """Pointwise (Schott et al. 2019): from salt-and-pepper noise, resets each changed pixel to x while the example
    stays adversarial, in random order, until no pixel can be reset; the best (fewest pixels) of `repeats` runs
    (the paper's "Pointwise x10": repeats=10 costs 3.3x the default 3). `init_steps`: salt-and-pepper noise levels
    tried (foolbox: 1000, all of them always run; 100 found as small L0s on DIM at 2.5x less cost).
    `l2_binary_search` (foolbox's default True) only shrinks the kept changes in L2 afterwards: no use for L0."""
    x = np.asarray(x, np.float32)
    best, best_dist = x.copy(), np.full(len(x), np.inf)
    for _ in range(params["repeats"]):
        init = fb.attacks.SaltAndPepperNoiseAttack(steps=params["init_steps"])
        attack = fb.attacks.PointwiseAttack(l2_binary_search=params["l2_binary_search"])
        adv, found = fbx.run_from_starts(attack, init, model_fn, x, y, norm)
        dist = norm.distance(adv, x)
        better = found & (dist < best_dist)
        best[better], best_dist[better] = adv[better], dist[better]
    return best


ROWS = (
    Attack("boundary", "decision", (L2,), boundary,
           {"steps": 3000, "spherical_step": 0.1, "source_step": 0.1, "step_adaptation": 2.0,
            "init_directions": 100, "init_steps": 50}, kind="minimal", randomized=True, uses_gradient=False,
           source=f"{fbx.SOURCE} BoundaryAttack (unchanged; init: LinearSearchBlendedUniformNoiseAttack, nearest "
                  "other-class image where it fails)",
           description="Boundary attack (Brendel et al. 2018): random walk along the decision boundary towards x; "
                       "top class only; minimal distance",
           check=lambda p: positive(p, "steps", "spherical_step", "source_step", "step_adaptation", "init_directions",
                                    "init_steps")),
    Attack("hop_skip_jump", "decision", (L2, LINF), hop_skip_jump,
           {"steps": 10, "initial_gradient_eval_steps": 100, "max_gradient_eval_steps": 10000, "gamma": 1.0,
            "init_directions": 100, "init_steps": 50}, kind="minimal", randomized=True, uses_gradient=False,
           source=f"{fbx.SOURCE} HopSkipJumpAttack (unchanged; init: LinearSearchBlendedUniformNoiseAttack, "
                  "nearest other-class image where it fails)",
           description="HopSkipJump (Chen et al. 2020): boundary normal estimated from top-class queries, "
                       "geometric steps, binary search; minimal distance",
           check=lambda p: positive(p, "steps", "initial_gradient_eval_steps", "max_gradient_eval_steps", "gamma",
                                    "init_directions", "init_steps")),
    Attack("pointwise", "decision", (L0,), pointwise,
           {"repeats": 3, "init_steps": 100, "l2_binary_search": False}, kind="minimal", randomized=True,
           uses_gradient=False,
           source=f"{fbx.SOURCE} PointwiseAttack (unchanged; init: SaltAndPepperNoiseAttack, nearest other-class "
                  "image where it fails)",
           description="Pointwise (Schott et al. 2019): salt-and-pepper start, pixels reset to x one by one while "
                       "still adversarial; best of `repeats`; minimal L0",
           check=lambda p: positive(p, "repeats", "init_steps")),
)
