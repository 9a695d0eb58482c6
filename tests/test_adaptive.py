"""The adaptive suite: its attacks break an undefended tiny CNN and its binarized variant (BPDA) at a large eps where
exact-gradient PGD sees zero gradient; the sanity checks FAIL on a gradient-masked model; EOT beats single draws on a
noisy model; the suite writes its report. Each test breaks if its attack or check is made a no-op."""

import math
import os
import types

import numpy as np
import pytest

import keras
import tensorflow as tf

from conftest import absolute_paths, eval_settings, save_model_dir
from dim_tf import model_dir as md
from dim_tf.eval import ATTACKS, EvalSettings, ThreatModel, run_attack, sanity
from dim_tf.eval.attacks import adaptive, apgd
from dim_tf.eval.suites import adaptive as suite
from dim_tf.eval.suites.adaptive import cascade, planning, report as reporting
from dim_tf.eval.threat import EvalError, project
from dim_tf.fingerprint import weights_fingerprint
from dim_tf.models import BinarizedInput

LINF, L2 = ThreatModel.LINF, ThreatModel.L2
LARGE_EPS = {LINF: 0.5, L2: 5.0}
FAST = {"pgd_margin": {"steps": 20}, "pgd_dlr": {"steps": 20}, "pgd_targeted": {"steps": 10, "targets": 3},
        "apgd_dlr": {"steps": 20}, "apgd_targeted": {"steps": 10, "targets": 2},
        "fab_targeted": {"steps": 50, "targets": 3}, "square": {"queries": 300},
        "pixel_flip": {"rounds": 60}}
CASES = [("pgd_margin", LINF), ("pgd_dlr", LINF), ("pgd_targeted", L2), ("apgd_dlr", LINF), ("apgd_dlr", L2),
         ("apgd_targeted", LINF), ("fab_targeted", LINF), ("fab_targeted", L2), ("square", LINF), ("square", L2),
         ("pixel_flip", LINF), ("pixel_flip", L2)]


def row(name):
    return adaptive.PIXEL_FLIP if name == "pixel_flip" else ATTACKS[name]


@pytest.fixture(scope="module")
def digits(mnist):
    return mnist.test.images[:60], mnist.test.labels[:60]


def success_rate(model, name, norm, x, y):
    r = run_attack(model, x, y, row(name), norm, LARGE_EPS[norm], params=FAST.get(name), progress=False)
    assert r["out_of_bounds"] == 0, f"{name} {norm.value}: out of bounds"
    return r["results"][0]["attack_success_rate"], r


@pytest.mark.parametrize("name,norm", CASES, ids=[f"{n}-{t.value}" for n, t in CASES])
def test_rows_break_cnn_and_binarized_cnn(name, norm, tiny_cnn, digits):
    x, y = digits
    # Through the straight-through surrogate (BPDA): forward = the exact 0.5 threshold, backward = identity.
    bpda, r = success_rate(BinarizedInput(tiny_cnn, "straight_through"), name, norm, x, y)
    # FAB-T steps exactly onto the linearised boundary: on a step function (the threshold) that lands short more
    # often (measured 0.91-0.93 at L-inf 0.5 here; the plain CNN passes the 0.95 below).
    need = 0.85 if name == "fab_targeted" else 0.95
    assert bpda >= need, f"{name} {norm.value} on the binarized CNN (BPDA): success {bpda:.2f}"
    assert not r["zero_gradient"]
    plain, _ = success_rate(tiny_cnn, name, norm, x, y)
    # Pixel flip only moves pixels to just past 0.5: enough for a binarized input, not always for a plain CNN.
    assert plain >= (0.85 if name == "pixel_flip" else 0.95), f"{name} {norm.value} on the CNN: success {plain:.2f}"


def test_apgd_reconsiders_its_steps_at_the_papers_checkpoints():
    # p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06) (Croce & Hein 2020), of 100 iterations
    assert apgd.checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    assert apgd.checkpoints(10) == [2, 3, 4, 5, 6, 7, 8, 9, 10]


def test_exact_gradient_pgd_is_masked_where_bpda_is_not(tiny_cnn, digits):
    x, y = digits
    exact = BinarizedInput(tiny_cnn, "exact")
    r = run_attack(exact, x, y, "pgd", LINF, 0.5, params={"steps": 20}, progress=False)
    assert r["zero_gradient"] and r["results"][0]["attack_success_rate"] < 0.2
    bpda, _ = success_rate(BinarizedInput(tiny_cnn, "straight_through"), "pgd_margin", LINF, x, y)
    assert bpda >= 0.95


def test_pixel_flip_moves_only_flippable_pixels_just_past_the_threshold():
    x = np.array([0.0, 0.25, 0.45, 0.5, 0.55, 0.75, 1.0], np.float32).reshape(1, 7, 1, 1)
    value, flippable = adaptive.flip_values(x, 0.3)
    np.testing.assert_array_equal(flippable.ravel(), [False, True, True, True, True, True, False])
    v = value.ravel()
    assert np.all(v[1:3] >= 0.5) and np.all(v[3:6] < 0.5) and np.all(np.abs(v[1:6] - 0.5) <= 2e-6)
    assert np.all(np.abs(value - x) <= 0.3 + 1e-6)
    value, flippable = adaptive.flip_values(x, 0.3, L2)  # L2: a flip costs (x - 0.5)^2 of the budget 0.09
    np.testing.assert_array_equal(flippable.ravel(), [False, True, True, True, True, True, False])
    rng = np.random.default_rng(0)  # whatever x, the benchmark's projection arithmetic keeps every flip
    x = rng.integers(0, 256, (4, 28, 28, 1)).astype(np.float32) / 255
    for norm, eps in ((LINF, 0.3), (L2, 1.5)):
        value, flippable = adaptive.flip_values(x, eps, norm)
        moved = np.where(flippable, value, x)
        # L2: per pixel, as `project` computes it when the image is within the budget (scale 1).
        scored = project(moved, x, LINF, eps) if norm is LINF else np.clip(x + (moved - x) * np.float32(1.0), 0, 1)
        np.testing.assert_array_equal((scored >= 0.5) != (x >= 0.5), flippable)
        assert flippable.any()


def test_pixel_flip_stays_within_the_l2_budget(tiny_cnn, digits):
    x, y = digits
    from dim_tf.eval.attack_run import CountingModel

    model = CountingModel(BinarizedInput(tiny_cnn, "straight_through"))
    adv = adaptive.pixel_flip(model, x, y, 1.5, L2, {"rounds": 30, "candidates": 6})
    assert L2.distance(adv, x).max() < 1.5 * (1 - 1e-6)  # never rescaled by the benchmark's projection
    changed = adv != x
    assert changed.any() and np.all(np.abs(adv[changed] - 0.5) <= 2e-6)


def test_pixel_flip_with_every_candidate_finds_a_flip_the_gradient_cannot_rank():
    """A model that reads one grey pixel through the threshold, with no gradient, while 36 decoy pixels lower its
    margin a little and smoothly: a few gradient-ranked candidates only ever try decoys; every candidate (the
    cascade's L-inf setting) finds the pixel that decides, and moves only it."""
    x = np.zeros((2, 28, 28, 1), np.float32)
    x[:, 3:9, 3:9] = 0.4  # 36 flippable pixels ranked before the one that matters
    x[:, 25, 25] = 0.4
    y = np.zeros(2, np.int32)

    def model_fn(images):
        bit = tf.stop_gradient(tf.cast(images[:, 25, 25, 0] >= 0.5, tf.float32))
        decoys = 1e-3 * tf.reduce_sum(images[:, 3:9, 3:9, 0], axis=[1, 2])
        return tf.stack([1.0 - bit, bit + decoys] + [tf.zeros_like(bit)] * 8, axis=1)

    few = adaptive.pixel_flip(model_fn, x, y, 0.3, LINF, {"rounds": 5, "candidates": 6})
    assert np.all(np.asarray(model_fn(few)).argmax(1) == 0)
    every = adaptive.pixel_flip(model_fn, x, y, 0.3, LINF,
                                adaptive.PIXEL_FLIP.resolve_params({"rounds": 5, "candidates": "all"}))
    assert np.all(np.asarray(model_fn(every)).argmax(1) == 1)
    changed = np.argwhere((every != x).reshape(2, -1))
    np.testing.assert_array_equal(changed[:, 1], [25 * 28 + 25] * 2)
    with pytest.raises(EvalError, match="candidates='every' must be an integer or 'all'"):
        adaptive.PIXEL_FLIP.resolve_params({"candidates": "every"})


def test_l2_pixel_flip_spends_its_budget_where_a_flip_buys_the_most_margin():
    """Four black pixels (cost 0.25 each) each remove 1 of the margin, eight grey ones (cost 0.04) 0.5 each; the
    budget is 0.52 and the margin 3. Greedy by margin alone takes two black pixels and is stuck at margin 1; per unit
    of cost it takes grey ones first and fools with at most one black pixel."""
    x = np.zeros((1, 28, 28, 1), np.float32)
    x[0, 10, 10:18] = 0.3
    weights = np.zeros((28, 28), np.float32)
    weights[10, 10:18] = 0.5
    weights[20, 10:14] = 1.0

    def model_fn(images):
        bits = images + tf.stop_gradient(tf.cast(images >= 0.5, tf.float32) - images)  # straight-through
        z = 3.0 - tf.reduce_sum(bits[..., 0] * weights, axis=[1, 2])
        return tf.stack([z, tf.zeros_like(z)] + [tf.fill(tf.shape(z), -100.0)] * 8, axis=1)

    adv = adaptive.pixel_flip(model_fn, x, np.zeros(1, np.int32), math.sqrt(0.52), L2,
                              {"rounds": 20, "candidates": 16})
    assert np.asarray(model_fn(adv)).argmax(1)[0] == 1
    assert np.sum(adv[0, 20, 10:14, 0] > 0.5) <= 1 and L2.distance(adv, x)[0] < math.sqrt(0.52)


def test_binarization_refinement_keeps_prediction_and_shrinks(tiny_cnn, digits):
    x, y = digits
    exact = BinarizedInput(tiny_cnn, "exact")
    adv = np.clip(x + np.random.default_rng(0).uniform(-0.5, 0.5, x.shape), 0, 1).astype(np.float32)
    refined = adaptive.binarization_refinement(exact, x, adv, y)
    np.testing.assert_array_equal(np.asarray(exact(refined)).argmax(1), np.asarray(exact(adv)).argmax(1))
    assert np.all(np.abs(refined - x) <= np.abs(adv - x) + 1e-7)
    assert LINF.distance(refined, x).mean() < LINF.distance(adv, x).mean()


def test_eot_beats_single_draws_on_a_noisy_model(tiny_cnn, digits):
    keras.utils.set_random_seed(0)
    x, y = digits[0][:40], digits[1][:40]

    def noisy(images):  # test-time Gaussian noise: single-draw gradients are noisy
        return tiny_cnn(images + tf.random.normal(tf.shape(images), stddev=0.3))

    def vote(images):
        return np.mean([tf.nn.softmax(noisy(tf.constant(images))).numpy() for _ in range(16)], 0).argmax(1)

    xt, yt = tf.constant(x), tf.constant(y)
    reference = np.mean([adaptive._loss_and_grad(noisy, xt, yt, yt, "margin", 8, None)[0].numpy()
                         for _ in range(8)], axis=0).reshape(len(x), -1)  # 64 draws

    def cosine(g):
        g = g.numpy().reshape(len(x), -1)
        return np.mean((g * reference).sum(1) / np.linalg.norm(g, axis=1) / np.linalg.norm(reference, axis=1))

    one = cosine(adaptive._loss_and_grad(noisy, xt, yt, yt, "margin", 1, None)[0])
    eight = cosine(adaptive._loss_and_grad(noisy, xt, yt, yt, "margin", 8, None)[0])
    assert eight > 0.9 and eight > one + 0.08, (one, eight)
    accuracy = {eot: np.mean(vote(adaptive.pgd(noisy, x, y, 0.15, LINF, 20, 0.1, eot=eot)) == y) for eot in (1, 8)}
    assert accuracy[8] < accuracy[1] - 0.15, accuracy
    # The suite notices the noise and plans EOT.
    target = planning.Target("-", {"model": "noisy"}, "default", "noisy", noisy, noisy, noisy, None,
                          stochastic=not np.array_equal(noisy(xt).numpy(), noisy(xt).numpy()))
    assert target.stochastic
    main = planning.plan(target, LINF, 1.0, [], None)[0]
    assert main.params["eot"] == planning.EOT_SAMPLES


def test_sanity_checks_fail_on_a_gradient_masked_model(tiny_cnn, digits, tmp_path):
    """The binarized CNN with its exact (zero) gradient, posing as an undefended model: white-box attacks see
    nothing and Square breaks what they missed, so the white- vs black-box and zero-gradient checks FAIL."""
    x, y = digits[0][:30], digits[1][:30]
    masked = BinarizedInput(tiny_cnn, "exact")
    target = planning.Target("-", {"model": "masked"}, "default", "masked", masked, masked, masked, None)
    settings = EvalSettings(budget=0.2, batch_size=250, seed=0, progress=False, strategy="default")
    entry = cascade.evaluate(target, x, y, settings, str(tmp_path), types.SimpleNamespace(source="test"), None,
                           lambda *_: None, [], None, norms=(LINF,))
    checks = {c.name: c for c in entry["sanity"]}
    assert checks["white_vs_black_box"].status == "FAIL", checks["white_vs_black_box"]
    assert checks["zero_gradient"].status == "FAIL"
    assert checks["large_eps"].status == "PASS"  # Square's 0.3 adversarials are within 0.5 too
    linf = entry["norms"]["linf"]
    assert linf["white_box_accuracy"] > 0.8 and linf["accuracy"] < linf["white_box_accuracy"] - 0.2


def test_doubled_step_is_the_strongest_white_box_attack():
    steps = [planning.Step("main", None, None, {"steps": 40}, 5, "white", True),
             planning.Step("flip", None, None, {"rounds": 100, "candidates": 6}, 1, "white"),
             planning.Step("feature", None, None, {}, 1, "white"),
             planning.Step("square", None, None, {"queries": 9}, 1, "black")]
    records = [{"newly_broken": 20}, {"newly_broken": 30}, {"newly_broken": 50}, {"newly_broken": 90}]
    twice = planning.doubled_step(steps, records)
    assert twice.label == "flip x2" and twice.params == {"rounds": 200, "candidates": 6} and twice.restarts == 2
    records[1]["newly_broken"] = 20  # a tie goes to the main attack
    assert planning.doubled_step(steps, records).params == {"steps": 80}


def test_sanity_check_verdicts():
    correct = np.ones(100, bool)
    iterative = np.zeros(100, bool)
    iterative[:50] = True
    single = np.zeros(100, bool)
    single[40:60] = True  # breaks 10 examples the iterative attacks missed
    assert sanity.iterative_vs_single_step("m", iterative, single, correct).status == "FAIL"
    assert sanity.iterative_vs_single_step("m", iterative, single & iterative, correct).status == "PASS"
    assert sanity.white_vs_black_box("m", 2, 100, ["square"]).status == "FAIL"
    assert sanity.white_vs_black_box("m", 1, 100, ["square"]).status == "PASS"
    assert sanity.white_vs_black_box("m", 0, 100, []).status == "SKIP"
    assert sanity.more_steps_and_restarts("m", 1, 100, "x2").status == "FAIL"
    assert sanity.more_steps_and_restarts("m", 0, 100, "x2").status == "PASS"
    assert sanity.large_eps("m", 0.1).status == "FAIL" and sanity.large_eps("m", 0.0).status == "PASS"
    assert sanity.zero_gradient("m", 0.0, True, "exact").status == "FAIL"
    assert sanity.zero_gradient("m", 0.01, False, "exact").status == "FAIL"
    assert sanity.without_defense("m", 0.3).status == "FAIL" and sanity.without_defense("m", 0.0).status == "PASS"


def test_plan_covers_the_adaptive_attacks(tiny_cnn, mnist):
    from dim_tf.models import CNN

    cnn = CNN()
    cnn(np.zeros((1, 28, 28, 1), np.float32))
    target = planning.make_target("-", cnn, {"model": "cnn"}, "bi", mnist.test.images[:4])
    assert not target.stochastic and target.annealed is not None
    steps = {norm: planning.plan(target, norm, 1.0, [("cnn", tiny_cnn, 10)], None) for norm in (LINF, L2)}
    labels = {norm: [s.label for s in steps[norm]] for norm in steps}
    for step in steps[LINF] + steps[L2]:  # the attack runner resolves every planned step's parameters by its row
        assert step.attack.resolve_params(step.params) == {**step.attack.defaults, **step.params}, step.label
    assert labels[LINF] == ["bpda-st pgd_margin", "bpda-sigmoid-annealed pgd_margin", "pixel_flip",
                            "bpda-st pgd_dlr", "bpda-st pgd_targeted", "bpda-st apgd_dlr", "bpda-st apgd_targeted",
                            "bpda-st fab_targeted", "bpda-st fgsm", "square", "hop_skip_jump", "transfer from cnn"]
    assert labels[L2][-3:] == ["hop_skip_jump", "boundary", "transfer from cnn"] and "pixel_flip" in labels[L2]
    main = planning.plan(target, LINF, 1.0, [], None)[0]
    assert main.restarts >= 5 and main.standalone and main.params["eot"] == 1


@pytest.mark.parametrize("args,match", [
    (["--attack", "pgd"], "drop --attack"), (["--eps", "0.3"], "drop --eps"), (["--restarts", "3"], "drop --restarts"),
    (["--bi_gradient", "straight_through"], "drop --bi_gradient"), (["--budget", "0"], "--budget must be > 0"),
    (["--variant", "tri"], "give default, bi"), (["--undefended_dir", "/nonexistent"], "not a finished training run"),
    (["--cells_dir", "cells"], "apply to --suite paper only"), (["--norm", "l0"], "covers linf, l2, not l0"),
])
def test_suite_refuses_bad_flags(args, match, tmp_path):
    from dim_tf.eval.threat import EvalError

    (tmp_path / "manifest.json").write_text('{"model": "dim"}')  # all that is read before the flags are checked
    with pytest.raises(EvalError, match=match):
        suite.validate(eval_settings("--suite", "adaptive", "--model_dir", str(tmp_path), *args))


def test_suite_writes_the_report(mnist, mnist_folder, tmp_path, monkeypatch):
    import json

    from dim_tf.eval.suites import get

    # The whole report path with a short cascade (main attack, single step, Square; the full plan is tested above),
    # the target under L-inf only (--norm), and the biCNN reference.
    plan, probe_plan = planning.plan, planning.probe_plan
    monkeypatch.setattr(planning, "plan", lambda *a, **k: [s for s in plan(*a, **k)
                                                           if s.standalone or s.label == "square"])
    monkeypatch.setattr(planning, "probe_plan", lambda *a, **k: probe_plan(*a, **k)[:1])

    train = (mnist.train.images[:1500], mnist.train.labels[:1500])
    cnn_dir = save_model_dir(tmp_path / "cnn", "cnn", mnist_folder, train)
    out = tmp_path / "out"
    opts = eval_settings("--suite", "adaptive", "--model_dir", cnn_dir, "--variant", "bi", "--num_examples", "12",
                 "--budget", "0.05", "--undefended_dir", cnn_dir, "--output_dir", str(out), "--noprogress",
                 "--norm", "linf")
    lines = []
    report = get("adaptive").run(opts, ["dim_tf.eval"], lines.append)
    stored = json.loads((out / "adaptive.json").read_text())
    assert stored["schema"] == suite.SCHEMA and stored["seconds"]["total"] > 0
    (model,) = stored["models"]
    assert model["variant_name"] == "bicnn"
    # the weights it was made on, as --suite autoattack matches reports (the bi variant: the base model's weights)
    assert model["weights_fingerprint"] == weights_fingerprint(md.load(cnn_dir)[0])
    assert list(model["norms"]) == ["linf"]
    n = model["norms"]["linf"]
    assert len(n["broken"]) == len(n["distance"]) == len(n["found_by"]) == 12
    assert n["accuracy"] <= n["cascade_accuracy"] <= model["clean_accuracy"]
    assert [r["label"] for r in n["cascade"]] == ["bpda-st pgd_margin", "bpda-st fgsm", "square"]
    assert n["doubled"]["label"] == "bpda-st pgd_margin x2"
    assert all(os.path.exists(out / r["json"]) for r in n["cascade"] if r["attacked"])
    # Every sample counted broken has a verified adversarial within eps, named by the attack that found it.
    for broken, dist, by in zip(n["broken"], n["distance"], n["found_by"]):
        assert not broken or (dist <= 0.3 + 1e-4 and by)
    names = {c["name"] for c in stored["sanity"]}
    assert names == {"iterative_vs_single_step", "white_vs_black_box", "more_steps_and_restarts", "zero_gradient",
                     "without_defense", "large_eps"}
    bicnn = stored["references"]["bicnn"]
    assert [r["label"] for r in bicnn["cascade"]] == ["bpda-st pgd_margin", "bpda-st fgsm", "square"]
    assert 0 <= bicnn["accuracy"] <= 1 and len(stored["references"]["verdicts"]) == 3  # two published, the biCNN
    said = reporting.verdicts([{"variant": "bi", "variant_name": "bidim", "norms": {"linf": {"accuracy": 0.70}}}],
                          {"accuracy": 0.75})
    assert len(said) == 3 and "bidim does NOT beat the binarized CNN" in said[2] and "beats the binarized CNN" in said[0]
    text = (out / "adaptive.md").read_text()
    assert "Sanity checks" in text and "binary ABS" in text and "bicnn" in text
    assert any("sanity checks:" in line for line in lines)
    assert os.listdir(out / "attacks")
    assert report["num_examples"] == 12 and not math.isnan(n["accuracy"])
    # No absolute path in any report it wrote (committed reports are read on other machines).
    for path in [out / "adaptive.json", out / "adaptive.md", *(out / "attacks").iterdir()]:
        assert absolute_paths(path.read_text(), str(tmp_path), os.getcwd()) == [], path
    assert stored["undefended_dir"] == os.path.relpath(cnn_dir) and model["model_dir"] == os.path.relpath(cnn_dir)
