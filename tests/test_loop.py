"""The training loop's checkpoints hold every weight (BatchNorm statistics included) and are restored."""

import keras
import numpy as np
import tensorflow as tf

from dim_tf import registry
from dim_tf.training.loop import Stage, run_stage
from dim_tf.training.objectives import ClassifierObjective


def _stage(epochs):
    model = registry.build(registry.TrainConfig(model="cnn"))
    return Stage("classifier", model, ClassifierObjective(model), epochs, 1e-3, lambda: {}), model


def test_resume_restores_all_weights(tmp_path, mnist):
    keras.utils.set_random_seed(0)
    strategy = tf.distribute.get_strategy()
    train = mnist.train.take(256)
    stage, trained = _stage(1)
    result = run_stage(stage, strategy, train, 64, 0, str(tmp_path), log=lambda s: None)
    assert result["epochs"] == 1 and np.isfinite(result["loss"])
    stage, fresh = _stage(1)
    logs = []
    again = run_stage(stage, strategy, train, 64, 0, str(tmp_path), log=logs.append)
    assert any("resuming after epoch 1" in line for line in logs)
    assert not any("epoch 1/1" in line for line in logs)  # nothing retrained
    assert again["loss"] == result["loss"]
    assert len(fresh.weights) == len(trained.weights) and any("moving" in w.path for w in fresh.weights)
    for a, b in zip(fresh.weights, trained.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
