"""Baseline classifiers: the ABS authors' CNN, Madry et al.'s network, and a binarized-input wrapper.

All take [B, 28, 28, 1] float32 in [0, 1] and return [B, 10] logits.
"""

from __future__ import annotations

import keras

from dim_tf.models.base import BuiltByCalling
from dim_tf.models.binarize import Binarize


@keras.saving.register_keras_serializable(package="dim_tf")
class CNN(BuiltByCalling, keras.Model):
    """Conv kernels [5, 4, 3, 5], strides [1, 2, 2, 1], channels [20, 70, 256, 10], BN + ELU between."""

    def __init__(self, num_classes: int = 10, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)
        spec = [(20, 5, 1), (70, 4, 2), (256, 3, 2)]
        self.blocks = [(keras.layers.Conv2D(c, k, strides=s), keras.layers.BatchNormalization(),
                        keras.layers.Activation("elu")) for c, k, s in spec]
        self.head = keras.layers.Conv2D(self.num_classes, 5)
        self.flatten = keras.layers.Flatten()

    def call(self, x, training=False):
        for conv, bn, act in self.blocks:
            x = act(bn(conv(x), training=training))
        return self.flatten(self.head(x))

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes}


@keras.saving.register_keras_serializable(package="dim_tf")
class MadryCNN(BuiltByCalling, keras.Model):
    """conv5x5-32, maxpool, conv5x5-64, maxpool, fc1024, fc10 (Madry et al. 2018's MNIST network)."""

    def __init__(self, num_classes: int = 10, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)
        self.body = [keras.layers.Conv2D(32, 5, padding="same", activation="relu"), keras.layers.MaxPooling2D(),
                     keras.layers.Conv2D(64, 5, padding="same", activation="relu"), keras.layers.MaxPooling2D(),
                     keras.layers.Flatten(), keras.layers.Dense(1024, activation="relu"),
                     keras.layers.Dense(self.num_classes)]

    def call(self, x):
        for layer in self.body:
            x = layer(x)
        return x

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes}


@keras.saving.register_keras_serializable(package="dim_tf")
class BinarizedInput(BuiltByCalling, keras.Model):
    """`classifier(Binarize(x))` with the classifier's trained weights shared (biCNN)."""

    def __init__(self, classifier: keras.Model, gradient: str = "exact", temperature: float = 0.1, **kwargs):
        super().__init__(**kwargs)
        if isinstance(classifier, dict):
            classifier = keras.saving.deserialize_keras_object(classifier)
        self.classifier, self.gradient, self.temperature = classifier, gradient, temperature
        self.binarizer = Binarize(0.5, gradient, temperature)

    def call(self, x):
        return self.classifier(self.binarizer(x))

    def get_config(self):
        return {**super().get_config(), "classifier": keras.saving.serialize_keras_object(self.classifier),
                "gradient": self.gradient, "temperature": self.temperature}
