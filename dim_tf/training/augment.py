"""Random geometric distortions of training images, as the original ABS training's augmentation (Augmentor with
zoom 0.9-1.1, shear up to 6 degrees and skew of magnitude 0.25, each applied with probability 0.1; its fourth
operation, a small elastic grid distortion, is left out).

Images [B, H, W, 1] float32 in [0, 1] in, the same shape and range out; each image draws its own transform, a
projective map about the image centre (bilinear resampling, black outside the image).
"""

from __future__ import annotations

import math

import tensorflow as tf

ZOOM = (0.9, 1.1)
MAX_SHEAR_DEGREES = 6.0
MAX_SKEW = 0.25  # perspective: the far edge of the image scaled by up to 1 +- 0.25


def check_probability(probability: float) -> float:
    """`probability` as a float, or ValueError naming the valid range."""
    if not 0.0 <= probability <= 1.0:
        raise ValueError(f"the augmentation probability must lie in [0, 1] (0: off; the original ABS used 0.1), "
                         f"got {probability}")
    return float(probability)


def _applied(probability: float, batch, value, neutral: float):
    """Per image: `value` with probability `probability`, else `neutral`."""
    chosen = tf.random.uniform([batch]) < probability
    return tf.where(chosen, value, neutral)


def random_distortion(x, probability: float):
    """x [B, H, W, 1] with each of zoom, shear and skew applied to each image independently with `probability`;
    x itself when `probability` is 0."""
    if check_probability(probability) == 0.0:
        return x
    batch, height, width = tf.shape(x)[0], x.shape[1], x.shape[2]
    zoom = _applied(probability, batch, tf.random.uniform([batch], *ZOOM), 1.0)
    shear = _applied(probability, batch, tf.random.uniform([batch], -1.0, 1.0), 0.0)
    shear = tf.tan(shear * MAX_SHEAR_DEGREES * math.pi / 180.0)
    skew = _applied(probability, batch, tf.random.uniform([batch], -MAX_SKEW, MAX_SKEW), 0.0)
    skew_on_x = tf.random.uniform([batch]) < 0.5  # which axis the perspective tilts along
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    px = tf.where(skew_on_x, skew / cx, 0.0)
    py = tf.where(skew_on_x, 0.0, skew / cy)
    # Output pixel (u, v), centred: (u - cx, v - cy) -> input (x, y) = centre + A (u - cx, v - cy) / k, with
    # A = [[1, shear], [0, 1]] / zoom and k = 1 + px (u - cx) + py (v - cy). Expanded into the 8 coefficients of
    # ImageProjectiveTransformV3 (input = (a0 u + a1 v + a2, b0 u + b1 v + b2) / (c0 u + c1 v + 1)).
    a = 1.0 / zoom
    k0 = 1.0 - px * cx - py * cy
    a0, a1 = a + cx * px, a * shear + cx * py
    a2 = -a * cx - a * shear * cy + cx * k0
    b0, b1 = cy * px, a + cy * py
    b2 = -a * cy + cy * k0
    transforms = tf.stack([a0, a1, a2, b0, b1, b2, px, py], axis=1) / k0[:, None]
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=x, transforms=tf.cast(transforms, tf.float32), output_shape=tf.constant([height, width], tf.int32),
        fill_value=0.0, interpolation="BILINEAR", fill_mode="CONSTANT")
    return tf.clip_by_value(out, 0.0, 1.0)
