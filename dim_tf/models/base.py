"""Shared plumbing for the package's subclassed Keras models."""

from __future__ import annotations

import keras


class BuiltByCalling:
    """Mixin: `build(shape)` runs the model once on zeros so that every weight exists (needed by `.keras` loading)."""

    def build(self, input_shape):
        self.call(keras.ops.zeros((1, *input_shape[1:])))
        self.built = True
