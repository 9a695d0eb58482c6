"""The internal models F_0..F_{K-1}: K autoencoders with 10-d latents, computed as one vectorised model.

Input [B, 28, 28, 1] float32 in [0, 1]; output reconstructions [B, K, 28, 28, 1] in [0, 1]. F_i is trained to
reconstruct images of class i and to output black for every other class.
"""

from __future__ import annotations

import keras
from keras import ops

from dim_tf.models.base import BuiltByCalling


@keras.saving.register_keras_serializable(package="dim_tf")
class ClassWiseDense(keras.layers.Layer):
    """K independent dense layers: [B, K, n_in] (or a shared [B, n_in]) -> [B, K, units]."""

    def __init__(self, num_classes: int, units: int, activation=None, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)
        self.units = int(units)
        self.activation = keras.activations.get(activation)

    def build(self, input_shape):
        n_in = input_shape[-1]
        self.kernel = self.add_weight(name="kernel", shape=(self.num_classes, n_in, self.units),
                                      initializer="glorot_uniform")
        self.bias = self.add_weight(name="bias", shape=(self.num_classes, self.units), initializer="zeros")

    def call(self, x):
        if len(x.shape) == 2:  # one input shared by all K layers
            y = ops.einsum("bi,kio->bko", x, self.kernel)
        else:
            y = ops.einsum("bki,kio->bko", x, self.kernel)
        return self.activation(y + self.bias)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_classes, self.units)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "units": self.units,
                "activation": keras.activations.serialize(self.activation)}


@keras.saving.register_keras_serializable(package="dim_tf")
class InternalModels(BuiltByCalling, keras.Model):
    """K autoencoders. Each: Conv5x5(stem_filters, s2) -> dense(hidden) -> latent(latent_dim) -> dense(hidden)
    -> dense(784, sigmoid).

    `shared_encoder=False` (IM, DIM): K separate encoders; the K conv stems read the same input, so they run as
    one Conv2D with K * stem_filters filters (still K separate sets of weights).
    `shared_encoder=True` (singleIM): one encoder and latent shared by K separate decoders.
    """

    def __init__(self, num_classes: int = 10, stem_filters: int = 8, hidden: int = 256, latent_dim: int = 10,
                 shared_encoder: bool = False, image_shape=(28, 28, 1), **kwargs):
        super().__init__(**kwargs)
        self.num_classes, self.stem_filters, self.hidden = int(num_classes), int(stem_filters), int(hidden)
        self.latent_dim, self.shared_encoder = int(latent_dim), bool(shared_encoder)
        self.image_shape = tuple(int(s) for s in image_shape)
        k = 1 if self.shared_encoder else self.num_classes
        self.stem = keras.layers.Conv2D(k * self.stem_filters, 5, strides=2, padding="same", activation="relu")
        if self.shared_encoder:
            self.enc_hidden = keras.layers.Dense(self.hidden, activation="relu")
            self.enc_latent = keras.layers.Dense(self.latent_dim)
        else:
            self.enc_hidden = ClassWiseDense(k, self.hidden, activation="relu")
            self.enc_latent = ClassWiseDense(k, self.latent_dim)
        pixels = self.image_shape[0] * self.image_shape[1] * self.image_shape[2]
        self.dec_hidden = ClassWiseDense(self.num_classes, self.hidden, activation="relu")
        self.dec_out = ClassWiseDense(self.num_classes, pixels, activation="sigmoid")

    def encode(self, x):
        """Latents: [B, K, latent_dim] ([B, latent_dim] with a shared encoder)."""
        h = self.stem(x)
        if self.shared_encoder:
            h = ops.reshape(h, (-1, h.shape[1] * h.shape[2] * h.shape[3]))
        else:
            h = ops.reshape(h, (-1, h.shape[1] * h.shape[2], self.num_classes, self.stem_filters))
            h = ops.transpose(h, (0, 2, 1, 3))
            h = ops.reshape(h, (-1, self.num_classes, h.shape[2] * self.stem_filters))
        return self.enc_latent(self.enc_hidden(h))

    def decode(self, z):
        """Latents -> reconstructions [B, K, H, W, C]."""
        out = self.dec_out(self.dec_hidden(z))
        return ops.reshape(out, (-1, self.num_classes, *self.image_shape))

    def call(self, x):
        return self.decode(self.encode(x))

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "stem_filters": self.stem_filters,
                "hidden": self.hidden, "latent_dim": self.latent_dim, "shared_encoder": self.shared_encoder,
                "image_shape": list(self.image_shape)}
