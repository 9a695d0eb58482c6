"""ABS's class-specific fine-scaling (the original ABS multiplies each class's ELBO by a fitted scalar): ten scales
fitted discriminatively, after the VAEs are trained, on held-out images (the validation split, never the test set).

The fit minimises the mean cross-entropy of softmax(-logit_scale * s_k * ELBO_k) over s, a convex problem (the
logits are linear in s), under mean(s) = 1 so that `logit_scale` keeps its meaning (a common factor would only
change the softmax temperature, not a prediction). Projected gradient descent with a backtracking line search.
"""

from __future__ import annotations

import numpy as np

SCALE_RANGE = (0.5, 2.0)  # the original's fitted scales lie in 0.96-1.06


def cross_entropy(elbos: np.ndarray, labels: np.ndarray, logit_scale: float, scales: np.ndarray):
    """(mean cross-entropy, its gradient [K] in the scales) of ELBOs [N, K] with integer labels [N]."""
    logits = -logit_scale * scales * elbos
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    rows = np.arange(len(labels))
    residual = np.exp(log_p)
    residual[rows, labels] -= 1.0
    return -float(np.mean(log_p[rows, labels])), np.mean(residual * (-logit_scale * elbos), axis=0)


def fit_class_scales(elbos, labels, logit_scale: float, iterations: int = 500, tolerance: float = 1e-7
                     ) -> np.ndarray:
    """Scales [K] (mean 1, within SCALE_RANGE) minimising the cross-entropy of per-pixel ELBOs [N, K] (lower is
    more likely) against labels [N] in 0..K-1."""
    elbos = np.asarray(elbos, np.float64)
    labels = np.asarray(labels, np.int64)
    if elbos.ndim != 2 or len(elbos) != len(labels) or len(labels) == 0:
        raise ValueError(f"fit_class_scales needs ELBOs [N, K] and N labels, got {elbos.shape} and {labels.shape}")
    scales, step = np.ones(elbos.shape[1]), 1e-3
    loss, grad = cross_entropy(elbos, labels, logit_scale, scales)
    for _ in range(iterations):
        direction = grad - grad.mean()  # keeps mean(scales) = 1
        if float(direction @ direction) < tolerance ** 2:
            break
        while step > 1e-12:
            candidate = np.clip(scales - step * direction, *SCALE_RANGE)
            new_loss, new_grad = cross_entropy(elbos, labels, logit_scale, candidate)
            if new_loss <= loss - 1e-4 * float(direction @ (scales - candidate)):
                scales, loss, grad, step = candidate, new_loss, new_grad, step * 2
                break
            step /= 2
        else:
            break
    return scales
