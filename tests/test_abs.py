"""ABS: shapes and .keras round trip, the inference (best of N, then Adam on the latents), its envelope gradient,
biABS, the class-wise training objective, and `python -m dim_tf.train --model abs` with a resume."""

import dataclasses
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from dim_tf import model_dir, registry
from dim_tf.models import ABS, BinarizedInput
from dim_tf.training import objectives

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}


@pytest.fixture(scope="module")
def small():
    """A random ABS with cheap inference (30 prior samples, 3 Adam steps) and four MNIST-like inputs."""
    keras.utils.set_random_seed(0)
    model = ABS(num_samples=30, steps=3)
    x = np.random.default_rng(0).uniform(size=(4, 28, 28, 1)).astype(np.float32) ** 4  # mostly dark, like digits
    return model, x


def test_shapes_finite_logits_and_keras_round_trip(small, tmp_path):
    model, x = small
    logits = model(x).numpy()
    assert logits.shape == (4, 10) and np.isfinite(logits).all()
    assert (logits < 0).all()  # -440 * a positive ELBO
    assert model.latents(x).shape == (4, 10, 8)
    assert len(model.trainable_variables) == 28  # 7 conv and 6 BN layers, each one stacked variable per kind
    assert model.encoder[0].kernel.shape == (10, 5, 5, 1, 32)
    assert model.count_params() == 10 * 85_745  # ten VAEs of the original's size
    path = str(tmp_path / "abs.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert loaded.get_config() == model.get_config()
    assert (loaded.num_samples, loaded.steps, loaded.logit_scale) == (30, 3, 440.0)
    faster = registry.with_inference(model, abs_steps=0)  # no Adam steps: no tracing; the same networks
    assert faster.steps == 0 and faster.num_samples == 30 and faster.decoder[0] is model.decoder[0]
    assert registry.with_inference(model) is model
    with pytest.raises(ValueError, match="ABS models only"):
        registry.with_inference(registry.build(registry.TrainConfig(model="cnn")), abs_samples=10)
    np.testing.assert_allclose(loaded.configured(steps=0)(x).numpy(), faster(x).numpy(), rtol=1e-5)
    np.testing.assert_allclose(loaded.encoder_logits(x).numpy(), model.encoder_logits(x).numpy(), rtol=1e-5)


def test_best_of_n_then_adam_lowers_every_elbo(small):
    model, x = small
    prior = model.prior()
    z0 = model.initial_latents(x, prior)
    # Best of N: no prior sample has a lower ELBO than the chosen one, for every image and class.
    n = model.num_samples
    every_z = tf.broadcast_to(prior.latents[:, None], [n, 10, 8])
    every = np.stack([model.elbo(tf.repeat(x[i:i + 1], n, axis=0), every_z) for i in range(len(x))])  # [B, N, K]
    np.testing.assert_allclose(model.elbo(x, z0).numpy(), every.min(axis=1), rtol=1e-4)
    z = model.optimise_latents(x, z0)
    before, after = model.elbo(x, z0).numpy(), model.elbo(x, z).numpy()
    assert (after < before).all(), (before, after)
    assert np.all(np.linalg.norm(z.numpy(), axis=-1) <= model.radius + 1e-5)
    np.testing.assert_allclose(model(x).numpy(), -440.0 * after, rtol=1e-5)


def test_steps_zero_reads_the_cached_images(small):
    model, x = small
    cached = model.configured(steps=0)
    decoded = -440.0 * model.elbo(x, model.initial_latents(x, model.prior()))
    np.testing.assert_allclose(cached(x).numpy(), decoded.numpy(), rtol=1e-4)


def test_gradient_is_the_envelope_gradient_at_fixed_latents(small):
    model, x = small
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        z_star = model.latents(x)
    assert tape.gradient(z_star, x) is None  # z* is a constant for the gradient: no unrolled optimisation
    with tf.GradientTape() as tape:
        tape.watch(x)
        picked = model(x)[:, 3]
    grad = tape.gradient(picked, x).numpy()
    assert np.abs(grad).max() > 0
    direction = np.random.default_rng(1).normal(size=x.shape).astype(np.float32)
    h = 1e-2

    def value(t):  # the picked logit at fixed latents z*
        return (-440.0 * model.elbo(x + t * direction, z_star)[:, 3]).numpy().astype(np.float64)

    numeric = (value(h) - value(-h)) / (2 * h)  # exact up to rounding: quadratic in x at fixed z
    analytic = (grad * direction).sum(axis=(1, 2, 3))
    np.testing.assert_allclose(analytic, numeric, rtol=2e-3)


def test_biabs_binarizes_the_input(small):
    model, x = small
    assert registry.BI_VARIANTS["abs"] == "biabs"
    bi = registry.bi_variant(model)
    assert isinstance(bi, BinarizedInput) and bi.classifier is model
    binary = (x >= 0.5).astype(np.float32)
    np.testing.assert_allclose(bi(x).numpy(), model(binary).numpy(), rtol=1e-5)
    near = np.where(x >= 0.5, 0.51, 0.49).astype(np.float32)
    np.testing.assert_allclose(bi(near).numpy(), bi(x).numpy(), rtol=1e-5)
    x_t = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x_t)
        out = tf.reduce_sum(registry.bi_variant(model, "straight_through")(x_t))
    assert np.abs(tape.gradient(out, x_t).numpy()).max() > 0  # BPDA passes the envelope gradient through


def test_class_scales_multiply_each_class_elbo(small, tmp_path):
    model, x = small
    scales = np.linspace(0.9, 1.1, 10)
    scaled = model.configured()
    scaled.class_scales = tuple(scales)
    np.testing.assert_allclose(scaled(x).numpy(), model(x).numpy() * scales, rtol=1e-5)
    assert scaled.configured(steps=0).class_scales == scaled.class_scales
    path = str(tmp_path / "scaled.keras")
    scaled.save(path)
    np.testing.assert_allclose(keras.saving.load_model(path, safe_mode=True)(x).numpy(), scaled(x).numpy(), rtol=1e-5)
    with pytest.raises(ValueError, match="10 positive class_scales"):
        ABS(class_scales=[1.0] * 9)


def test_fitted_class_scales_undo_a_class_bias():
    from dim_tf.training import calibrate

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 4000)
    elbos = rng.uniform(0.04, 0.06, (4000, 10))
    elbos[np.arange(4000), labels] -= rng.uniform(0.0, 0.02, 4000)  # the true class is usually the most likely
    bias = np.ones(10)
    bias[3], bias[7] = 1.15, 0.9  # class 3 looks too unlikely, class 7 too likely
    scales = calibrate.fit_class_scales(elbos * bias, labels, 440.0)
    assert abs(scales.mean() - 1) < 1e-9
    np.testing.assert_allclose(scales * bias / np.mean(scales * bias), 1.0, atol=0.03)
    before = np.mean(np.argmin(elbos * bias, axis=1) == labels)
    after = np.mean(np.argmin(elbos * bias * scales, axis=1) == labels)
    unbiased = np.mean(np.argmin(elbos, axis=1) == labels)
    assert after > before + 0.03 and after > unbiased - 0.01, (before, after, unbiased)
    with pytest.raises(ValueError, match=r"ELBOs \[N, K\] and N labels"):
        calibrate.fit_class_scales(elbos, labels[:10], 440.0)


def test_each_vae_learns_only_from_its_class(mnist):
    keras.utils.set_random_seed(2)
    model = ABS(num_samples=1, steps=0)
    objective = objectives.ABSObjective(model)
    threes = mnist.train.images[mnist.train.labels == 3][:5]
    x, y = tf.constant(threes), tf.fill([5], 3)
    with tf.GradientTape() as tape:
        losses = objective(x, y, 0)
        total = tf.reduce_sum(losses)
    assert losses.shape == (5,) and np.isfinite(losses.numpy()).all()
    grad = tape.gradient(total, model.decoder[0].kernel).numpy()
    per_class = np.abs(grad).reshape(10, -1).max(axis=1)
    assert per_class[3] > 0 and np.all(np.delete(per_class, 3) == 0), per_class
    # Class-balanced weights: the batch loss is the mean over present classes of each VAE's mean loss.
    mixed_y = tf.constant([0, 1, 1, 1])
    mixed_x = tf.constant(np.concatenate([mnist.train.images[mnist.train.labels == 0][:1], threes[:3]]))
    tf.random.set_seed(5)
    weighted = objective(mixed_x, mixed_y, 0).numpy()
    tf.random.set_seed(5)
    raw = objectives.vae_losses(model, [tf.gather(mixed_x, [0])] + [tf.gather(mixed_x, [1, 2, 3])]
                                + [mixed_x[:1]] * 8, 1.0)
    np.testing.assert_allclose(weighted, np.concatenate([raw[0] * 4 / 10, raw[1] * 4 / 30]), rtol=1e-5)


def test_train_cli_writes_a_manifest_and_resumes(tmp_path, mnist_folder):
    cmd = [sys.executable, "-m", "dim_tf.train", "--model", "abs", "--model_dir", str(tmp_path), "--data_dir",
           mnist_folder, "--train_examples", "640", "--batch_size", "64", "--epochs", "1", "--abs_samples", "10",
           "--abs_steps", "0", "--abs_calibration_examples", "200"]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=ENV)
    assert first.returncode == 0, first.stderr[-3000:]
    model, manifest = model_dir.load(str(tmp_path))
    assert manifest["model"] == "abs" and set(manifest["test_accuracy"]) == {"abs", "biabs"}
    assert set(manifest["stages"]) == {"vaes"} and 0 <= manifest["stages"]["vaes"]["val_encoder_accuracy"] <= 1
    assert isinstance(model, ABS) and (model.num_samples, model.steps) == (10, 0)
    calibration = manifest["calibration"]  # fitted on validation images, stored in model.keras
    assert calibration["validation_examples"] == 200 and list(model.class_scales) == calibration["class_scales"]
    assert calibration["cross_entropy"]["after"] <= calibration["cross_entropy"]["before"]
    assert set(manifest["test_accuracy_uncalibrated"]) == {"abs", "biabs"}
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=ENV)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resuming after epoch 1" in second.stdout + second.stderr
    again = json.loads((tmp_path / model_dir.MANIFEST).read_text())
    assert again["test_accuracy"] == manifest["test_accuracy"]  # same weights, same deterministic inference


def test_random_distortion_keeps_shape_range_and_centre(mnist):
    from dim_tf.training import augment

    x = tf.constant(mnist.train.images[:64])
    assert augment.random_distortion(x, 0.0) is x
    tf.random.set_seed(0)
    out = augment.random_distortion(x, 1.0).numpy()
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    changed = np.abs(out - x.numpy()).reshape(64, -1).max(axis=1) > 0.05
    assert changed.mean() > 0.9  # every image draws a zoom, a shear and a skew
    # A transform about the image centre: a centred blob stays centred and keeps roughly its ink.
    yy, xx = np.mgrid[:28, :28]
    blob = np.exp(-((yy - 13.5) ** 2 + (xx - 13.5) ** 2) / 18.0).astype(np.float32)[None, ..., None]
    moved = augment.random_distortion(tf.constant(np.repeat(blob, 32, axis=0)), 1.0).numpy()[..., 0]
    mass = moved.sum(axis=(1, 2))
    assert np.all(np.abs(mass / blob.sum() - 1) < 0.5), mass / blob.sum()
    centre_y = (moved * yy).sum(axis=(1, 2)) / mass
    centre_x = (moved * xx).sum(axis=(1, 2)) / mass
    assert np.all(np.abs(centre_y - 13.5) < 1.5) and np.all(np.abs(centre_x - 13.5) < 1.5)
    loss = objectives.ABSObjective(ABS(num_samples=1, steps=0), augment=1.0)(x[:8], tf.constant(
        mnist.train.labels[:8]), 0)
    assert np.isfinite(loss.numpy()).all()
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        registry.TrainConfig(model="abs", abs_augment=1.5)


def test_settings_added_later_keep_older_run_folders_resumable(tmp_path):
    cfg = registry.TrainConfig(model="abs")
    stored = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "abs_augment"}
    (tmp_path / model_dir.CONFIG).write_text(json.dumps(stored))  # written before abs_augment existed
    (tmp_path / "checkpoints" / "vaes").mkdir(parents=True)  # and it finished an epoch
    (tmp_path / "checkpoints" / "vaes" / "checkpoint").write_text('model_checkpoint_path: "ckpt-1"\n')
    model_dir.prepare(str(tmp_path), cfg)  # the missing setting counts as its default
    (tmp_path / model_dir.CONFIG).write_text(json.dumps(stored))
    with pytest.raises(model_dir.ModelDirError, match="other settings"):
        model_dir.prepare(str(tmp_path), registry.TrainConfig(model="abs", abs_augment=0.1))
