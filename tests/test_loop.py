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


def _internal_stage(validation, **settings):
    keras.utils.set_random_seed(0)
    cfg = registry.TrainConfig(model="dim", **settings)
    model = registry.build(cfg)
    return registry.stages(cfg, model, validation)[-1], model


def test_plain_internal_stage_reads_denoised_images_computed_once(tmp_path, mnist):
    """The cached D(x) must give the update that computing D(x) in every step gives (and the adversarial stage,
    which attacks through D, must not read a cache)."""
    strategy, train, validation = tf.distribute.get_strategy(), mnist.train.take(256), mnist.validation.take(64)
    cached, model = _internal_stage(validation)
    assert cached.inputs is not None and cached.objective.preprocess is None
    run_stage(cached, strategy, train, 64, 0, str(tmp_path / "cached"), log=lambda s: None)
    each_step, reference = _internal_stage(validation)
    each_step.objective.preprocess = reference.denoiser
    each_step.inputs = None
    run_stage(each_step, strategy, train, 64, 0, str(tmp_path / "each_step"), log=lambda s: None)
    for a, b in zip(model.internal.weights, reference.internal.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)
    adversarial, _ = _internal_stage(validation, adversarial="pgd", adv_monitor_examples=0)
    assert adversarial.inputs is None
