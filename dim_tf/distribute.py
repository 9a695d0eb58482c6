"""`tf.distribute` strategies by name, as the CLIs' `--strategy` flag picks them."""

from __future__ import annotations

import os

import tensorflow as tf

STRATEGIES = ("default", "one_device", "mirrored", "multi_worker")


def split_cpu(num_devices: int) -> None:
    """Splits the CPU into `num_devices` logical devices (MirroredStrategy on CPU). Call before any TF op runs."""
    if num_devices <= 1:
        return
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * num_devices)
    except RuntimeError as e:
        raise RuntimeError(f"cannot split the CPU into {num_devices} devices after TensorFlow started: {e}") from e


def strategy_from_flag(name: str) -> tf.distribute.Strategy:
    """default: no distribution; one_device: the first GPU or the CPU; mirrored: all local devices (GPUs, else
    the logical CPUs from `split_cpu`); multi_worker: MultiWorkerMirroredStrategy configured by TF_CONFIG."""
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "one_device":
        gpus = tf.config.list_logical_devices("GPU")
        return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    if name == "mirrored":
        devices = [d.name for d in tf.config.list_logical_devices("GPU")] or [
            d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices)
    if name == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise ValueError("--strategy multi_worker needs TF_CONFIG (cluster and task) in the environment; "
                             "see README, 'Scaling out: tf.distribute'")
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")

