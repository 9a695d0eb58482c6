"""DIM: scores P_i(x) = ||F_i(D(x))||_1 / ||D(x)||_1 as logits; biDIM binarizes the input and D's output."""

from __future__ import annotations

import keras
from keras import ops

from dim_tf.models.base import BuiltByCalling
from dim_tf.models.binarize import Binarize
from dim_tf.models.denoiser import Denoiser
from dim_tf.models.internal import InternalModels

# ||D(x)||_1 is floored at one fully lit pixel, so a black image gives finite scores (a digit sums to ~100).
MIN_DENOMINATOR = 1.0


def dim_scores(d, reconstructions):
    """P_i = ||F_i(d)||_1 / max(||d||_1, 1): d [B, 28, 28, 1], reconstructions [B, K, 28, 28, 1] -> [B, K]."""
    num = ops.sum(reconstructions, axis=(2, 3, 4))
    den = ops.maximum(ops.sum(d, axis=(1, 2, 3)), MIN_DENOMINATOR)
    return num / den[:, None]


@keras.saving.register_keras_serializable(package="dim_tf")
class DIM(BuiltByCalling, keras.Model):
    """Denoised internal models. Input [B, 28, 28, 1] float32 in [0, 1]; output [B, K] scores (logits, no softmax).

    `denoiser=None` gives the IM / singleIM ablations (scores use ||x||_1). With `binarize=True` (biDIM) the input
    and the denoiser's output pass through `Binarize(0.5, binarize_gradient)`.
    """

    def __init__(self, internal: InternalModels, denoiser: Denoiser | None = None, binarize: bool = False,
                 binarize_gradient: str = "exact", temperature: float = 0.1, **kwargs):
        super().__init__(**kwargs)
        if isinstance(internal, dict):
            internal = keras.saving.deserialize_keras_object(internal)
        if isinstance(denoiser, dict):
            denoiser = keras.saving.deserialize_keras_object(denoiser)
        self.internal, self.denoiser = internal, denoiser
        self.binarize, self.binarize_gradient, self.temperature = bool(binarize), binarize_gradient, temperature
        self.binarizer = Binarize(0.5, binarize_gradient, temperature) if self.binarize else None

    def denoise(self, x, binarize=None):
        """The internal models' input: D(x) (x itself without a denoiser), binarized as configured, or by
        `binarize` (a callable, e.g. adversarial training's per-example binarization) where given."""
        binarize = binarize or self.binarizer
        if binarize is not None:
            x = binarize(x)
        if self.denoiser is not None:
            x = self.denoiser(x)
            if binarize is not None:
                x = binarize(x)
        return x

    def scores_from(self, d, reconstructions):
        """See `dim_scores`."""
        return dim_scores(d, reconstructions)

    def call(self, x, binarize=None):
        d = self.denoise(x, binarize)
        return self.scores_from(d, self.internal(d))

    def variant(self, binarize: bool, gradient: str = "exact", temperature: float = 0.1) -> "DIM":
        """The same trained networks (shared weights) with or without the two binarizations."""
        return DIM(self.internal, self.denoiser, binarize, gradient, temperature)

    def get_config(self):
        return {**super().get_config(), "internal": keras.saving.serialize_keras_object(self.internal),
                "denoiser": keras.saving.serialize_keras_object(self.denoiser) if self.denoiser else None,
                "binarize": self.binarize, "binarize_gradient": self.binarize_gradient,
                "temperature": self.temperature}
