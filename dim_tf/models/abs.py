"""ABS, analysis by synthesis (Schott et al. 2019): ten class-conditional VAEs; inference fits each class's latent
to the input, and the logits are the classes' negative ELBOs.

Input [B, 28, 28, 1] float32 in [0, 1]; output [B, 10] logits = -logit_scale * ELBO_k(x), with the per-pixel ELBO

    ELBO_k(x) = min_z (||x - G_k(z)||^2 + beta * ||z||^2 / 2) / 784

(the KL term of a unit-variance posterior at z, as the original's inference), each class's ELBO multiplied by its
`class_scales` entry (the original's class-specific fine-scaling, fitted discriminatively on held-out images by
`dim_tf.training.calibrate` when training asks for it; all 1 otherwise, the default). The minimum is approximated as in
the original: the best of `num_samples` prior samples per class (decoded once per set of weights and cached),
then `steps` Adam steps (learning rate 0.05) on all B x 10 latents at once, each latent kept inside a sphere of
radius `radius`. The original's forward pass returns -ELBO and its class probabilities are softmax(440 * -ELBO):
logit_scale 440 makes softmax(logits) those probabilities (without its extra constant "reject" logit).

Gradient: differentiating through `steps` Adam steps is expensive and not what the classifier's value means. The
logits are evaluated at the optimised latents z* with `tf.stop_gradient(z*)`, so d logits / dx is the partial
derivative dL(x, z)/dx at fixed z*. By the envelope theorem this is the gradient of min_z L(x, z) wherever the
minimiser moves smoothly with x (it is exact up to the optimiser's residual dL/dz at z*, and breaks only where
the winning prior sample switches, a kink of the minimum). One backward pass costs one decode.
"""

from __future__ import annotations

import collections
import typing

import keras
import numpy as np
import tensorflow as tf
from tensorflow.python.eager import record

IMAGE_SHAPE = (28, 28, 1)
PIXELS = 28 * 28
DISMISS_FRACTION = 0.1  # draw num_samples / 0.9 prior samples and keep the num_samples most likely (original)
ADAM_BETAS, ADAM_EPSILON = (0.9, 0.999), 1e-8  # PyTorch's Adam defaults, as the original's inference
DECODE_CHUNK = 2000


def _glorot(fan_in: int, fan_out: int) -> keras.initializers.Initializer:
    limit = float(np.sqrt(6.0 / (fan_in + fan_out)))
    return keras.initializers.RandomUniform(-limit, limit)


@keras.saving.register_keras_serializable(package="dim_tf")
class ClassWiseConv(keras.layers.Layer):
    """K independent convolutions (or transposed convolutions), VALID padding, weights stacked over a class axis:
    a list of K inputs [n_k, H, W, in_channels] -> a list of K outputs (the n_k may differ)."""

    def __init__(self, num_classes: int, in_channels: int, filters: int, kernel_size: int, strides: int = 1,
                 transpose: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.num_classes, self.in_channels, self.filters = int(num_classes), int(in_channels), int(filters)
        self.kernel_size, self.strides, self.transpose = int(kernel_size), int(strides), bool(transpose)
        k = self.kernel_size
        channels = (self.filters, self.in_channels) if self.transpose else (self.in_channels, self.filters)
        self.kernel = self.add_weight(shape=(self.num_classes, k, k, *channels), name="kernel",
                                      initializer=_glorot(k * k * self.in_channels, k * k * self.filters))
        self.bias = self.add_weight(shape=(self.num_classes, self.filters), name="bias", initializer="zeros")

    def call(self, xs):
        out = []
        for x, kernel, bias in zip(xs, tf.unstack(self.kernel), tf.unstack(self.bias)):
            if self.transpose:
                size = [(d - 1) * self.strides + self.kernel_size for d in x.shape[1:3]]
                y = tf.nn.conv2d_transpose(x, kernel, [tf.shape(x)[0], *size, self.filters], self.strides, "VALID")
            else:
                y = tf.nn.conv2d(x, kernel, self.strides, "VALID")
            out.append(tf.nn.bias_add(y, bias))
        return out

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "in_channels": self.in_channels,
                "filters": self.filters, "kernel_size": self.kernel_size, "strides": self.strides,
                "transpose": self.transpose}


@keras.saving.register_keras_serializable(package="dim_tf")
class ClassWiseBatchNorm(keras.layers.Layer):
    """K independent batch normalisations (PyTorch's momentum 0.1 and epsilon 1e-5, as the original) over lists of
    K inputs [n_k, H, W, channels]; in training each n_k must be >= 1."""

    def __init__(self, num_classes: int, channels: int, momentum: float = 0.1, epsilon: float = 1e-5, **kwargs):
        super().__init__(**kwargs)
        self.num_classes, self.channels = int(num_classes), int(channels)
        self.momentum, self.epsilon = float(momentum), float(epsilon)
        shape = (self.num_classes, self.channels)
        self.gamma = self.add_weight(shape=shape, name="gamma", initializer="ones")
        self.beta = self.add_weight(shape=shape, name="beta", initializer="zeros")
        self.moving_mean = self.add_weight(shape=shape, name="moving_mean", initializer="zeros", trainable=False)
        self.moving_variance = self.add_weight(shape=shape, name="moving_variance", initializer="ones",
                                               trainable=False)

    def call(self, xs, training: bool = False):
        params = zip(xs, tf.unstack(self.gamma), tf.unstack(self.beta))
        if not training:
            return [tf.compat.v1.nn.fused_batch_norm(x, gamma, beta, mean, variance, self.epsilon, is_training=False)[0]
                    for (x, gamma, beta), mean, variance in zip(params, tf.unstack(self.moving_mean),
                                                                 tf.unstack(self.moving_variance))]
        # One fused op per class; its batch variance (for the moving average) is unbiased, as PyTorch's.
        results = [tf.compat.v1.nn.fused_batch_norm(x, gamma, beta, epsilon=self.epsilon, is_training=True)
                   for x, gamma, beta in params]
        means, variances = tf.stack([r[1] for r in results]), tf.stack([r[2] for r in results])
        self.moving_mean.assign((1 - self.momentum) * self.moving_mean + self.momentum * means)
        self.moving_variance.assign((1 - self.momentum) * self.moving_variance + self.momentum * variances)
        return [r[0] for r in results]

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "channels": self.channels,
                "momentum": self.momentum, "epsilon": self.epsilon}


def _networks(num_classes: int, latent_dim: int) -> tuple[list, list]:
    """The original architecture for K classes, as (encoder, decoder) layer lists (BN is followed by ELU).

    Encoder: Conv 5x5/32 -> Conv 4x4/32/s2 -> Conv 3x3/64/s2 (BN + ELU after each) -> Conv 5x5/(2 * latent_dim)
    on the 1x1 map: mean and log variance. Decoder: ConvT 4x4/32 -> ConvT 5x5/16/s2 -> ConvT 5x5/16/s2 (BN + ELU
    after each) -> ConvT 4x4/1 + sigmoid, from a 1x1 map of latents to 28x28x1.
    """
    k = num_classes
    encoder, channels = [], 1
    for filters, size, stride in ((32, 5, 1), (32, 4, 2), (64, 3, 2)):
        encoder += [ClassWiseConv(k, channels, filters, size, stride), ClassWiseBatchNorm(k, filters)]
        channels = filters
    encoder.append(ClassWiseConv(k, channels, 2 * latent_dim, 5))
    decoder, channels = [], latent_dim
    for filters, size, stride in ((32, 4, 1), (16, 5, 2), (16, 5, 2)):
        decoder += [ClassWiseConv(k, channels, filters, size, stride, transpose=True),
                    ClassWiseBatchNorm(k, filters)]
        channels = filters
    decoder.append(ClassWiseConv(k, channels, 1, 4, transpose=True))
    return encoder, decoder


def _run(layers: list, hs: list, training: bool) -> list:
    for layer in layers:
        if isinstance(layer, ClassWiseBatchNorm):
            hs = [tf.nn.elu(h) for h in layer(hs, training=training)]
        else:
            hs = layer(hs)
    return hs


class Prior(typing.NamedTuple):
    """The decoded prior samples for one set of weights: latents [N, L]; per class k, images[k] [N, 784] =
    G_k(latents) and offsets[k] [N] = ||images[k]||^2 + beta ||latents||^2 / 2."""

    latents: tf.Tensor
    images: tuple
    offsets: tuple


_PRIORS: collections.OrderedDict = collections.OrderedDict()  # cache key -> Prior, least recently used first
MAX_CACHED_PRIORS = 2  # 250 MB each at N = 8000


def prior_samples(num_samples: int, latent_dim: int, seed: int) -> np.ndarray:
    """[num_samples, latent_dim] float32: the most likely num_samples of num_samples / 0.9 draws from N(0, I)."""
    draws = np.random.default_rng(seed).standard_normal((int(num_samples / (1 - DISMISS_FRACTION)), latent_dim))
    keep = np.argsort(np.sum(draws ** 2, axis=1), kind="stable")[:num_samples]
    return draws[keep].astype(np.float32)


@keras.saving.register_keras_serializable(package="dim_tf")
class ABS(keras.Model):
    """Ten class-conditional VAEs with optimisation-based inference; see the module docstring.

    The ten VAEs have separate weights, stacked over a class axis (one variable per layer and kind, as
    `InternalModels`); each layer runs the ten convolutions one after the other in the same graph (measured on 2
    CPU cores: grouped convolutions, the vectorised alternative, have no CPU gradient outside XLA, and under XLA
    were 4x slower to decode and 9x slower to train). `encode`/`decode` map lists of K tensors (one per class,
    sizes may differ) and serve training (`dim_tf.training.objectives.ABSObjective`).

    `num_samples` (N) prior samples per class and `steps` (K) Adam steps set the inference cost; `configured`
    gives the same trained VAEs with other settings. `encoder_logits` is the cheap amortised classifier used to
    monitor training.
    """

    def __init__(self, num_classes: int = 10, latent_dim: int = 8, num_samples: int = 8000, steps: int = 50,
                 learning_rate: float = 0.05, beta: float = 1.0, radius: float = 5.0, logit_scale: float = 440.0,
                 seed: int = 0, class_scales: typing.Sequence[float] | None = None,
                 networks: tuple[list, list] | None = None, **kwargs):
        super().__init__(**kwargs)
        if num_samples < 1 or steps < 0:
            raise ValueError(f"ABS needs num_samples >= 1 and steps >= 0, got {num_samples} and {steps}")
        self.num_classes, self.latent_dim = int(num_classes), int(latent_dim)
        self.num_samples, self.steps = int(num_samples), int(steps)
        self.learning_rate, self.beta, self.radius = float(learning_rate), float(beta), float(radius)
        self.logit_scale, self.seed = float(logit_scale), int(seed)
        self.class_scales = tuple(float(v) for v in (class_scales or (1.0,) * self.num_classes))
        if len(self.class_scales) != self.num_classes or min(self.class_scales) <= 0:
            raise ValueError(f"ABS needs {self.num_classes} positive class_scales, got {self.class_scales}")
        self.encoder, self.decoder = networks or _networks(self.num_classes, self.latent_dim)
        spec = tf.TensorSpec  # one trace per model, whatever the batch size
        self._search = tf.function(self._find_latents, input_signature=(
            spec([None, *IMAGE_SHAPE]), Prior(spec([self.num_samples, self.latent_dim]),
                                              (spec([self.num_samples, PIXELS]),) * self.num_classes,
                                              (spec([self.num_samples]),) * self.num_classes)))

    def build(self, input_shape):
        self.built = True  # the weights exist from the constructor on

    def configured(self, num_samples: int | None = None, steps: int | None = None) -> "ABS":
        """The same trained VAEs (shared weights) with other inference settings (None keeps this model's)."""
        settings = self.settings()
        settings["num_samples"] = settings["num_samples"] if num_samples is None else num_samples
        settings["steps"] = settings["steps"] if steps is None else steps
        model = ABS(**settings, networks=(self.encoder, self.decoder))
        model.built = True
        return model

    def encode(self, xs: list, training: bool = False) -> tuple[list, list]:
        """K lists of images [n_k, 28, 28, 1] -> (means, log variances), K tensors [n_k, latent_dim] each."""
        hs = [tf.reshape(h, [-1, 2 * self.latent_dim]) for h in _run(self.encoder, xs, training)]
        return [h[:, :self.latent_dim] for h in hs], [h[:, self.latent_dim:] for h in hs]

    def decode(self, zs: list, training: bool = False) -> list:
        """K latents [n_k, latent_dim] -> K images [n_k, 28, 28, 1] in [0, 1] (G_k(z_k))."""
        hs = _run(self.decoder, [tf.reshape(z, [-1, 1, 1, self.latent_dim]) for z in zs], training)
        return [tf.sigmoid(h) for h in hs]

    def decode_all(self, z):
        """z [B, K, L] -> reconstructions [B, K, 28, 28, 1]: G_k(z[:, k]) for every class k."""
        return tf.stack(self.decode([z[:, k] for k in range(self.num_classes)]), axis=1)

    def elbo(self, x, z):
        """Per-pixel negative ELBO [B, K] of images x [B, 28, 28, 1] at latents z [B, K, L] (see module doc)."""
        recon = tf.reduce_sum(tf.square(self.decode_all(z) - x[:, None]), axis=(2, 3, 4))
        return (recon + self.beta * 0.5 * tf.reduce_sum(tf.square(z), axis=-1)) / PIXELS

    def _cache_key(self) -> tuple:
        """What the decoded prior depends on: the settings and (a fingerprint of) the VAEs' weights."""
        weights = tuple(float(np.sum(w)) for w in self.get_weights())
        return self.num_samples, self.latent_dim, self.seed, self.beta, weights

    def prior(self) -> Prior:
        """The decoded prior samples for the current weights: computed eagerly (outside any graph or gradient
        tape) on first use, shared by every ABS with the same settings and weights (a loaded copy, `configured`
        variants with the same num_samples), recomputed after the weights change. A traced function keeps the
        prior it was traced with: re-trace after training."""
        with tf.init_scope(), record.stop_recording():
            key = self._cache_key()
            if key in _PRIORS:
                _PRIORS.move_to_end(key)
                return _PRIORS[key]
            while len(_PRIORS) >= MAX_CACHED_PRIORS:
                _PRIORS.popitem(last=False)
            latents = tf.constant(prior_samples(self.num_samples, self.latent_dim, self.seed))
            decode = tf.function(lambda z: self.decode([z] * self.num_classes))  # 1.5x faster than eager
            chunks = [decode(latents[i:i + DECODE_CHUNK]) for i in range(0, self.num_samples, DECODE_CHUNK)]
            images = [tf.reshape(tf.concat(parts, axis=0), [-1, PIXELS]) for parts in zip(*chunks)]
            penalty = self.beta * 0.5 * tf.reduce_sum(tf.square(latents), axis=-1)
            offsets = tuple(tf.reduce_sum(tf.square(g), axis=-1) + penalty for g in images)
            _PRIORS[key] = Prior(latents, tuple(images), offsets)
            return _PRIORS[key]

    @staticmethod
    def sample_scores(x, prior: Prior) -> list:
        """Per class k, [B, N]: 784 * ELBO_k of x at every prior sample, minus ||x||^2 (the same for all)."""
        flat = tf.reshape(x, [-1, PIXELS])
        return [offsets[None] - 2.0 * tf.matmul(flat, images, transpose_b=True)
                for images, offsets in zip(prior.images, prior.offsets)]

    def initial_latents(self, x, prior: Prior):
        """[B, K, L]: per class, the prior sample with the smallest ELBO for x (ties: the first)."""
        best = [tf.argmin(scores, axis=1) for scores in self.sample_scores(x, prior)]
        return tf.gather(prior.latents, tf.stack(best, axis=1))

    def optimise_latents(self, x, z):
        """`steps` Adam steps on the summed ELBO over latents z [B, K, L] (each (image, class) independent: Adam
        is per coordinate), projecting onto the sphere of radius `radius` after each; returns [B, K, L]."""
        b1, b2 = ADAM_BETAS

        def body(t, z, m, v):
            with tf.GradientTape() as tape:
                tape.watch(z)
                loss = tf.reduce_sum(self.elbo(x, z))
            g = tape.gradient(loss, z)
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * tf.square(g)
            t1 = tf.cast(t + 1, tf.float32)
            z = z - self.learning_rate * (m / (1 - b1 ** t1)) / (tf.sqrt(v / (1 - b2 ** t1)) + ADAM_EPSILON)
            norm = tf.norm(z, axis=-1, keepdims=True)
            return t + 1, z * tf.minimum(1.0, self.radius / tf.maximum(norm, 1e-12)), m, v

        _, z, _, _ = tf.while_loop(lambda t, *_: t < self.steps, body,
                                   (tf.constant(0), z, tf.zeros_like(z), tf.zeros_like(z)))
        return z

    def _find_latents(self, x, prior: Prior):
        return self.optimise_latents(x, self.initial_latents(x, prior))

    def latents(self, x):
        """The optimised latents z* [B, K, L] for images x [B, 28, 28, 1] (no gradient flows through them)."""
        x = tf.convert_to_tensor(x, tf.float32)
        search = self._search.get_concrete_function()  # traced once, outside `stop_recording` (it needs a tape)
        with record.stop_recording():  # else a tape would keep the optimisation's intermediates for a backward pass
            return tf.stop_gradient(search(x, self.prior()))

    def call(self, x):
        x = tf.convert_to_tensor(x, tf.float32)
        if self.steps == 0:  # z* is the best prior sample, whose image is cached: no decoding (as the original)
            scores = tf.stack([tf.reduce_min(s, axis=1) for s in self.sample_scores(x, self.prior())], axis=1)
            elbo = (scores + tf.reduce_sum(tf.square(x), axis=(1, 2, 3))[:, None]) / PIXELS
        else:
            elbo = self.elbo(x, self.latents(x))
        return self.logits(elbo)

    def logits(self, elbo):
        """Per-pixel ELBOs [B, K] -> logits [B, K] = -logit_scale * class_scales * ELBO."""
        return -self.logit_scale * tf.constant(self.class_scales, tf.float32) * elbo

    def encoder_logits(self, x):
        """Amortised logits [B, K]: each VAE's ELBO at its encoder's mean (cheap; monitors training only)."""
        z = tf.stack(self.encode([x] * self.num_classes)[0], axis=1)
        return self.logits(self.elbo(x, z))

    def settings(self) -> dict:
        """The constructor's arguments (without the networks)."""
        return {"num_classes": self.num_classes, "latent_dim": self.latent_dim, "num_samples": self.num_samples,
                "steps": self.steps, "learning_rate": self.learning_rate, "beta": self.beta, "radius": self.radius,
                "logit_scale": self.logit_scale, "seed": self.seed, "class_scales": list(self.class_scales)}

    def get_config(self):
        return {**super().get_config(), **self.settings()}
