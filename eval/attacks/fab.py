"""FAB-T, the targeted Fast Adaptive Boundary attack of AutoAttack (Croce & Hein, "Minimally distorted adversarial
examples with a fast adaptive boundary attack", ICML 2020), for L-inf and L2.

ART 1.20.1 has no FAB (its `AutoAttack` runs DeepFool in its place), so this module is our own, written from
the paper and the update rule of the authors' reference code: at each step the target's decision boundary
f_t - f_y = 0 is linearised at the current point, the current point and the original image are both projected onto
that hyperplane intersected with the [0, 1] box (minimal L-inf or L2 step), and the two projections are mixed
(weight alpha <= alpha_max toward the original), extrapolated by eta; a point that is adversarial is pulled back
toward the original by beta. The smallest adversarial seen is kept.

The projection onto {z : w.z = b} with z in [0, 1] is exact up to a bisection on one scalar per example: the
minimal L-inf step is d_i = clip(t sign(w_i)), the minimal L2 step d_i = clip(lambda w_i) (KKT), the box bounds
clipping each coordinate, and w.d is monotone in t (lambda).

One departure, for speed, that does not change robust accuracy: an example stops once it has an adversarial within
`eps` (AutoAttack only asks whether one exists there), so its recorded distance is an upper bound.

Used by `--suite autoattack` (its cascade picks the target classes) and, as the table row `fab_targeted`, by the
adaptive suite's cascades: a minimum-norm attack finds what PGD-style attacks miss on L-inf-trained models under L2
(on Madry's PGD-7 network, first 100 images, FAB-T broke 44 images at L2 1.5 that every adaptive attack had left:
docs/autoattack.md).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from dim_tf.eval.attacks.adaptive import check_steps_eot_targets, toward_each_class
from dim_tf.eval.attacks.base import Attack
from dim_tf.eval.threat import ThreatModel

ALPHA_MAX, ETA, BETA = 0.1, 1.05, 0.9  # the reference defaults
BISECTION_STEPS = 30


def hyperplane_step(p: np.ndarray, w: np.ndarray, c: np.ndarray, norm: ThreatModel) -> np.ndarray:
    """The smallest step d (L-inf or L2) with w.d = c and p + d in [0, 1], per row of p, w [B, D] and c [B]; where
    the box cannot reach the hyperplane, the step that comes closest (every free coordinate at its bound)."""
    p, w, c = np.asarray(p, np.float64), np.asarray(w, np.float64), np.asarray(c, np.float64)
    s = np.where(c >= 0, 1.0, -1.0)[:, None]
    lo, hi = -p, 1.0 - p
    goal = np.abs(c)
    if norm is ThreatModel.LINF:
        direction = s * np.sign(w)

        def step(t):  # t [B] -> d [B, D]
            return np.clip(t[:, None] * direction, lo, hi)

        low, high = np.zeros(len(p)), np.ones(len(p))
    else:
        direction = s * w
        sq = (w * w).sum(axis=1)
        free = sq > 1e-30
        low = np.where(free, goal / np.maximum(sq, 1e-30), 0.0)  # the step without the box: a lower bound
        with np.errstate(divide="ignore"):
            saturate = np.where(w != 0, 1.0 / np.abs(w), 0.0).max(axis=1)  # beyond it every coordinate is clipped
        high = np.maximum(low, saturate)
        low, high = np.log(np.maximum(low, 1e-30)), np.log(np.maximum(high, 1e-30))

        def step(t):
            return np.clip(np.exp(t)[:, None] * direction, lo, hi)
    for _ in range(BISECTION_STEPS):
        mid = (low + high) / 2
        reached = (s[:, 0] * (w * step(mid)).sum(axis=1)) >= goal
        high, low = np.where(reached, mid, high), np.where(reached, low, mid)
    d = step(high)
    if norm is not ThreatModel.LINF:
        d[~free] = 0.0
    return d


@tf.function(reduce_retracing=True)
def _diff_and_gradient(model, x, y, target):
    """f_t - f_y at x [B] and its input gradient [B, ...] (zeros where the model has none)."""
    with tf.GradientTape() as tape:
        tape.watch(x)
        logits = tf.convert_to_tensor(model(x))
        diff = tf.gather(logits, target, axis=1, batch_dims=1) - tf.gather(logits, y, axis=1, batch_dims=1)
        total = tf.reduce_sum(diff)
    grad = tape.gradient(total, x)
    return diff, tf.zeros_like(x) if grad is None else grad


def fab_targeted(model, x: np.ndarray, y: np.ndarray, target: np.ndarray, norm: ThreatModel, eps: float,
                 steps: int = 100) -> np.ndarray:
    """FAB-T toward class `target[i]` for each image x[i] (true class y[i]); `model` images -> logits (differentiable:
    a BPDA surrogate for binarized models). Returns the smallest adversarial found per image (x[i] where none)."""
    from dim_tf import predict

    x = np.asarray(x, np.float32)
    y, target = np.asarray(y, np.int32), np.asarray(target, np.int32)
    n = len(x)
    flat0 = x.reshape(n, -1).astype(np.float64)
    current = flat0.copy()
    best, adv = np.full(n, np.inf), x.copy()
    active = np.ones(n, bool)
    for _ in range(int(steps)):
        idx = np.flatnonzero(active)
        if not len(idx):
            break
        p1, p0 = current[idx], flat0[idx]
        diff, grad = _diff_and_gradient(model, tf.constant(p1.reshape((-1,) + x.shape[1:]), tf.float32),
                                        tf.constant(y[idx]), tf.constant(target[idx]))
        diff, w = diff.numpy().astype(np.float64), grad.numpy().reshape(len(idx), -1).astype(np.float64)
        # The linearised boundary diff + w.(z - p1) = 0: from p1 a step d needs w.d = -diff, from p0 w.(p1 - p0) - diff.
        d1 = hyperplane_step(p1, w, -diff, norm)
        d0 = hyperplane_step(p0, w, (w * (p1 - p0)).sum(axis=1) - diff, norm)
        a1 = np.maximum(norm.distance(d1, np.zeros_like(d1)), 1e-8)
        a0 = np.maximum(norm.distance(d0, np.zeros_like(d0)), 1e-8)
        alpha = np.clip(a1 / (a1 + a0), 0.0, ALPHA_MAX)[:, None]
        new = np.clip((p1 + ETA * d1) * (1 - alpha) + (p0 + ETA * d0) * alpha, 0.0, 1.0)
        images = new.reshape((-1,) + x.shape[1:]).astype(np.float32)
        fooled = predict.labels(model, images, batch_size=len(images), check=False) != y[idx]
        dist = norm.distance(images, x[idx])
        better = fooled & (dist < best[idx])
        adv[idx[better]] = images[better]
        best[idx[better]] = dist[better]
        new[fooled] = p0[fooled] + BETA * (new[fooled] - p0[fooled])
        current[idx] = new
        active[idx] = best[idx] > eps
    return adv


def fab_row(model_fn, x, y, eps, norm, params, restart=0):
    """FAB-T toward the `targets` wrong classes of highest clean score in turn (see `adaptive.toward_each_class`);
    per example the smallest adversarial found when it lies within eps, else x (the row is bounded)."""
    x = np.asarray(x, np.float32)
    y = np.asarray(y, np.int32)

    def toward(todo, t):
        adv = fab_targeted(model_fn, x[todo], y[todo], t, norm, eps, params["steps"])
        return np.where((norm.distance(adv, x[todo]) <= eps)[:, None, None, None], adv, x[todo])

    return toward_each_class(model_fn, x, y, params["targets"], toward)


ROWS = (
    Attack("fab_targeted", "fab", (ThreatModel.LINF, ThreatModel.L2), fab_row, {"steps": 100, "targets": 9},
           source="own, from Croce & Hein (2020) and the reference code's update rule",
           description="FAB-T: minimal steps onto the linearised boundary toward each likely wrong class in turn "
                       "(AutoAttack's), kept when within eps",
           check=check_steps_eot_targets, loss="targeted logit difference"),
)
