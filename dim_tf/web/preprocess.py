"""The page's preprocessing of a drawing, in NumPy: `static/preprocess.js` computes the same thing in the browser.

MNIST's own recipe (LeCun et al.): the ink's bounding box is scaled, keeping its aspect ratio, so that its longer
side is 20 pixels (area averaging: each output pixel is the mean of the canvas area it covers), and the result is
placed in a 28x28 black field with its centre of mass at the centre (pixel 13.5, 13.5; the offset is rounded and
kept inside the field). Values become uint8 pixels round(255 v), what an int8 bundle's model.tflite reads
(`dim_tf.lite` feeds uint8 images as they are, and gives the float model p / 255). A canvas without ink gives a
black image. A 28x28 image (a loaded test digit) is not preprocessed: the page feeds its pixels as they are, as
`dim_tf.lite` does with a 28x28 PNG.

Every rounding is floor(x + 0.5) (JavaScript's Math.round), so both implementations agree up to the order of
floating-point sums (a pixel may differ by one level where a value falls on .5).
"""

from __future__ import annotations

import numpy as np

FIELD = 28
BOX = 20
CENTRE = (FIELD - 1) / 2  # 13.5


def _round(x):
    return np.floor(np.asarray(x, np.float64) + 0.5)


def area_weights(n_in: int, n_out: int) -> np.ndarray:
    """[n_out, n_in]: output pixel i averages input interval [i n_in / n_out, (i + 1) n_in / n_out)."""
    w = np.zeros((n_out, n_in))
    step = n_in / n_out
    for i in range(n_out):
        lo, hi = i * step, (i + 1) * step
        for k in range(int(np.floor(lo)), min(n_in, int(np.ceil(hi)))):
            w[i, k] = (min(hi, k + 1) - max(lo, k)) / step
    return w


def center_digit(gray: np.ndarray) -> np.ndarray:
    """A drawing (float [H, W] in [0, 1], light ink on black) -> uint8 [28, 28], MNIST-style (module doc)."""
    gray = np.asarray(gray, np.float64)
    if gray.ndim != 2:
        raise ValueError(f"expected a [H, W] grayscale drawing, got shape {list(gray.shape)}")
    rows, cols = np.flatnonzero(gray.max(axis=1) > 0), np.flatnonzero(gray.max(axis=0) > 0)
    out = np.zeros((FIELD, FIELD))
    if len(rows) == 0:
        return out.astype(np.uint8)
    crop = gray[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    h, w = crop.shape
    scale = BOX / max(h, w)
    oh, ow = max(1, int(_round(h * scale))), max(1, int(_round(w * scale)))
    patch = area_weights(h, oh) @ (crop @ area_weights(w, ow).T)
    total = patch.sum()
    cy = float((patch.sum(axis=1) * np.arange(oh)).sum() / total)
    cx = float((patch.sum(axis=0) * np.arange(ow)).sum() / total)
    oy = int(min(max(_round(CENTRE - cy), 0), FIELD - oh))
    ox = int(min(max(_round(CENTRE - cx), 0), FIELD - ow))
    out[oy:oy + oh, ox:ox + ow] = patch
    return np.clip(_round(out * 255.0), 0, 255).astype(np.uint8)
