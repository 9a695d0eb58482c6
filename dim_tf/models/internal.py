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
    """K independent dense layers, class-major: [K, B, n_in] (or one shared [B, n_in]) -> [K, B, units].

    Why class-major: the K products are then one batched matmul with no transposes around it. The [B, K, n]
    layout (an einsum "bki,kio->bko") made TensorFlow transpose every activation and gradient: measured on this
    2-core machine, the internal models' four dense layers took 101.5 ms forward and backward in that layout and
    42.6 ms in this one (batch 128; docs/robust-training.md, "Training speed").
    """

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
            y = ops.einsum("bi,kio->kbo", x, self.kernel)
        else:
            y = ops.matmul(x, self.kernel)
        return self.activation(y + self.bias[:, None, :])

    def compute_output_shape(self, input_shape):
        batch = input_shape[0] if len(input_shape) == 2 else input_shape[1]
        return (self.num_classes, batch, self.units)

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

    def _latents(self, x):
        """Latents, class-major: [K, B, latent_dim] ([B, latent_dim] with a shared encoder)."""
        h = self.stem(x)
        if self.shared_encoder:
            return self.enc_latent(self.enc_hidden(ops.reshape(h, (-1, h.shape[1] * h.shape[2] * h.shape[3]))))
        # [B, H, W, K * f] -> [K, B, H * W * f]: each class's features in the (position, filter) order its
        # kernel rows follow
        h = ops.reshape(h, (-1, h.shape[1] * h.shape[2], self.num_classes, self.stem_filters))
        h = ops.transpose(h, (2, 0, 1, 3))
        return self.enc_latent(self.enc_hidden(ops.reshape(h, (self.num_classes, -1, h.shape[2] * h.shape[3]))))

    def encode(self, x):
        """Latents: [B, K, latent_dim] ([B, latent_dim] with a shared encoder)."""
        z = self._latents(x)
        return z if self.shared_encoder else ops.transpose(z, (1, 0, 2))

    def call(self, x):
        out = self.dec_out(self.dec_hidden(self._latents(x)))  # [K, B, pixels]
        return ops.reshape(ops.transpose(out, (1, 0, 2)), (-1, self.num_classes, *self.image_shape))

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "stem_filters": self.stem_filters,
                "hidden": self.hidden, "latent_dim": self.latent_dim, "shared_encoder": self.shared_encoder,
                "image_shape": list(self.image_shape)}
