"""Shapes, the score formula, binarization, the internal models' targets and .keras round trips."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from dim_tf import registry
from dim_tf.models import DIM, Binarize, Denoiser, InternalModels
from dim_tf.training import objectives


class ModelTest(tf.test.TestCase):

    def setUp(self):
        keras.utils.set_random_seed(0)
        self.x = np.random.default_rng(0).uniform(size=(3, 28, 28, 1)).astype(np.float32)

    def test_shapes(self):
        internal = InternalModels()
        self.assertEqual(internal(self.x).shape, (3, 10, 28, 28, 1))
        self.assertEqual(internal.encode(self.x).shape, (3, 10, 10))
        shared = InternalModels(shared_encoder=True)
        self.assertEqual(shared(self.x).shape, (3, 10, 28, 28, 1))
        self.assertEqual(shared.encode(self.x).shape, (3, 10))
        self.assertEqual(Denoiser()(self.x).shape, (3, 28, 28, 1))
        for name in registry.MODELS:
            self.assertEqual(registry.build(registry.TrainConfig(model=name))(self.x).shape, (3, 10), name)

    def test_internal_models_have_ten_separate_weight_sets(self):
        internal = InternalModels()
        internal(self.x)
        before = internal(self.x).numpy()
        kernel = internal.dec_out.kernel
        kernel.assign(tf.tensor_scatter_nd_update(kernel, [[3]], tf.zeros([1, *kernel.shape[1:]])))
        after = internal(self.x).numpy()
        changed = [not np.allclose(before[:, k], after[:, k]) for k in range(10)]
        self.assertEqual(changed, [k == 3 for k in range(10)])

    def test_score_formula(self):
        model = DIM(InternalModels(), Denoiser())
        scores = model(self.x).numpy()
        d = model.denoiser(self.x).numpy()
        recon = model.internal(d).numpy()
        expected = np.abs(recon).sum(axis=(2, 3, 4)) / np.abs(d).sum(axis=(1, 2, 3))[:, None]
        self.assertAllClose(scores, expected, rtol=1e-5)

    def test_black_image_gives_finite_scores(self):
        for binarize in (False, True):
            model = DIM(InternalModels(), Denoiser(), binarize=binarize)
            self.assertTrue(np.isfinite(model(np.zeros((1, 28, 28, 1), np.float32)).numpy()).all())

    def test_binarize_threshold_and_gradients(self):
        x = tf.constant([0.0, 0.4999, 0.5, 0.5001, 1.0])
        for gradient in ("exact", "straight_through", "sigmoid"):
            self.assertAllEqual(Binarize(gradient=gradient)(x), [0.0, 0.0, 1.0, 1.0, 1.0])
        for gradient, expect_grad in (("exact", None), ("straight_through", np.ones(5))):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = tf.reduce_sum(Binarize(gradient=gradient)(x))
            grad = tape.gradient(y, x)
            if expect_grad is None:
                self.assertIsNone(grad)
            else:
                self.assertAllClose(grad, expect_grad)
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = tf.reduce_sum(Binarize(gradient="sigmoid", temperature=0.1)(x))
        grad = tape.gradient(y, x).numpy()
        self.assertGreater(grad[2], grad[0])  # largest at the threshold
        self.assertAllClose(grad[2], 2.5)  # sigmoid'(0) / t

    def test_bidim_binarizes_input_and_denoiser_output(self):
        model = DIM(InternalModels(), Denoiser())
        bi = model.variant(True)
        d = bi.denoise(self.x).numpy()
        self.assertTrue(set(np.unique(d)) <= {0.0, 1.0})
        near = np.where(self.x >= 0.5, 0.51, 0.49).astype(np.float32)
        self.assertAllClose(bi(near), bi(np.where(self.x >= 0.5, 1.0, 0.0).astype(np.float32)))
        self.assertIs(bi.internal, model.internal)

    def test_internal_targets_and_weighting(self):
        d = tf.constant(self.x)
        y = tf.constant([2, 0, 9])
        targets = objectives.internal_targets(d, y, 10).numpy()
        for b, label in enumerate([2, 0, 9]):
            for k in range(10):
                expected = self.x[b] if k == label else np.zeros_like(self.x[b])
                self.assertAllEqual(targets[b, k], expected)
        internal = InternalModels()
        obj = objectives.InternalObjective(internal, None, 0.0, own_class_weight=9.0, warmup_steps=1, score_weight=0.0)
        recon = internal(d).numpy()
        per_class = ((recon - targets) ** 2).mean(axis=(2, 3, 4))
        w = np.ones((3, 10))
        w[[0, 1, 2], [2, 0, 9]] = 9.0
        self.assertAllClose(obj(d, y, 0), (per_class * w).sum(1) / 18.0, rtol=1e-5)

    def test_score_term_is_cross_entropy_on_scaled_scores(self):
        internal = InternalModels()
        d, y = tf.constant(self.x), tf.constant([2, 0, 9])
        plain = objectives.InternalObjective(internal, None, 0.0, 9.0, 1, score_weight=0.0)(d, y, 0)
        with_score = objectives.InternalObjective(internal, None, 0.0, 9.0, 1, score_weight=0.5,
                                                  score_temperature=30.0)(d, y, 0)
        scores = DIM(internal)(d)
        ce = tf.nn.sparse_softmax_cross_entropy_with_logits(y, 30.0 * scores)
        self.assertAllClose(with_score, plain + 0.5 * ce, rtol=1e-5)

    def test_noise_ramp(self):
        x = tf.zeros([1000])
        self.assertAllEqual(objectives.ramped_noise(x, 0.4, 0, 100), x)
        late = objectives.ramped_noise(x, 0.4, 100, 100).numpy()
        self.assertAllClose(late[late > 0].std(), 0.4 * 0.6, atol=0.05)  # half-normal std of a clipped N(0, .4)


@pytest.mark.parametrize("name", registry.MODELS)
def test_keras_round_trip(tmp_path, name):
    keras.utils.set_random_seed(1)
    model = registry.build(registry.TrainConfig(model=name))
    x = np.random.default_rng(1).uniform(size=(4, 28, 28, 1)).astype(np.float32)
    path = os.path.join(tmp_path, "m.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_allclose(loaded(x).numpy(), model(x).numpy(), rtol=1e-5, atol=1e-6)
    bi = registry.bi_variant(loaded)
    if name in registry.BI_VARIANTS:
        np.testing.assert_allclose(bi(x).numpy(), registry.bi_variant(model)(x).numpy(), rtol=1e-5, atol=1e-6)
    else:
        assert bi is None
