"""Checks at the package's boundaries: images handed in by users must be NHWC float in [0, 1]."""

from __future__ import annotations

import numpy as np


class InputError(ValueError):
    """Input of the wrong shape, dtype or range; the message names the fix."""


def check_images(images, image_shape=(28, 28, 1)) -> np.ndarray:
    """Returns `images` as float32 [N, 28, 28, 1] in [0, 1], or raises `InputError` naming the problem."""
    x = np.asarray(images)
    if x.ndim != 4 or tuple(x.shape[1:]) != tuple(image_shape):
        hint = " (add a channel axis: x[..., None])" if x.ndim == 3 and tuple(x.shape[1:]) == image_shape[:2] else ""
        raise InputError(f"images must have shape [N, {', '.join(map(str, image_shape))}], got {list(x.shape)}{hint}")
    if not np.issubdtype(x.dtype, np.floating):
        raise InputError(f"images must be float in [0, 1], got dtype {x.dtype}; for uint8 0..255 pass x / 255.0")
    if np.isnan(x).any() or np.isinf(x).any():
        raise InputError("images contain NaN or infinite values")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0.0 or hi > 1.0:
        hint = "; it looks like 0..255, divide by 255" if hi > 1.0 and hi <= 255.0 and lo >= 0.0 else ""
        raise InputError(f"images must lie in [0, 1], got values in [{lo:g}, {hi:g}]{hint}")
    return x.astype(np.float32, copy=False)


def check_labels(labels, n: int, num_classes: int = 10) -> np.ndarray:
    """Returns `labels` as int32 [n] in [0, num_classes), or raises `InputError`."""
    y = np.asarray(labels)
    if y.shape != (n,) or not np.issubdtype(y.dtype, np.integer):
        raise InputError(f"labels must be {n} integers, got shape {list(y.shape)} dtype {y.dtype}")
    if n and (y.min() < 0 or y.max() >= num_classes):
        raise InputError(f"labels must lie in 0..{num_classes - 1}")
    return y.astype(np.int32, copy=False)
