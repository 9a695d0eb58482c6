"""Gradient-free attacks that read the model's scores (logits) only: immune to masked or missing gradients.
SPSA (CleverHans' algorithm, corrected and batched in `dim_tf.eval.cleverhans_compat`) and the Square attack
(Andriushchenko et al. 2020, written here from the paper, L-inf and L2)."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from dim_tf.eval import cleverhans_compat as ch
from dim_tf.eval.attacks.base import Attack, positive
from dim_tf.eval.threat import EvalError, ThreatModel
from dim_tf.predict import margin as margin_loss


def spsa(model_fn, x, y, eps, norm, params, restart=0):
    """L-inf SPSA from a random start; each example stops once misclassified."""
    return ch.spsa(model_fn, x.numpy(), y.numpy(), eps, params["steps"], clip_min=0.0, clip_max=1.0,
                   early_stop_loss_threshold=0.0, learning_rate=params["learning_rate"], delta=params["delta"],
                   spsa_samples=params["spsa_samples"], spsa_iters=params["spsa_iters"])


def _spsa_checks(p):
    positive(p, "steps", "learning_rate", "delta", "spsa_samples", "spsa_iters")
    if p["spsa_samples"] % 2:
        raise EvalError(f"spsa_samples {p['spsa_samples']} must be even (the probes are mirrored)")


# ------------------------------------------------------------------------------------------------------------------
# Square attack (Andriushchenko, Croce, Flammarion & Hein, ECCV 2020, https://arxiv.org/abs/1912.00049): random
# search that changes one square window per query and keeps the change if the margin loss falls.
# ------------------------------------------------------------------------------------------------------------------

def square_fraction(p_init: float, it: int, n_iters: int) -> float:
    """The paper's piecewise-constant schedule of the fraction of pixels changed per query (halved at 10, 50, 200,
    500, 1000, 2000, 4000, 6000, 8000 of 10,000 iterations, rescaled to `n_iters`)."""
    it = int(it / n_iters * 10000)
    for k, bound in enumerate((10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000, 10000)):
        if it <= bound:
            return p_init / 2 ** k
    return p_init


@tf.function(reduce_retracing=True)
def _margin(model_fn, images, y):
    """Z_y - max_{j != y} Z_j per example (< 0: fooled)."""
    return -margin_loss(model_fn(images), y)


def _margins(model_fn, images: np.ndarray, y: np.ndarray) -> np.ndarray:
    return _margin(model_fn, tf.constant(images, tf.float32), tf.constant(y, tf.int32)).numpy()


def _windows(n: int, h: int, w: int, s: int, rng: np.random.Generator) -> np.ndarray:
    """[n, h, w, 1] bool masks of one s x s window per example at a uniformly random position."""
    top = rng.integers(0, h - s + 1, n)[:, None, None]
    left = rng.integers(0, w - s + 1, n)[:, None, None]
    rows, cols = np.arange(h)[None, :, None], np.arange(w)[None, None, :]
    return ((rows >= top) & (rows < top + s) & (cols >= left) & (cols < left + s))[..., None]


def square_linf(model_fn, x, y, eps, queries, p_init, rng):
    """L-inf Square: start at vertical stripes of +-eps; each query sets one random s x s window to x +- eps (a
    random sign; the other sign if that one changes nothing), kept if the margin falls. Each example stops once
    fooled. Returns NumPy."""
    n, h, w, c = x.shape
    best = np.clip(x + eps * rng.choice([-1.0, 1.0], size=(n, 1, w, c)), 0.0, 1.0).astype(np.float32)
    margin = _margins(model_fn, best, y)
    for it in range(int(queries) - 1):
        idx = np.flatnonzero(margin > 0)
        if not len(idx):
            break
        s = int(round(np.sqrt(square_fraction(p_init, it, queries) * h * w)))
        s = min(max(s, 1), h - 1)
        xi, bi = x[idx], best[idx]
        window = _windows(len(idx), h, w, s, rng)
        sign = rng.choice([-1.0, 1.0], size=(len(idx), 1, 1, c))
        trial = np.where(window, np.clip(xi + sign * eps, 0.0, 1.0), bi)
        unchanged = ~np.any(window & (np.abs(trial - bi) > 1e-7), axis=(1, 2, 3))
        trial[unchanged] = np.where(window[unchanged], np.clip(xi[unchanged] - sign[unchanged] * eps, 0.0, 1.0),
                                    bi[unchanged])
        new = _margins(model_fn, trial.astype(np.float32), y[idx])
        better = new < margin[idx]
        best[idx[better]] = trial[better]
        margin[idx[better]] = new[better]
    return best


def _bump(rows: int, cols: int) -> np.ndarray:
    """The paper's pseudo-Gaussian rectangle: nested centred rectangles with weight 1 / (k + 1)^2, unit L2 norm."""
    out = np.zeros((rows, cols))
    r0, c0 = rows // 2, cols // 2
    for k in range(max(rows // 2 + 1, cols // 2 + 1)):
        out[max(r0 - k, 0):min(r0 + k + 1, rows), max(c0 - k, 0):min(c0 + k + 1, cols)] += 1.0 / (k + 1) ** 2
    return out / np.sqrt(np.sum(out ** 2))


def _meta_bump(s: int, rng: np.random.Generator) -> np.ndarray:
    """Two opposite-sign pseudo-Gaussian halves of an s x s square (randomly transposed), unit L2 norm."""
    out = np.zeros((s, s))
    out[:s // 2] = _bump(s // 2, s)
    out[s // 2:] = -_bump(s - s // 2, s)
    out /= np.sqrt(np.sum(out ** 2))
    return out.T if rng.random() > 0.5 else out


def square_l2(model_fn, x, y, eps, queries, p_init, rng):
    """L2 Square: start at a grid of random-sign meta-bumps scaled to norm eps; each query redraws the perturbation
    in one random s x s window (a new meta-bump plus the old window content, given the window's old mass, the
    mass of a second random window, which is zeroed, and the budget still unused) and rescales to norm eps;
    kept if the margin falls. One window position per query for the whole batch, as in the paper. NumPy out."""
    n, h, w, c = x.shape
    s = h // 5
    delta = np.zeros(x.shape)
    offset = (h - 5 * s) // 2
    for i in range(h // s):
        for j in range(w // s):
            r, q = offset + i * s, offset + j * s
            patch = _meta_bump(s, rng)[None, :, :, None] * rng.choice([-1.0, 1.0], size=(n, 1, 1, c))
            delta[:, r:r + s, q:q + s] += patch[:, :max(0, min(s, h - r)), :max(0, min(s, w - q))]

    def onto_sphere(d):
        return d / np.sqrt(np.sum(d ** 2, axis=(1, 2, 3), keepdims=True) + 1e-24) * eps

    best = np.clip(x + onto_sphere(delta), 0.0, 1.0).astype(np.float32)
    margin = _margins(model_fn, best, y)
    for it in range(int(queries) - 1):
        idx = np.flatnonzero(margin > 0)
        if not len(idx):
            break
        s = max(int(round(np.sqrt(square_fraction(p_init, it, queries) * h * w))), 3)
        s += 1 - s % 2  # odd
        s = min(s, h - 1)
        r1, c1 = rng.integers(0, h - s), rng.integers(0, w - s)
        r2, c2 = rng.integers(0, h - s), rng.integers(0, w - s)
        xi, d = x[idx], (best[idx] - x[idx]).astype(np.float64)
        mask1 = np.zeros((1, h, w, 1), bool)
        mask1[:, r1:r1 + s, c1:c1 + s] = True
        mask2 = np.zeros_like(mask1)
        mask2[:, r2:r2 + s, c2:c2 + s] = True
        norm_window = np.sqrt(np.sum((d * mask1) ** 2, axis=(1, 2), keepdims=True))
        norm_image = np.sqrt(np.sum(d ** 2, axis=(1, 2, 3), keepdims=True))
        norm_both = np.sqrt(np.sum((d * (mask1 | mask2)) ** 2, axis=(1, 2), keepdims=True))
        new = _meta_bump(s, rng)[None, :, :, None] * rng.choice([-1.0, 1.0], size=(len(idx), 1, 1, c))
        new = new + d[:, r1:r1 + s, c1:c1 + s] / (1e-10 + norm_window)
        new = new / np.sqrt(np.sum(new ** 2, axis=(1, 2), keepdims=True)) * np.sqrt(
            np.maximum(eps ** 2 - norm_image ** 2, 0.0) / c + norm_both ** 2)
        d[:, r2:r2 + s, c2:c2 + s] = 0.0
        d[:, r1:r1 + s, c1:c1 + s] = new
        trial = np.clip(xi + onto_sphere(d), 0.0, 1.0).astype(np.float32)
        new_margin = _margins(model_fn, trial, y[idx])
        better = new_margin < margin[idx]
        best[idx[better]] = trial[better]
        margin[idx[better]] = new_margin[better]
    return best


def square(model_fn, x, y, eps, norm, params, restart=0):
    """Square attack under `norm` (L-inf or L2): at most `queries` forward passes per example."""
    x = np.asarray(x, np.float32)
    y = np.asarray(y, np.int32)
    rng = np.random.default_rng([np.random.randint(2 ** 31), restart])
    run = square_linf if norm is ThreatModel.LINF else square_l2
    p_init = params["p_init"] if norm is ThreatModel.LINF else params["p_init_l2"]
    return run(model_fn, x, y, float(eps), params["queries"], p_init, rng)


def _square_checks(p):
    positive(p, "queries")
    for key in ("p_init", "p_init_l2"):
        if not 0.0 < p[key] <= 1.0:
            raise EvalError(f"{key} {p[key]} must lie in (0, 1] (a fraction of the pixels)")


ROWS = (
    Attack("spsa", "score_based", (ThreatModel.LINF,), spsa,
           {"steps": 100, "learning_rate": 0.01, "delta": 0.01, "spsa_samples": 128, "spsa_iters": 1},
           randomized=True, uses_gradient=False,
           source="cleverhans 4.0.0 spsa (own corrected, batched version: it crashes on Keras 3)",
           description="SPSA (Uesato et al. 2018): Adam on a finite-difference gradient estimate, margin loss; "
                       "needs no gradient", check=_spsa_checks, loss="margin"),
    Attack("square", "score_based", (ThreatModel.LINF, ThreatModel.L2), square,
           {"queries": 1000, "p_init": 0.8, "p_init_l2": 0.3}, randomized=True, uses_gradient=False,
           source="own (from the paper; p_init 0.8 as in AutoAttack and the authors' MNIST challenge run)",
           description="Square attack (Andriushchenko et al. 2020): random search over square windows on the "
                       "margin; each example stops once fooled; needs no gradient", check=_square_checks,
           loss="margin"),
)
