"""The denoiser D: a small convolutional autoencoder, NHWC float32 in [0, 1] -> same shape, in [0, 1]."""

from __future__ import annotations

import keras

from dim_tf.models.base import BuiltByCalling


@keras.saving.register_keras_serializable(package="dim_tf")
class Denoiser(BuiltByCalling, keras.Model):
    """Conv(f1, s2) -> Conv(f2, s2) [7x7 bottleneck] -> ConvT(f1, s2) -> ConvT(1, s2, sigmoid).

    Trained on clean images with added noise (see `dim_tf.training.stages`): L = ||x - D(x + n)||^2.
    """

    def __init__(self, filters: tuple[int, int] = (32, 64), activation: str = "relu", **kwargs):
        super().__init__(**kwargs)
        self.filters = tuple(int(f) for f in filters)
        self.activation = activation
        f1, f2 = self.filters
        conv = dict(kernel_size=3, strides=2, padding="same")
        self.encoder = [keras.layers.Conv2D(f1, activation=activation, **conv),
                        keras.layers.Conv2D(f2, activation=activation, **conv)]
        self.decoder = [keras.layers.Conv2DTranspose(f1, activation=activation, **conv),
                        keras.layers.Conv2DTranspose(1, activation="sigmoid", **conv)]

    def call(self, x):
        for layer in self.encoder + self.decoder:
            x = layer(x)
        return x

    def get_config(self):
        return {**super().get_config(), "filters": list(self.filters), "activation": self.activation}
