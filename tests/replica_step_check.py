"""Run as a script (it must split the CPU before TensorFlow starts): one training step of DIM's internal-models
stage on one replica and on two (MirroredStrategy over two logical CPUs), from the same weights and batch.
Prints the largest absolute weight difference after the step as JSON."""

import json
import sys

from dim_tf import distribute

distribute.split_cpu(2)

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from dim_tf import registry  # noqa: E402
from dim_tf.training import loop, objectives  # noqa: E402


def one_step(strategy, weights, x, y):
    with strategy.scope():
        model = registry.build(registry.TrainConfig(model="dim"))
        model.set_weights(weights)
        optimizer = loop.make_optimizer(1e-3, 10)
        optimizer.build(model.internal.trainable_variables)
    objective = objectives.InternalObjective(model.internal, model.denoiser, 0.0, 9.0, 1)
    step = loop.make_train_step(strategy, model.internal, objective, optimizer, len(x))
    batch = next(iter(strategy.experimental_distribute_dataset(
        tf.data.Dataset.from_tensor_slices((x, y)).batch(len(x)))))
    loss = float(step(*batch).numpy())
    return [w for w in model.get_weights()], loss


def main():
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(16, 28, 28, 1)).astype(np.float32)
    y = rng.integers(0, 10, size=16).astype(np.int32)
    weights = registry.build(registry.TrainConfig(model="dim")).get_weights()
    mirrored = distribute.strategy_from_flag("mirrored")
    one, loss_one = one_step(distribute.strategy_from_flag("default"), weights, x, y)
    two, loss_two = one_step(mirrored, weights, x, y)
    diff = max(float(np.abs(a - b).max()) for a, b in zip(one, two))
    moved = max(float(np.abs(a - b).max()) for a, b in zip(one, weights))
    json.dump({"replicas": mirrored.num_replicas_in_sync, "max_weight_diff": diff, "max_update": moved,
               "loss_one": loss_one, "loss_two": loss_two}, sys.stdout)


if __name__ == "__main__":
    main()
