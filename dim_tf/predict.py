"""Batched inference on NumPy images, with the boundary checks of `dim_tf.validation`."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from dim_tf.validation import check_images


def scores(model: keras.Model, images, batch_size: int = 500) -> np.ndarray:
    """The model's logits [N, 10] for images [N, 28, 28, 1] float32 in [0, 1] (checked)."""
    x = check_images(images)
    call = tf.function(lambda batch: model(batch), reduce_retracing=True)
    return np.concatenate([call(tf.constant(x[i:i + batch_size])).numpy() for i in range(0, len(x), batch_size)])


def accuracy(model: keras.Model, images, labels, batch_size: int = 500) -> float:
    """Top-1 accuracy in [0, 1]."""
    return float(np.mean(scores(model, images, batch_size).argmax(axis=1) == np.asarray(labels)))
