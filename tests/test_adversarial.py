"""Adversarial training (`--adversarial`): it buys robustness on real MNIST, its attack is real, the collapse
detector stops a stage that loses its robustness, and bad settings are refused before any work."""

import dataclasses
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from dim_tf import model_dir, registry
from dim_tf.train import train
from dim_tf.training import adversarial, loop

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
EPS = 0.1  # small enough for a 2-epoch CNN to learn to resist; the plain CNN keeps ~10-25% at 0.1


def _config(**settings):
    return registry.TrainConfig(model="cnn", train_examples=4000, epochs=2, batch_size=64, adv_eps=EPS,
                                adv_warmup_steps=0, adv_monitor_examples=200, **settings)


def _train(tmp_path, mnist_folder, **settings):
    return train(_config(**settings), str(tmp_path), mnist_folder, tf.distribute.get_strategy(), log=lambda *_: None)


def test_adversarial_training_buys_pgd_robustness(tmp_path, mnist_folder, mnist):
    plain = _train(tmp_path / "plain", mnist_folder)
    robust_config = _config(adversarial="fgsm_rs")
    robust = _train(tmp_path / "fgsm_rs", mnist_folder, adversarial="fgsm_rs")
    accuracy = {}
    for name, folder in (("plain", "plain"), ("robust", "fgsm_rs")):
        model, _ = model_dir.load(str(tmp_path / folder))
        accuracy[name] = adversarial.pgd_accuracy(model, mnist.test.images[:500], mnist.test.labels[:500], EPS, 20)
    # Measured: the FGSM-RS trained CNN 0.3-0.6 above the plain one. Training is deterministic, so a no-op
    # training attack would make the two runs identical.
    assert accuracy["robust"] > accuracy["plain"] + 0.15, accuracy
    assert robust["test_accuracy"]["cnn"] > 0.85, robust["test_accuracy"]
    history = robust["stages"]["classifier"]["history"]
    assert [h["epoch"] for h in history] == [1, 2] and all("val_pgd_accuracy" in h for h in history)
    assert "val_pgd_accuracy" not in plain["stages"]["classifier"]
    assert robust["config"]["adversarial"] == "fgsm_rs" and "collapsed" not in robust["stages"]["classifier"]
    # A finished run refuses to resume with another adversarial setting, before any work.
    with pytest.raises(model_dir.ModelDirError, match="adversarial"):
        model_dir.prepare(str(tmp_path / "fgsm_rs"), dataclasses.replace(robust_config, adversarial="pgd"))


def test_attack_finds_what_it_is_asked_for():
    """The training attack raises the loss it is given and stays in the eps ball: on a linear loss, PGD moves
    every pixel by eps in the sign of the weights; FGSM-RS (step 1.25 eps from a uniform start) moves each pixel
    at least 0.25 eps that way and 0.86 eps on average."""
    w = np.linspace(-1, 1, 784, dtype=np.float32).reshape(28, 28, 1)
    w[np.abs(w) < 1e-3] = 0.5  # no zero weight: its pixel would stay where the random start put it
    x = tf.fill([3, 28, 28, 1], 0.5)
    loss_fn = lambda v, y: tf.reduce_sum(v * w, axis=(1, 2, 3))  # noqa: E731
    for method in ("pgd", "fgsm_rs"):
        attack = adversarial.LinfAttack(method, 0.2, 5, adversarial.default_step_size(method, 0.2, 5))
        moved = (attack(loss_fn, x, tf.zeros([3], tf.int32)).numpy() - 0.5) * np.sign(w)[None]
        assert moved.max() <= 0.2 + 1e-6
        if method == "pgd":
            np.testing.assert_allclose(moved, 0.2, atol=1e-6)
        else:
            assert moved.min() >= 0.05 - 1e-6 and 0.16 < moved.mean() < 0.185, (moved.min(), moved.mean())


def test_collapse_detector_fires_and_keeps_the_epoch_before(tmp_path, mnist):
    """A stage whose robustness probe collapses in epoch 3 stops there, back at epoch 2's weights."""
    import keras

    model = keras.Sequential([keras.layers.Flatten(), keras.layers.Dense(10)])
    model.build((None, 28, 28, 1))
    probe = iter([0.6, 0.7, 0.05, 0.7])
    weights_after = []

    def validate():
        weights_after.append(model.get_weights()[1].copy())
        return {"val_pgd_accuracy": next(probe)}

    def objective(x, y, step):
        return tf.nn.sparse_softmax_cross_entropy_with_logits(y, model(x))

    stage = loop.Stage("classifier", model, objective, 4, 1e-2, validate,
                       adversarial.CollapseCheck(("val_pgd_accuracy",), 0.2))
    split = mnist.train.take(256)
    result = loop.run_stage(stage, tf.distribute.get_strategy(), split, 64, 0, str(tmp_path), log=lambda *_: None)
    assert result["collapsed"] == {"metric": "val_pgd_accuracy", "epoch": 3, "kept_epoch": 2}
    assert result["epochs"] == 2 and result["val_pgd_accuracy"] == 0.7
    assert [h["val_pgd_accuracy"] for h in result["history"]] == [0.6, 0.7, 0.05]
    np.testing.assert_array_equal(model.get_weights()[1], weights_after[1])  # epoch 2's, not epoch 3's
    assert not np.array_equal(weights_after[1], weights_after[2])
    again = loop.run_stage(stage, tf.distribute.get_strategy(), split, 64, 0, str(tmp_path), log=lambda *_: None)
    assert again["collapsed"]["epoch"] == 3 and len(again["history"]) == 3  # a re-run does not train on


def test_collapse_check_on_histories():
    check = adversarial.CollapseCheck(("a", "b"), 0.2)
    assert check.collapsed([{"a": 0.5, "b": 0.5}]) is None
    assert check.collapsed([{"a": 0.5, "b": 0.5}, {"a": 0.45, "b": 0.6}]) is None
    assert check.collapsed([{"a": 0.5, "b": 0.8}, {"a": 0.6, "b": 0.55}]) == "b"


@pytest.mark.parametrize("flags, message", [
    (["--adv_eps", "0"], "--adv_eps must lie in (0, 1]"),
    (["--adv_eps", "1.5"], "--adv_eps must lie in (0, 1]"),
    (["--adversarial", "pgd", "--adv_steps", "0"], "--adv_steps must be >= 1"),
    (["--model", "abs", "--adversarial", "pgd"], "not supported for abs"),
    (["--model", "madry", "--adversarial", "none"], "use --model cnn"),
    (["--model", "dim", "--adv_denoiser_weight", "1"], "it needs --adversarial pgd"),
    (["--model", "im", "--adversarial", "pgd", "--adv_denoiser_weight", "1"], "a model with a denoiser"),
    (["--model", "dim_robust", "--adv_denoiser_weight", "-1"], "--adv_denoiser_weight must be >= 0"),
])
def test_bad_adversarial_settings_are_refused_before_any_work(tmp_path, mnist_folder, flags, message):
    out = subprocess.run([sys.executable, "-m", "dim_tf.train", "--model_dir", str(tmp_path / "run"),
                          "--data_dir", mnist_folder, *flags], capture_output=True, text=True, env=ENV, timeout=120)
    assert out.returncode == 2 and message in out.stderr, out.stderr[-2000:]
    assert len([line for line in out.stderr.splitlines() if line.startswith("error:")]) == 1
    assert not (tmp_path / "run").exists()


def test_preset_fills_what_the_command_line_does_not_give():
    base = {"adv_steps": 40, "epochs": 12}
    cfg = registry.configure("dim_robust", base, given={"epochs"})
    assert cfg.model == "dim" and cfg.preset == "dim_robust" and cfg.attack_method == "pgd"
    assert cfg.adv_steps == registry.PRESETS["dim_robust"][1]["adv_steps"] and cfg.epochs == 12
    assert registry.configure("cnn", base, given=set()).preset is None


def test_dim_paper_preset_is_the_papers_loss_only():
    """The paper's DIM: reconstruction loss alone (no score term), no binarized batches, no adversarial training;
    its epochs unless --epochs is given."""
    settings = {f.name: getattr(registry.TrainConfig(), f.name) for f in dataclasses.fields(registry.TrainConfig)
                if f.name not in ("model", "preset")}
    cfg = registry.configure("dim_paper", settings, given=set())
    assert cfg.model == "dim" and cfg.preset == "dim_paper"
    assert cfg.score_weight == 0 and cfg.bi_fraction == 0 and cfg.attack_method == "none" and cfg.attack() is None
    assert cfg.epochs == registry.PRESETS["dim_paper"][1]["epochs"] == 20
    assert (cfg.own_class_weight, cfg.denoiser_epochs) == (9.0, 4)  # the balanced loss and denoiser as for dim
    assert registry.configure("dim_paper", {**settings, "epochs": 3}, given={"epochs"}).epochs == 3


@pytest.mark.parametrize("weight", [0.0, 1.0])
def test_adversarial_denoiser_weight_decides_whether_the_denoiser_learns(mnist, weight):
    """--adv_denoiser_weight 0 updates the internal models alone; above 0 one update also moves D (end to end
    through the score and reconstruction terms plus D's own (D(x_adv) - x)^2)."""
    cfg = registry.TrainConfig(model="dim", adversarial="pgd", adv_steps=2, adv_warmup_steps=0,
                               adv_denoiser_weight=weight, adv_monitor_examples=0, batch_size=32)
    model = registry.build(cfg)
    stage = registry.stages(cfg, model, mnist.validation.take(32))[-1]
    assert stage.model is (model if weight else model.internal)
    parts = {"denoiser": model.denoiser, "internal": model.internal}
    before = {name: [v.numpy().copy() for v in part.trainable_variables] for name, part in parts.items()}
    step = loop.make_train_step(tf.distribute.get_strategy(), stage.model, stage.objective,
                                loop.make_optimizer(1e-3, 10), 32)
    split = mnist.train.take(32)
    step(tf.constant(split.images), tf.constant(split.labels, tf.int32))
    moved = {name: any(not np.array_equal(b, v.numpy()) for b, v in zip(before[name], part.trainable_variables))
             for name, part in parts.items()}
    assert moved == {"denoiser": weight > 0, "internal": True}, moved
