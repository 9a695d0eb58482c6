"""`--suite autoattack`: AutoAttack through ART breaks an undefended CNN; binarized variants go through the BPDA
surrogate and only what the exact model misclassifies counts; the worst case with the adaptive suite; the ART
shims; bad input refused before any work."""

import dataclasses
import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, eval_settings, save_model_dir
from dim_tf import model_dir as md
from dim_tf.eval.suites import autoattack
from dim_tf.eval.attacks import fab
from dim_tf.eval.suites.adaptive import report as adaptive_md
from dim_tf.eval.suites.autoattack import art_attacks, cascade, merge, report as report_md, targets
from dim_tf.eval.suites.autoattack.settings import AutoAttackConfig
from dim_tf.eval.threat import TOLERANCE, EvalError, ThreatModel

LINF, L2 = ThreatModel.LINF, ThreatModel.L2
# Small counts keep the file fast; the attacks and the cascade are those of the full suite.
QUICK = dict(apgd_steps=10, fab_steps=10, square_queries=50, targets=2, budget=0.1, progress=False)


def quiet(*_):
    pass


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, tiny_cnn, mnist_folder):
    """conftest's tiny undefended CNN as a finished model folder (a plain Keras model: no binarized variant)."""
    folder = tmp_path_factory.mktemp("tiny") / "tiny_cnn"
    os.makedirs(folder)
    md.save_model(tiny_cnn, str(folder))
    md.write_json(os.path.join(folder, md.MANIFEST), {"model": "tiny_cnn", "dataset": "mnist",
                                                      "data_source": mnist_folder})
    return str(folder)


@pytest.fixture(scope="module")
def cnn_dir(tmp_path_factory, mnist, mnist_folder):
    """A registry CNN (one epoch on 1,500 images): it has a binarized variant, biCNN."""
    train = (mnist.train.images[:1500], mnist.train.labels[:1500])
    return save_model_dir(tmp_path_factory.mktemp("cnn") / "cnn", "cnn", mnist_folder, train)


def exact_check(model, report_norm, x, y, norm):
    """Independently of the suite: every image it counts as broken is misclassified by `model` inside [0, 1] and the
    eps-ball."""
    from dim_tf import predict

    broken = np.asarray(report_norm["correct"]) & ~np.asarray(report_norm["robust"])
    adv = report_norm["adversarials"][broken]
    assert adv.min() >= 0.0 and adv.max() <= 1.0
    assert np.all(norm.distance(adv, x[broken]) <= report_norm["eps"] + TOLERANCE)
    assert np.all(predict.labels(model, adv) != y[broken])
    return int(broken.sum())


def test_autoattack_breaks_the_undefended_cnn(tiny_dir, tiny_cnn, mnist, tmp_path):
    out = tmp_path / "aa" / "autoattack.json"
    config = AutoAttackConfig(model_dirs=(tiny_dir,), norms=(LINF,), num_examples=100, output=str(out), **QUICK)
    report = autoattack.run_config(config, ["dim_tf.eval", "--suite", "autoattack", "--model_dir", tiny_dir], quiet)
    linf = report["models"][0]["norms"]["linf"]
    assert linf["clean_accuracy"] > 0.8
    assert linf["accuracy"] <= 0.03, linf["attacks"]  # near 0 at L-inf 0.3, as for every attack of the table
    test = mnist.test.take(100)
    assert exact_check(tiny_cnn, linf, test.images, test.labels, LINF) == int(np.sum(linf["correct"])) - round(
        100 * linf["accuracy"])
    stored = json.loads(out.read_text())
    assert stored["schema"] == autoattack.SCHEMA
    assert [a["attack"] for a in stored["models"][0]["norms"]["linf"]["attacks"]] == list(cascade.ATTACKS)
    assert stored["models"][0]["weights_fingerprint"] and stored["seconds"]["total"] > 0
    assert "adversarials" not in stored["models"][0]["norms"]["linf"]
    text = out.read_text() + (tmp_path / "aa" / "autoattack.md").read_text()
    assert str(tmp_path) not in text and '"/' not in out.read_text()  # no absolute paths
    assert "AutoAttack" in (tmp_path / "aa" / "autoattack.md").read_text()
    assert (tmp_path / "aa" / "autoattack.md").read_text() == report_md.render(stored)  # the JSON re-renders the .md


@pytest.mark.parametrize("suite", ["adaptive", "autoattack"])
def test_committed_suite_reports_are_their_json_rendered(suite):
    """Each committed report's .md is what its JSON renders to now, so it can be made again from the JSON alone."""
    render = {"adaptive": adaptive_md.render, "autoattack": report_md.render}[suite]
    paths = sorted(glob.glob(os.path.join(REPO, "eval", "results", f"{suite}*.json")))
    assert paths
    for path in paths:
        with open(path) as f, open(os.path.splitext(path)[0] + ".md") as g:
            assert render(json.load(f)) == g.read(), path


def test_a_cascade_already_at_the_output_is_kept_for_the_same_weights_and_settings(tiny_dir, tmp_path, monkeypatch):
    out = tmp_path / "aa.json"
    config = AutoAttackConfig(model_dirs=(tiny_dir,), norms=(LINF,), num_examples=20, output=str(out), **QUICK)
    autoattack.run_config(config, None, quiet)
    first = json.loads(out.read_text())
    attacked = []
    real = cascade.evaluate
    monkeypatch.setattr(cascade, "evaluate", lambda *a, **k: attacked.append(1) or real(*a, **k))
    again = autoattack.run_config(config, None, quiet)["models"][0]["norms"]["linf"]
    assert not attacked
    kept = first["models"][0]["norms"]["linf"]
    assert again["robust"] == kept["robust"] and again["attacks"] == kept["attacks"]
    assert again["reused"]["written"] == first["written"]
    assert "kept from the run" in (tmp_path / "aa.md").read_text()
    autoattack.run_config(dataclasses.replace(config, seed=1), None, quiet)  # other settings: attacked again
    assert attacked == [1]
    assert "reused" not in json.loads(out.read_text())["models"][0]["norms"]["linf"]


def test_bi_variant_goes_through_the_surrogate_and_counts_only_exact_misclassifications(cnn_dir, mnist, tmp_path):
    from dim_tf import registry

    config = AutoAttackConfig(model_dirs=(cnn_dir,), variants=("bi",), norms=(LINF,), num_examples=30,
                              output=str(tmp_path / "aa.json"), **QUICK)
    report = autoattack.run_config(config, None, quiet)
    entry = report["models"][0]
    assert entry["variant_name"] == "bicnn" and entry["surrogate"] == "straight_through"
    model, _ = md.load(cnn_dir)
    test = mnist.test.take(30)
    linf = entry["norms"]["linf"]
    assert exact_check(registry.bi_variant(model), linf, test.images, test.labels, LINF) > 0
    assert linf["accuracy"] < linf["clean_accuracy"]


def test_claims_the_exact_model_does_not_confirm_do_not_count(tiny_cnn, mnist):
    """The gradient attacks run on a surrogate whose forward pass differs from the exact biCNN's (the CNN without
    binarization): they fool the surrogate, most of that is refused, and what counts fools the exact model."""
    from dim_tf.models import BinarizedInput

    exact = BinarizedInput(tiny_cnn, "exact")
    target = targets.Target("tiny_cnn", {"model": "tiny_cnn"}, "bi", "bi_tiny_cnn", exact, tiny_cnn,
                            "straight_through", 1.0, "0" * 16)
    test = mnist.test.take(40)
    config = AutoAttackConfig(model_dirs=("tiny_cnn",), norms=(LINF,), **QUICK)
    result = cascade.evaluate(target, test.images, test.labels, LINF, config, quiet)
    by_name = {r["attack"]: r for r in result["attacks"]}
    assert by_name["apgd-ce"]["unverified"] > 0
    exact_check(exact, result, test.images, test.labels, LINF)


def test_bad_gradient_is_refused_before_any_attack(tmp_path, mnist_folder, monkeypatch):
    """A model with no input gradient and no surrogate for it: one EvalError before any attack."""
    from dim_tf import registry
    from dim_tf.models import BinarizedInput

    folder = tmp_path / "binarized"
    os.makedirs(folder)
    md.save_model(BinarizedInput(registry.build(registry.TrainConfig(model="cnn")), "exact"), str(folder))
    md.write_json(os.path.join(folder, md.MANIFEST), {"model": "binarized_cnn", "dataset": "mnist",
                                                      "data_source": mnist_folder})
    monkeypatch.setattr(cascade, "evaluate", lambda *a, **k: pytest.fail("attacked"))
    with pytest.raises(EvalError, match="has no input gradient.*no surrogate"):
        autoattack.run(eval_settings("--suite", "autoattack", "--model_dir", str(folder), "--output",
                                     str(tmp_path / "aa.json")))
    assert not os.path.exists(tmp_path / "aa.json")


@pytest.mark.parametrize("args,match", [
    (["--norm", "linf,l3"], "unknown norm 'l3'"),
    (["--norm", "l1"], "covers linf, l2"),
    (["--eps", "0.2"], "drop --eps"),
    (["--attack", "pgd"], "drop --attack"),
    (["--variant", "tri"], "give default, bi or default,bi"),
    (["--bi_gradient", "magic"], "unknown --bi_gradient"),
    (["--output", "out.txt"], "report's JSON"),
    (["--budget", "0"], "--budget must be > 0"),
    (["--max_minutes", "5"], "drop --max_minutes"),
])
def test_bad_flags_are_refused_before_any_work(args, match, no_work, tmp_path):
    (tmp_path / "manifest.json").write_text("{}")
    with pytest.raises(EvalError, match=match):
        autoattack.run(eval_settings("--suite", "autoattack", "--model_dir", str(tmp_path), *args))


def test_missing_art_names_the_extra(monkeypatch, no_work, tmp_path):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "art" else find_spec(name, *a))
    (tmp_path / "manifest.json").write_text("{}")
    with pytest.raises(EvalError, match=r'pip install -e "\.\[autoattack\]"'):
        autoattack.run(eval_settings("--suite", "autoattack", "--model_dir", str(tmp_path)))


def test_cli_refuses_with_one_error_line(tmp_path):
    (tmp_path / "manifest.json").write_text("{}")
    proc = subprocess.run([sys.executable, "-m", "dim_tf.eval", "--suite", "autoattack", "--model_dir",
                           str(tmp_path), "--norm", "l5"], capture_output=True, text=True, timeout=240,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert lines == ["error: unknown norm 'l5'; choose one of linf, l2, l1, l0"] and "Traceback" not in proc.stderr


def test_worst_case_merge_on_synthetic_samples():
    # 10 images: AutoAttack leaves 0-5 robust, the adaptive suite 2-7; 8, 9 misclassified for both.
    aa = np.array([1, 1, 1, 1, 1, 1, 0, 0, 0, 0], bool)
    adaptive = np.array([0, 0, 1, 1, 1, 1, 1, 1, 0, 0, 1, 1], bool)  # it attacked 12 images: only 10 compared
    out = merge.combine(aa, adaptive)
    assert out["num_examples"] == 10
    assert out["autoattack_accuracy"] == 0.6 and out["adaptive_accuracy"] == 0.6
    assert out["worst_case_accuracy"] == 0.4
    assert out["autoattack_only"] == [6, 7] and out["adaptive_only"] == [0, 1]
    entry = {"found_by": ["misclassified", None, "square", None], "broken": [False, False, True, False]}
    assert merge.adaptive_robust(entry).tolist() == [False, True, False, True]


def _adaptive_json(path, fingerprint=None, folder="runs/dim", variant="default"):
    entry = {"model_dir": folder, "variant": variant, "norms": {"linf": {
        "eps": 0.3, "found_by": ["misclassified", None, "square"], "broken": [False, False, True]}}}
    if fingerprint:
        entry["weights_fingerprint"] = fingerprint
    path.write_text(json.dumps({"schema": "dim_tf.eval.adaptive/1", "num_examples": 3, "seed": 0, "budget": 1,
                                "command": "python -m dim_tf.eval --suite adaptive", "models": [entry]}))
    return str(path)


def test_adaptive_report_matched_by_fingerprint_or_path(tmp_path):
    target = targets.Target(str(tmp_path / "runs" / "dim"), {}, "default", "dim", None, None, None, 30.0, "abc")
    os.makedirs(tmp_path / "runs" / "dim" / "eval" / "adaptive")
    found = _adaptive_json(tmp_path / "runs" / "dim" / "eval" / "adaptive" / "adaptive.json", "abc")
    match, note = merge.find(target, LINF, None)
    assert match.how == "fingerprint" and match.path == found and "fingerprint" in note
    assert merge.find(target, L2, None)[0] is None  # no L2 entry
    bare = _adaptive_json(tmp_path / "bare.json")
    match, note = merge.find(target, LINF, bare)
    assert match.how == "path" and "matched by path" in note
    result = {"eps": 0.3, "robust": [False, False, True], "correct": [False, True, True]}
    compared = merge.compare(LINF, result, match, note)
    assert compared["worst_case_accuracy"] == 0.0 and compared["autoattack_only"] == [1]
    assert compared["adaptive_only"] == [2] and compared["clean_agreement"] == 1.0
    other = _adaptive_json(tmp_path / "other.json", "fff")
    with pytest.raises(EvalError, match="changed since"):
        merge.find(target, LINF, other)
    elsewhere = dataclasses.replace(target, model_dir=str(tmp_path / "elsewhere" / "dim"), fingerprint="zzz")
    assert merge.find(elsewhere, LINF, None)[0] is None
    os.makedirs(tmp_path / "runs" / "dim" / "eval" / "older")
    _adaptive_json(tmp_path / "runs" / "dim" / "eval" / "older" / "adaptive.json")  # records no fingerprint
    match, note = merge.find(dataclasses.replace(target, fingerprint="new"), LINF, None)
    assert match is None and "records no weights fingerprint" in note
    assert not any(os.path.isabs(word.strip(",")) for word in note.split())  # the note goes into committed reports


def test_dlr_loss_equals_arts():
    """The vectorised DLR the suite hands ART computes ART's own loss (its class loops over the batch)."""
    import tensorflow as tf
    from art.attacks.evasion import AutoProjectedGradientDescent

    logits = np.random.default_rng(0).normal(size=(16, 10)).astype(np.float32)
    labels = np.eye(10, dtype=np.float32)[np.arange(16) % 10]
    estimator = art_attacks.classifier(lambda x: tf.zeros((len(x), 10)))
    theirs = AutoProjectedGradientDescent(estimator, loss_type="difference_logits_ratio", verbose=False)
    theirs_loss = theirs.estimator._loss_object
    ours = art_attacks.DifferenceLogitsRatio()
    for reduction in ("none", "mean"):
        theirs_loss.reduction = ours.reduction = reduction
        np.testing.assert_allclose(ours(labels, logits).numpy(), theirs_loss(labels, logits).numpy(), rtol=1e-5)


def test_square_l2_shim_patches_only_the_window_scale(tiny_cnn, mnist):
    """ART's L2 Square as shipped makes NaN images on MNIST; the shimmed one does not and stays in the ball."""
    import inspect

    from art.attacks.evasion import square_attack

    estimator = art_attacks.classifier(tiny_cnn)
    test = mnist.test.take(40)
    np.random.seed(0)
    adv = art_attacks.square(estimator, test.images, test.labels, L2, 1.5, 150, 250)
    assert np.isfinite(adv).all()
    assert np.all(L2.distance(adv, test.images) <= 1.5 + 1e-3)
    assert art_attacks.SQUARE_BUG in inspect.getsource(square_attack.SquareAttack.generate)  # what the shim fixes


def test_square_remembering_scores_changes_nothing_but_the_work(tiny_cnn, mnist):
    """Square on the classifier that remembers its last two calls' scores returns what it returns without (up to the
    last bit of a score computed in another batch)."""
    test = mnist.test.take(30)
    runs = []
    for remember in (False, True):
        np.random.seed(0)
        runs.append(art_attacks.square(art_attacks.classifier(tiny_cnn, remember=remember), test.images,
                                       test.labels, LINF, 0.3, 40, 250))
    np.testing.assert_allclose(runs[0], runs[1], atol=1e-6)


@pytest.mark.parametrize("norm", [LINF, L2])
def test_fab_hyperplane_step_is_minimal_and_in_the_box(norm):
    rng = np.random.default_rng(1)
    p, w, c = rng.uniform(0, 1, (5, 30)), rng.normal(size=(5, 30)), rng.normal(size=5)
    d = fab.hyperplane_step(p, w, c, norm)
    np.testing.assert_allclose((w * d).sum(axis=1), c, atol=1e-6)
    assert (p + d).min() >= -1e-12 and (p + d).max() <= 1 + 1e-12
    # A random feasible step of the same w.d is never shorter.
    for _ in range(20):
        e = fab.hyperplane_step(p, w + rng.normal(scale=0.3, size=w.shape), c, norm)
        e *= (c / np.where((w * e).sum(axis=1) == 0, 1, (w * e).sum(axis=1)))[:, None]
        ok = ((p + e).min(axis=1) >= 0) & ((p + e).max(axis=1) <= 1)
        assert np.all(norm.distance(d[ok], 0 * d[ok]) <= norm.distance(e[ok], 0 * e[ok]) + 1e-9)
