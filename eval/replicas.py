"""Attack batches spread over a strategy's local replicas: `split_model(model, strategy)` for `benchmark`.

`SplitOverReplicas(model, devices)(x)` cuts the batch x [B, ...] into near-equal contiguous slices, one per device
(fewer when B is smaller than the number of devices), runs `model` on each slice, forward and backward pass on
its device, inside one `tf.function`, so the slices run concurrently, and concatenates the logits in order.
Gradients flow through it (a `tf.GradientTape` outside, foolbox's and CleverHans' tapes); a missing (None) input
gradient stays None, so gradient masking is still flagged. A model loaded under a MirroredStrategy reads, on
each device, its own copy of the weights (a MirroredVariable picks the copy on the current device).
"""

from __future__ import annotations

import tensorflow as tf


def replica_devices(strategy: tf.distribute.Strategy) -> list[str]:
    """The devices of `strategy`'s replicas on this machine, e.g. ['/job:localhost/replica:0/task:0/device:CPU:0',
    ...]; [] when it has a single replica in all (the default strategy has no device list)."""
    return list(strategy.extended.worker_devices) if strategy.num_replicas_in_sync > 1 else []


def slice_sizes(batch, parts: int):
    """Sizes of `parts` near-equal contiguous slices of `batch` rows (a scalar int32 tensor or an int): the first
    batch % parts slices hold one row more. [parts] int32."""
    batch = tf.cast(batch, tf.int32)
    return batch // parts + tf.cast(tf.range(parts) < batch % parts, tf.int32)


def on_device(model, x, device: str):
    """model(x) with its forward and backward pass on `device` (a plain `tf.device` block would leave the backward
    pass of a `tf.function` on the default device). Gradients flow to x and to the variables read."""

    @tf.custom_gradient
    def run(x_):
        # persistent: an outer persistent tape may ask for this gradient more than once
        with tf.device(device), tf.GradientTape(persistent=True) as tape:
            tape.watch(x_)
            # An empty slice (a batch smaller than the replicas, traced with an unknown batch size) gets one zero
            # row, dropped again: oneDNN's ReluGrad rejects zero-row convolution gradients (seen on TF 2.21).
            rows = tf.shape(x_)[0]
            padded = tf.pad(x_, [[0, tf.maximum(1 - rows, 0)], [0, 0], [0, 0], [0, 0]])
            logits = tf.convert_to_tensor(model(padded))[:rows]

        def grad(dy, variables=()):
            with tf.device(device):
                grads = tape.gradient(logits, [x_, *variables], output_gradients=dy)
            return grads[0], grads[1:]

        return logits, grad

    return run(x)


class SplitOverReplicas:
    """`model` (x [B, 28, 28, 1] float32 in [0, 1] -> [B, 10] logits) with each batch split over `devices`:
    same shapes and values as `model(x)`, differentiable. A batch of B rows uses min(B, len(devices)) slices, so no
    device gets an empty one (when B is unknown, as inside a caller's `tf.function` traced with a None batch, all
    devices are used and the model must accept an empty slice)."""

    def __init__(self, model, devices: list[str]):
        if not devices:
            raise ValueError("SplitOverReplicas needs at least one device")
        self.model, self.devices = model, list(devices)
        self._functions = {}  # number of slices -> tf.function over a batch of any size

    def slices(self, x) -> list:
        """The model's logits on each slice of x, each computed on its own device: a list of [b_i, 10] tensors."""
        x = tf.convert_to_tensor(x, tf.float32)
        parts = len(self.devices) if x.shape[0] is None else max(1, min(len(self.devices), x.shape[0]))
        if parts not in self._functions:
            self._functions[parts] = tf.function(lambda batch: self._run(batch, parts), reduce_retracing=True)
        return self._functions[parts](x)

    def _run(self, x, parts: int) -> list:
        sizes = slice_sizes(tf.shape(x)[0], parts)
        return [on_device(self.model, part, device)
                for device, part in zip(self.devices, tf.split(x, sizes, num=parts))]

    def __call__(self, x):
        return tf.concat(self.slices(x), axis=0)


def split_model(model, strategy: tf.distribute.Strategy | None = None):
    """`model` itself when `strategy` (default: the current one) has a single replica on this machine, else
    `SplitOverReplicas` over its local replicas' devices."""
    devices = replica_devices(strategy or tf.distribute.get_strategy())
    return SplitOverReplicas(model, devices) if len(devices) > 1 else model
