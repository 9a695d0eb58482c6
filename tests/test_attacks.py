"""The attack table against a small undefended CNN trained here on real MNIST: every attack must break it at a
large eps, and no attack may return an example outside [0, 1] or beyond eps. An attack that returns its input
(as CleverHans 4.0.0's Carlini-Wagner does on Keras 3 after the obvious fix) fails these tests."""

import numpy as np
import pytest

import keras
import tensorflow as tf

from dim_tf.eval import ATTACKS, EvalError, ThreatModel, benchmark
from dim_tf.eval.attacks.base import Attack
from dim_tf.eval.runner import CountingModel

# Large radii, yet random sign noise of that size fools the test CNN on well under half of the examples.
LARGE_EPS = {ThreatModel.LINF: 0.3, ThreatModel.L2: 5.0, ThreatModel.L1: 40.0}
BOUND_TOLERANCE = 1e-4
MIN_SUCCESS = 0.95
NUM_EXAMPLES = 100
CASES = [(row.name, norm) for row in ATTACKS.values() for norm in row.norms]


@pytest.fixture(scope="session")
def tiny_cnn(mnist):
    """A small undefended CNN, ~250 Adam steps on 4000 real MNIST images (a few seconds on 2 cores)."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((28, 28, 1)),
        keras.layers.Conv2D(16, 3, strides=2, activation="relu"),
        keras.layers.Conv2D(32, 3, strides=2, activation="relu"),
        keras.layers.Flatten(),
        keras.layers.Dense(10),
    ])
    model.compile(keras.optimizers.Adam(2e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(mnist.train.images[:4000], mnist.train.labels[:4000], batch_size=32, epochs=2, verbose=0)
    return model


@pytest.fixture(scope="session")
def examples(mnist, tiny_cnn):
    """The correctly classified ones among the first NUM_EXAMPLES test images."""
    x, y = mnist.test.images[:NUM_EXAMPLES], mnist.test.labels[:NUM_EXAMPLES]
    pred = tiny_cnn.predict(x, verbose=0).argmax(1)
    assert (pred == y).mean() > 0.85, "the test CNN did not train"
    return x[pred == y], y[pred == y]


def run_attack(row: Attack, norm: ThreatModel, model, x, y, params=None):
    """The attack's raw output at the norm's large eps, and per-example (success, distance)."""
    eps = None if row.kind == "minimal" else LARGE_EPS[norm]
    out = row.fn(CountingModel(model), tf.constant(x), tf.constant(y), eps, norm, row.resolve_params(params), 0)
    adv = np.asarray(out, np.float32)
    dist = norm.distance(adv, x)
    pred = model.predict(adv, verbose=0).argmax(1)
    success = (pred != y) & (dist <= LARGE_EPS[norm] + BOUND_TOLERANCE)
    return adv, success, dist


def check_attack(row: Attack, norm: ThreatModel, model, x, y, params=None):
    adv, success, dist = run_attack(row, norm, model, x, y, params)
    assert adv.shape == x.shape
    assert np.isfinite(adv).all()
    assert adv.min() >= 0.0 and adv.max() <= 1.0, f"{row.name} {norm.value}: outside [0, 1]"
    if row.kind == "bounded":
        assert dist.max() <= LARGE_EPS[norm] + BOUND_TOLERANCE, (
            f"{row.name} {norm.value}: {np.sum(dist > LARGE_EPS[norm] + BOUND_TOLERANCE)} examples beyond eps "
            f"{LARGE_EPS[norm]} (max {dist.max():.5f})")
    assert success.mean() >= MIN_SUCCESS, f"{row.name} {norm.value}: success {success.mean():.3f} < {MIN_SUCCESS}"
    return success, dist


@pytest.mark.parametrize("name,norm", CASES, ids=[f"{n}-{t.value}" for n, t in CASES])
def test_attack_breaks_undefended_cnn_within_bounds(name, norm, tiny_cnn, examples):
    x, y = examples
    check_attack(ATTACKS[name], norm, tiny_cnn, x, y)  # the table's default parameters


def test_checks_catch_an_attack_that_returns_its_input(tiny_cnn, examples):
    x, y = examples
    lazy = Attack("identity", "test", (ThreatModel.LINF,), lambda m, x, y, eps, norm, p, r: x, {})
    with pytest.raises(AssertionError, match="success"):
        check_attack(lazy, ThreatModel.LINF, tiny_cnn, x, y)


def test_checks_catch_an_attack_that_overshoots_eps(tiny_cnn, examples):
    x, y = examples
    # Uniform noise of 2 eps: often enough to flip a prediction, but out of bounds.
    noisy = Attack("overshoot", "test", (ThreatModel.LINF,),
                   lambda m, x, y, eps, norm, p, r: tf.clip_by_value(x + tf.sign(tf.random.uniform(x.shape, -1, 1))
                                                                     * 2 * eps, 0, 1), {})
    with pytest.raises(AssertionError, match="beyond eps"):
        check_attack(noisy, ThreatModel.LINF, tiny_cnn, x, y)


def test_every_norm_but_l0_is_covered():
    covered = {n for row in ATTACKS.values() for n in row.norms}
    assert covered == {ThreatModel.LINF, ThreatModel.L2, ThreatModel.L1}
    assert {"fgsm", "fgm", "pgd", "bim", "mim", "cw_l2", "spsa"} <= set(ATTACKS)


def test_benchmark_result_is_consistent(tiny_cnn, mnist):
    x, y = mnist.test.images[:40], mnist.test.labels[:40]
    r = benchmark(tiny_cnn, x, y, "pgd", "linf", "0.05,0.3", batch_size=16, params={"steps": 5}, progress=False)
    assert r["eps"] == [0.05, 0.3] and r["threat_model"] == "linf"
    correct = np.array(r["clean_correct"])
    assert r["clean_accuracy"] == pytest.approx(correct.mean())
    for res in r["results"]:
        success = np.array(res["success"])
        assert len(success) == len(res["distance"]) == 40
        assert not success[~correct].any()
        assert res["robust_accuracy"] == pytest.approx(np.mean(correct & ~success))
        assert all(d is None for d, c in zip(res["distance"], correct) if not c)
        assert max(d for d in res["distance"] if d is not None) <= res["eps"] + BOUND_TOLERANCE
    assert r["robust_accuracy"]["0.3"] <= r["robust_accuracy"]["0.05"] <= r["clean_accuracy"]
    # 5 steps per attacked example and eps, one forward and one backward each.
    assert r["forward_passes"] == r["backward_passes"] == 2 * 5 * correct.sum()
    assert r["zero_gradient"] is False and r["out_of_bounds"] == 0


def test_minimal_attack_is_thresholded_at_each_eps(tiny_cnn, mnist):
    x, y = mnist.test.images[:20], mnist.test.labels[:20]
    r = benchmark(tiny_cnn, x, y, "cw_l2", "l2", [0.5, 3.0], params={"binary_search_steps": 2, "max_iterations": 30},
                  progress=False)
    small, large = (np.array(res["success"]) for res in r["results"])
    assert not (small & ~large).any()
    dist = r["minimal_distance"]["distance"]
    for s, d in zip(small, dist):
        assert not s or d <= 0.5 + BOUND_TOLERANCE


def test_missing_gradient_is_zero_and_flagged(tiny_cnn, mnist):
    """biCNN with the exact binarization: tf.where gives no gradient; attacks must run and flag it."""
    from dim_tf.models import BinarizedInput

    bi = BinarizedInput(tiny_cnn, gradient="exact")
    x, y = mnist.test.images[:12], mnist.test.labels[:12]
    with tf.GradientTape() as tape:
        xt = tf.constant(x)
        tape.watch(xt)
        loss = tf.reduce_sum(bi(xt))
    assert tape.gradient(loss, xt) is None
    fast = {"pgd": {"steps": 2}, "bim": {"steps": 2}, "mim": {"steps": 2},
            "cw_l2": {"binary_search_steps": 1, "max_iterations": 3}, "spsa": {"steps": 2, "spsa_samples": 8}}
    for name, norm in CASES:
        r = benchmark(bi, x, y, name, norm, None, params=fast.get(name), progress=False)
        assert r["zero_gradient"] is True and r["gradient_probe"]["none"] is True, name
        assert any("gradient masking" in w for w in r["warnings"])


def test_straight_through_gradient_is_not_flagged(tiny_cnn, mnist):
    from dim_tf.models import BinarizedInput

    bi = BinarizedInput(tiny_cnn, gradient="straight_through")
    r = benchmark(bi, mnist.test.images[:12], mnist.test.labels[:12], "fgsm", "linf", 0.3, progress=False)
    assert r["zero_gradient"] is False


def test_restarts_only_for_randomized_attacks(tiny_cnn, mnist):
    x, y = mnist.test.images[:10], mnist.test.labels[:10]
    r = benchmark(tiny_cnn, x, y, "fgsm", "linf", 0.01, restarts=3, progress=False)
    assert r["attack"]["restarts_used"] == 1 and any("deterministic" in w for w in r["warnings"])
    r = benchmark(tiny_cnn, x, y, "pgd", "linf", 0.01, restarts=3, params={"steps": 2}, progress=False)
    assert r["attack"]["restarts_used"] == 3
    # Each restart attacks only the examples still unbroken: at most 3 runs of 2 steps per attacked example.
    assert r["forward_passes"] <= 3 * 2 * sum(r["clean_correct"])


@pytest.mark.parametrize("kwargs,match", [
    ({"attack": "nope"}, "unknown attack"),
    ({"norm": "l3"}, "unknown norm"),
    ({"norm": "l0"}, "supports"),
    ({"attack": "fgsm", "norm": "l2"}, "supports linf"),
    ({"eps_list": 1.5}, "outside the sensible range"),
    ({"eps_list": "0.1,-0.2"}, "outside the sensible range"),
    ({"norm": "l2", "eps_list": 29}, r"\(0, 28\]"),
    ({"norm": "l1", "eps_list": 800}, r"\(0, 784\]"),
    ({"params": {"stepz": 3}}, "no parameter 'stepz'"),
    ({"params": {"rel_stepsize": 2.0}}, "rel_stepsize"),
    ({"batch_size": 0}, "batch_size"),
])
def test_benchmark_refuses_bad_input(kwargs, match, mnist):
    args = {"attack": "pgd", "norm": "linf", "eps_list": 0.3, **kwargs}

    def model(_):
        raise AssertionError("the model must not be called on bad input")

    with pytest.raises(EvalError, match=match):
        benchmark(model, mnist.test.images[:4], mnist.test.labels[:4], args.pop("attack"), args.pop("norm"),
                  args.pop("eps_list"), progress=False, **args)


def test_l1_projection_matches_sorting_definition():
    from dim_tf.eval.attacks.gradient import project_l1

    rng = np.random.default_rng(0)
    delta = rng.normal(size=(6, 50)).astype(np.float32)
    for eps in (0.5, 3.0, 100.0):
        p = project_l1(tf.constant(delta), eps).numpy()
        assert np.abs(p).sum(1).max() <= eps + 1e-4
        for row, orig in zip(p, delta):
            if np.abs(orig).sum() <= eps:
                np.testing.assert_allclose(row, orig)
            else:  # the projection is soft-thresholding at theta with ||.||_1 = eps
                theta = np.max(np.abs(orig) - np.abs(row))
                np.testing.assert_allclose(np.abs(row), np.maximum(np.abs(orig) - theta, 0), atol=1e-5)
                assert np.abs(row).sum() == pytest.approx(eps, rel=1e-4)


def test_threat_model_distances_and_projection():
    from dim_tf.eval.threat import project

    x = np.zeros((2, 28, 28, 1), np.float32)
    adv = x.copy()
    adv[0, 0, 0, 0], adv[0, 1, 1, 0] = 0.5, 0.25
    np.testing.assert_allclose(ThreatModel.LINF.distance(adv, x), [0.5, 0])
    np.testing.assert_allclose(ThreatModel.L2.distance(adv, x), [np.sqrt(0.3125), 0])
    np.testing.assert_allclose(ThreatModel.L1.distance(adv, x), [0.75, 0])
    np.testing.assert_allclose(ThreatModel.L0.distance(adv, x), [2, 0])
    for norm, eps in ((ThreatModel.LINF, 0.3), (ThreatModel.L2, 0.3), (ThreatModel.L1, 0.3), (ThreatModel.L0, 1)):
        p = project(adv, x, norm, eps)
        assert norm.distance(p, x).max() <= eps + 1e-6 and p.min() >= 0 and p.max() <= 1
