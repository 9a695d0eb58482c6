"""White-box gradient attacks with an eps bound: FGSM/FGM, PGD (L-inf, L2 from CleverHans; L1 by sparse L1
descent, written here), BIM and MIM. Loss: softmax cross-entropy of the model's logits (for DIM, of its scores).

Step sizes are relative to eps (`rel_stepsize`), as in Foolbox; the absolute step is rel_stepsize * eps.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from dim_tf.eval import cleverhans_compat as ch
from dim_tf.eval.attacks.base import Attack, iterative
from dim_tf.eval.threat import EvalError, ThreatModel

LINF, L2, L1 = ThreatModel.LINF, ThreatModel.L2, ThreatModel.L1
BOX = dict(clip_min=0.0, clip_max=1.0)


def fgsm(model_fn, x, y, eps, norm, params, restart=0):
    """One step of size eps along the sign of the gradient (L-inf) or the gradient direction (L2)."""
    return ch.fast_gradient_method(model_fn, x, eps, norm.ord, y=y, **BOX)


def pgd(model_fn, x, y, eps, norm, params, restart=0):
    """Madry et al.'s PGD: `steps` steps of rel_stepsize * eps from a random start in the ball (if rand_init);
    L1 uses sparse L1 descent (`sparse_l1_descent`)."""
    if norm is L1:
        return sparse_l1_descent(model_fn, x, y, eps, params["steps"], params["rel_stepsize"] * eps,
                                 params["sparsity"], rand_init=params["rand_init"] and restart > 0)
    return ch.projected_gradient_descent(model_fn, x, eps, params["rel_stepsize"] * eps, params["steps"], norm.ord,
                                         y=y, rand_init=params["rand_init"], rand_minmax=eps, **BOX)


def bim(model_fn, x, y, eps, norm, params, restart=0):
    """Kurakin et al.'s basic iterative method: PGD from x itself (no random start)."""
    return ch.basic_iterative_method(model_fn, x, eps, params["rel_stepsize"] * eps, params["steps"], norm.ord,
                                     y=y, **BOX)


def mim(model_fn, x, y, eps, norm, params, restart=0):
    """Dong et al.'s momentum iterative method (MI-FGSM)."""
    return ch.momentum_iterative_method(model_fn, x, eps, params["rel_stepsize"] * eps, params["steps"], norm.ord,
                                        y=y, decay_factor=params["decay_factor"], sanity_checks=False, **BOX)


# ------------------------------------------------------------------------------------------------------------------
# Sparse L1 descent (SLIDE, Tramer & Boneh 2019, https://arxiv.org/abs/1904.13000). CleverHans had it only in its
# TF1 API (SparseL1Descent), which 4.0.0 no longer ships.
# ------------------------------------------------------------------------------------------------------------------

def project_l1(delta, eps):
    """Euclidean projection of each row of `delta` [B, D] onto the L1 ball of radius eps (Duchi et al. 2008)."""
    magnitude = tf.abs(delta)
    inside = tf.reduce_sum(magnitude, axis=1, keepdims=True) <= eps
    mu = tf.sort(magnitude, axis=1, direction="DESCENDING")
    cumulative = tf.cumsum(mu, axis=1)
    ranks = tf.cast(tf.range(1, tf.shape(delta)[1] + 1), delta.dtype)[None]
    rho = tf.reduce_sum(tf.cast(mu - (cumulative - eps) / ranks > 0, tf.int32), axis=1, keepdims=True)
    rho = tf.maximum(rho, 1)
    theta = (tf.gather(cumulative, rho - 1, batch_dims=1) - eps) / tf.cast(rho, delta.dtype)
    projected = tf.sign(delta) * tf.maximum(magnitude - theta, 0.0)
    return tf.where(inside, delta, projected)


def random_l1(shape, eps):
    """Uniform random points of the L1 ball of radius eps (Laplace direction, radius eps * U^(1/d))."""
    b, d = shape[0], int(np.prod(shape[1:]))
    laplace = tf.random.gamma([b, d], 1.0) * tf.sign(tf.random.uniform([b, d], -1.0, 1.0))
    direction = laplace / tf.reduce_sum(tf.abs(laplace), axis=1, keepdims=True)
    radius = eps * tf.pow(tf.random.uniform([b, 1]), 1.0 / d)
    return tf.reshape(direction * radius, shape)


@tf.function(reduce_retracing=True)
def _slide_step(model_fn, x, adv, y, step, eps, sparsity):
    with tf.GradientTape() as tape:
        tape.watch(adv)
        loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=model_fn(adv))
    grad = tape.gradient(loss, adv)
    grad = tf.zeros_like(adv) if grad is None else grad
    # Coordinates already at the box's edge and pushed further out cannot move: leave them out of the step.
    stuck = ((adv <= 0.0) & (grad < 0.0)) | ((adv >= 1.0) & (grad > 0.0))
    grad = tf.where(stuck, tf.zeros_like(grad), grad)
    b = tf.shape(x)[0]
    flat = tf.reshape(grad, [b, -1])
    magnitude = tf.abs(flat)
    d = flat.shape[1]
    k = max(1, int(round((1.0 - sparsity) * d)))
    threshold = tf.math.top_k(magnitude, k).values[:, -1:]
    direction = tf.sign(flat) * tf.cast((magnitude >= threshold) & (magnitude > 0), flat.dtype)
    direction /= tf.maximum(tf.reduce_sum(tf.abs(direction), axis=1, keepdims=True), 1.0)
    delta = tf.reshape(adv - x, [b, -1]) + step * direction
    delta = project_l1(delta, eps)
    # Clipping to the box only shrinks |delta| coordinate-wise, so the L1 bound still holds.
    return tf.clip_by_value(x + tf.reshape(delta, tf.shape(x)), 0.0, 1.0)


def sparse_l1_descent(model_fn, x, y, eps, steps, step, sparsity, rand_init=False):
    """SLIDE: each step moves `step` of L1 mass along the signs of the gradient's largest (1 - sparsity) fraction
    of coordinates, then projects onto the eps L1 ball and the [0, 1] box."""
    x = tf.convert_to_tensor(x, tf.float32)
    y = tf.convert_to_tensor(y, tf.int32)
    adv = x
    if rand_init:
        adv = tf.clip_by_value(x + random_l1(x.shape, eps), 0.0, 1.0)
    eps_t, step_t, q = tf.constant(eps, tf.float32), tf.constant(step, tf.float32), float(sparsity)
    for _ in range(int(steps)):
        adv = _slide_step(model_fn, x, adv, y, step_t, eps_t, q)
    return adv


def _pgd_checks(params):
    iterative(params)
    if not 0.0 <= params["sparsity"] < 1.0:
        raise EvalError(f"sparsity {params['sparsity']} must lie in [0, 1) (the fraction of coordinates left out "
                        "of an L1 step)")


ROWS = (
    Attack("fgsm", "gradient", (LINF,), fgsm, {}, source="cleverhans 4.0.0 fast_gradient_method (unchanged)",
           description="Fast gradient sign method: one step of size eps (Goodfellow et al. 2015)",
           loss="cross_entropy"),
    Attack("fgm", "gradient", (L2,), fgsm, {}, source="cleverhans 4.0.0 fast_gradient_method (unchanged)",
           description="Fast gradient method: one L2 step of length eps", loss="cross_entropy"),
    Attack("pgd", "gradient", (LINF, L2, L1), pgd,
           {"steps": 40, "rel_stepsize": 0.0625, "rand_init": True, "sparsity": 0.99}, randomized=True,
           source="cleverhans 4.0.0 projected_gradient_descent (unchanged); L1: sparse L1 descent (own)",
           description="Projected gradient descent from a random start (Madry et al. 2018); L1: SLIDE "
                       "(Tramer & Boneh 2019), first run from x, restarts from random points",
           check=_pgd_checks, loss="cross_entropy"),
    Attack("bim", "gradient", (LINF, L2), bim, {"steps": 40, "rel_stepsize": 0.05},
           source="cleverhans 4.0.0 basic_iterative_method (sanity checks off: they crash on NumPy 2)",
           description="Basic iterative method: PGD from x itself (Kurakin et al. 2017)", check=iterative,
           loss="cross_entropy"),
    Attack("mim", "gradient", (LINF, L2), mim, {"steps": 10, "rel_stepsize": 0.1, "decay_factor": 1.0},
           source="cleverhans 4.0.0 momentum_iterative_method (unchanged)",
           description="Momentum iterative method, MI-FGSM (Dong et al. 2018)", check=iterative,
           loss="cross_entropy"),
)
