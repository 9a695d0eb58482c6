"""What a model says about images, batched over NumPy arrays: scores (logits), labels, accuracy, and the margin
the attacks and their checks read from the scores. The one place that chunks images through a model."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from dim_tf.validation import check_images


def batched(call, images: np.ndarray, batch_size: int = 500) -> np.ndarray:
    """`call` (a batch tensor -> tensor) over `images` in chunks of `batch_size`, concatenated (NumPy)."""
    return np.concatenate([np.asarray(call(tf.constant(images[i:i + batch_size])))
                           for i in range(0, len(images), batch_size)])


@tf.function(reduce_retracing=True)
def _scores(model, batch):
    return model(batch)


def scores(model: keras.Model, images, batch_size: int = 500, check: bool = True) -> np.ndarray:
    """The model's logits [N, 10] for images [N, 28, 28, 1] float32 in [0, 1]; `check`: refuse other input
    (`dim_tf.validation`), off for images the package made itself (attacks' iterates). `model` is any callable
    images -> scores usable in a `tf.function`."""
    x = check_images(images) if check else np.asarray(images, np.float32)
    return batched(lambda batch: _scores(model, batch), x, batch_size)


def labels(model: keras.Model, images, batch_size: int = 500, check: bool = True) -> np.ndarray:
    """The predicted classes [N] (argmax of `scores`); an empty int array for no images."""
    if not len(images):
        return np.zeros(0, int)
    return scores(model, images, batch_size, check).argmax(axis=1)


def accuracy(model: keras.Model, images, labels_, batch_size: int = 500) -> float:
    """Top-1 accuracy in [0, 1]."""
    return float(np.mean(scores(model, images, batch_size).argmax(axis=1) == np.asarray(labels_)))


def margin(logits, y, mask: float = 1e9):
    """The CW margin max_{j != y} Z_j - Z_y per example (a tensor [B] from logits [B, K] and labels [B]): > 0
    exactly when the example is misclassified. `mask` is what the true class's score loses before the max."""
    onehot = tf.one_hot(y, tf.shape(logits)[-1], dtype=logits.dtype)
    other = tf.reduce_max(logits - onehot * mask, axis=-1)
    return other - tf.reduce_sum(onehot * logits, axis=-1)
