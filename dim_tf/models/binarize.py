"""The 0.5-threshold binarization used by biDIM and biCNN, with a switchable backward pass."""

from __future__ import annotations

import keras
import tensorflow as tf

GRADIENTS = ("exact", "straight_through", "sigmoid")


@keras.saving.register_keras_serializable(package="dim_tf")
class Binarize(keras.layers.Layer):
    """Forward: 1.0 where x >= threshold, else 0.0 (any shape, float32).

    Backward, by `gradient`:
      "exact"            the true derivative: none (zero almost everywhere); attacks see no signal.
      "straight_through" identity (BPDA).
      "sigmoid"          derivative of sigmoid((x - threshold) / temperature) (BPDA with a smooth surrogate).
    The forward value is the exact threshold in every mode.
    """

    def __init__(self, threshold: float = 0.5, gradient: str = "exact", temperature: float = 0.1, **kwargs):
        super().__init__(**kwargs)
        if gradient not in GRADIENTS:
            raise ValueError(f"unknown binarization gradient {gradient!r}; choose one of {GRADIENTS}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.threshold = float(threshold)
        self.gradient = gradient
        self.temperature = float(temperature)

    def call(self, x):
        hard = tf.where(x >= self.threshold, tf.ones_like(x), tf.zeros_like(x))
        if self.gradient == "exact":
            return hard
        if self.gradient == "straight_through":
            surrogate = x
        else:
            surrogate = tf.sigmoid((x - self.threshold) / self.temperature)
        return surrogate + tf.stop_gradient(hard - surrogate)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "threshold": self.threshold, "gradient": self.gradient,
                "temperature": self.temperature}
