"""Adam whose update is TensorFlow's fused kernel (`ResourceApplyAdam`): one multithreaded pass over the
gradient, both moments and the weights, where Keras's Adam runs seven element-wise ops per variable, each a pass
over memory of its own. Same rule (bias-corrected step lr * sqrt(1 - beta2^t) / (1 - beta1^t), epsilon added to
sqrt(v)), same variables (checkpoints of either load in the other).

Why: on this 2-core machine Keras's Adam took 41.5 ms per update of the internal models' 6.1M weights, half of a
whole training step; the fused kernel takes 12.4 ms (docs/robust-training.md, "Training speed")."""

from __future__ import annotations

import keras
import tensorflow as tf


class FusedAdam(keras.optimizers.Adam):
    """`keras.optimizers.Adam` (no amsgrad) with the TensorFlow backend's fused per-variable update."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.amsgrad:
            raise ValueError("FusedAdam has no amsgrad; use keras.optimizers.Adam")

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype
        index = self._get_variable_index(variable)
        step = tf.cast(self.iterations + 1, dtype)
        beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
        tf.raw_ops.ResourceApplyAdam(
            var=variable.handle, m=self._momentums[index].value.handle, v=self._velocities[index].value.handle,
            beta1_power=tf.pow(beta_1, step), beta2_power=tf.pow(beta_2, step), lr=tf.cast(learning_rate, dtype),
            beta1=beta_1, beta2=beta_2, epsilon=tf.cast(self.epsilon, dtype), grad=tf.cast(gradient, dtype))
