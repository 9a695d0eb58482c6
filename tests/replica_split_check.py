"""Run as a script (it must split the CPU before TensorFlow starts): `SplitOverReplicas` over two logical CPUs
against the plain model (logits, input gradients, where the slices run), and `run_attack` under MirroredStrategy
against the default strategy. Argument: the MNIST folder. Prints the figures as JSON."""

import json
import sys

from dim_tf import distribute

distribute.split_cpu(2)

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from dim_tf import data  # noqa: E402
from dim_tf.eval.replicas import SplitOverReplicas, replica_devices, split_model  # noqa: E402
from dim_tf.eval.attack_run import run_attack  # noqa: E402


def tiny_cnn():
    return keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Conv2D(4, 3, strides=2, activation="relu"),
                             keras.layers.Flatten(), keras.layers.Dense(10)])


def loss_and_grad(model, x, y):
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=model(x)))
    return tape.gradient(loss, x)


def max_diff(a, b) -> float:
    return float(np.abs(np.asarray(a) - np.asarray(b)).max())


class DeviceLog:
    """`model`, recording (when traced) the device its forward output and its input gradient are placed on."""

    def __init__(self, model):
        self.model, self.forward, self.backward = model, [], []

    def __call__(self, x):
        @tf.custom_gradient
        def mark(t):
            def grad(dy):
                dx = tf.identity(dy)
                self.backward.append(dx.device)
                return dx

            return tf.identity(t), grad

        out = self.model(mark(x))
        self.forward.append(out.device)
        return out


def compare(plain, split, x, y) -> dict:
    """Largest differences of logits and input gradients (eagerly, and inside a tf.function traced with a None
    batch, as the attacks call the model) between `split` and `plain` on x."""
    x, y = tf.constant(x), tf.constant(y)
    nested = tf.function(lambda x_, y_: (split(x_), loss_and_grad(split, x_, y_)), input_signature=[
        tf.TensorSpec([None, 28, 28, 1], tf.float32), tf.TensorSpec([None], tf.int32)])
    nested_logits, nested_grad = nested(x, y)
    grad = loss_and_grad(split, x, y)
    return {"logits": max_diff(split(x), plain(x)), "grad": max_diff(grad, loss_and_grad(plain, x, y)),
            "nested_logits": max_diff(nested_logits, plain(x)),
            "nested_grad": max_diff(nested_grad, loss_and_grad(plain, x, y)),
            "grad_scale": float(np.abs(grad).max())}


def weight_grad_diff(plain, split, x, y) -> float:
    def grads(model):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=model(x)))
        return tape.gradient(loss, plain.trainable_variables)

    return max(max_diff(a, b) for a, b in zip(grads(split), grads(plain)))


def main():
    mnist = data.load("mnist", sys.argv[1])
    keras.utils.set_random_seed(0)
    plain = tiny_cnn()
    plain.compile(keras.optimizers.Adam(3e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    plain.fit(mnist.train.images[:2000], mnist.train.labels[:2000], batch_size=50, epochs=1, verbose=0)
    mirrored = distribute.strategy_from_flag("mirrored")
    with mirrored.scope():  # as the CLI loads a model: its weights become MirroredVariables
        replicated = tiny_cnn()
        replicated.set_weights(plain.get_weights())
    devices = replica_devices(mirrored)
    split = split_model(replicated, mirrored)
    x, y = mnist.test.images[:7], mnist.test.labels[:7].astype(np.int32)
    log = DeviceLog(plain)
    loss_and_grad(SplitOverReplicas(log, devices), tf.constant(x), tf.constant(y))
    out = {"devices": devices, "split_type": type(split).__name__,
           "single_replica_unchanged": split_model(plain, tf.distribute.get_strategy()) is plain,
           "batch7": compare(plain, split, x, y), "batch1": compare(plain, split, x[:1], y[:1]),
           "weight_grad": weight_grad_diff(plain, SplitOverReplicas(plain, devices), tf.constant(x), tf.constant(y)),
           "slice_rows": {str(b): [int(t.shape[0]) for t in split.slices(x[:b])] for b in (7, 2, 1)},
           "forward_devices": log.forward, "backward_devices": log.backward}

    images, labels = mnist.test.images[:16], mnist.test.labels[:16]
    runs = {}
    for attack, params in (("fgsm", {}), ("pgd", {"steps": 2})):
        for name, model, strategy in (("default", plain, None), ("mirrored", replicated, mirrored)):
            result = run_attack(model, images, labels, attack, "linf", [0.1], batch_size=5, params=params,
                               progress=False, strategy=strategy)
            runs[f"{attack}-{name}"] = {k: result[k] for k in ("clean_correct", "forward_passes", "backward_passes",
                                                               "replicas", "zero_gradient")}
            runs[f"{attack}-{name}"]["success"] = result["results"][0]["success"]
    out["benchmark"] = runs
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
