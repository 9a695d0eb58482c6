"""`python -m dim_tf.eval --suite paper`: the worst-case aggregation (pure NumPy), the paper's numbers, bad input
refused before any work, and a tiny end-to-end suite (cells, tables, suite.json, resume, pictures). The cells
themselves (extension, a changed model, the listing, the budget): test_cells.py."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import eval_settings, save_model_dir
from dim_tf import model_dir as md
from dim_tf.eval import aggregate, paper_numbers as paper, tables
from dim_tf.eval.suites import paper as suite
from dim_tf.eval.threat import EvalError

INF = math.inf


def fake_result(name, kind, correct, eps, success, distance=None, minimal=None):
    """A `run_attack` result (the fields the aggregation reads) for `name` at one eps."""
    return {"attack": {"name": name, "kind": kind}, "threat_model": "l2", "clean_correct": correct,
            "results": [{"eps": eps, "success": success, "distance": distance or [None] * len(correct)}],
            "minimal_distance": None if minimal is None else {"distance": minimal}}


CORRECT = [True, True, True, True, True, False]
# A bounded attack at 1.5 breaks sample 0 (its adversarial lies at 1.5); a minimal attack finds sample 1 at 0.5,
# sample 4 at 1.2 (both within 1.5), sample 0 at 2.0 and sample 2 at 3.0 (beyond), nothing for sample 3.
BOUNDED = fake_result("pgd", "bounded", CORRECT, 1.5, [True, False, False, False, False, False],
                      distance=[1.5, 1.5, 1.5, 1.5, 1.5, None])
MINIMAL = fake_result("cw_l2", "minimal", CORRECT, 1.5, [False, True, False, False, True, False],
                      minimal=[2.0, 0.5, 3.0, None, 1.2, None])


def test_worst_case_conventions():
    a, b = aggregate.from_result(BOUNDED, 1.5), aggregate.from_result(MINIMAL, 1.5)
    np.testing.assert_array_equal(a.distance, [1.5, INF, INF, INF, INF, 0.0])  # misclassified clean: 0
    np.testing.assert_array_equal(b.distance, [2.0, 0.5, 3.0, INF, 1.2, 0.0])
    assert a.accuracy == pytest.approx(4 / 6) and b.accuracy == pytest.approx(3 / 6)
    worst = aggregate.worst_case([a, b])
    np.testing.assert_array_equal(worst.broken, [True, True, False, False, True, False])
    np.testing.assert_array_equal(worst.distance, [1.5, 0.5, 3.0, INF, 1.2, 0.0])
    assert worst.accuracy == pytest.approx(2 / 6)  # samples 2 and 3 survive both
    assert worst.median_distance == pytest.approx((1.2 + 1.5) / 2)  # over all 6: 0, .5, 1.2, 1.5, 3, inf
    assert not worst.masked
    assert aggregate.minimal_accuracy([a, b]) == (pytest.approx(0.5), 1, False)
    eps = [0.0, 1.0, 1.3, 1.5, 2.9, 3.0, 10.0]
    np.testing.assert_allclose(aggregate.accuracy_curve(worst.distance, eps), np.array([5, 4, 3, 2, 2, 1, 1]) / 6)
    # The curve at the threshold is the worst-case accuracy.
    assert aggregate.accuracy_curve(worst.distance, [1.5])[0] == pytest.approx(worst.accuracy)


def test_infinite_median_masking_and_json():
    never = fake_result("fgm", "bounded", [True] * 4, 1.5, [False] * 4, distance=[1.5] * 4)
    once = fake_result("fgsm", "bounded", [True] * 4, 1.5, [True, False, False, False], distance=[1.4] + [1.5] * 3)
    worst = aggregate.worst_case([aggregate.from_result(never, 1.5, masked=True), aggregate.from_result(once, 1.5)])
    assert worst.median_distance == INF and worst.masked and worst.accuracy == 0.75
    out = aggregate.to_json(worst)
    assert out["median_distance"] is None and out["distance"] == [1.4, None, None, None] and out["masked"]
    json.dumps(out, allow_nan=False)  # strict JSON: no Infinity
    assert aggregate.minimal_accuracy([aggregate.from_result(once, 1.5),
                                       aggregate.from_result(never, 1.5, masked=True)])[2] is True


def test_aggregation_refuses_inconsistent_results():
    other = fake_result("fgm", "bounded", [True, True, True, True, False, False], 1.5, [False] * 6)
    with pytest.raises(EvalError, match="disagree on which clean images"):
        aggregate.worst_case([aggregate.from_result(BOUNDED, 1.5), aggregate.from_result(other, 1.5)])
    with pytest.raises(EvalError, match="has no eps 0.3"):
        aggregate.from_result(BOUNDED, 0.3)
    with pytest.raises(EvalError):
        aggregate.worst_case([])


def test_paper_numbers_are_complete():
    for table, columns in ((paper.TABLE1, paper.TABLE1_COLUMNS), (paper.TABLE2, paper.TABLE2_COLUMNS)):
        for row in paper.ROWS:
            assert set(table[row.key]) == set(columns), row
        for norm in paper.NORM_ORDER:
            assert set(table[f"all:{norm}"]) == set(columns)
    assert set(paper.COLUMNS.values()) == set(paper.TABLE1_COLUMNS) | set(paper.TABLE2_COLUMNS)
    # Spot checks against the paper's text.
    assert paper.TABLE1["all:l2"]["DIM"] == (1.9, 66) and paper.TABLE1["minimal"]["biDIM"] == 45
    assert paper.TABLE1["linf:brendel_bethge"]["DIM"] == 9 and paper.TABLE1["l0:pointwise"]["Madry"] == 2
    assert paper.TABLE2["all:linf"]["Dn-singleIM"] == 6 and paper.TABLE2["l2:cw_l2"]["IM"] == 66
    assert paper.THRESHOLDS == {"l2": 1.5, "linf": 0.3, "l0": 12.0, "l1": 8.0}


# ------------------------------------------------------------------------------------------------------------------
# Bad input
# ------------------------------------------------------------------------------------------------------------------

def suite_flags(*args):
    return eval_settings("--suite", "paper", *args)


@pytest.mark.parametrize("args,match", [
    (["--output_dir", "/tmp/x"], "needs models"),
    (["--models", " , ", "--output_dir", "/tmp/x"], "needs models"),
    (["--models", "a"], "needs --output_dir"),
    (["--models", "a", "--output_dir", "/tmp/x", "--attack", "spsa"], "'spsa' is not in the paper suite"),
    (["--models", "a", "--output_dir", "/tmp/x", "--attack", "nope"], "'nope' is not in the paper suite"),
    (["--models", "a", "--output_dir", "/tmp/x", "--attack", "fgsm", "--params", "steps=3"],
     "no attack of this suite run"),
    (["--models", "a", "--output_dir", "/tmp/x", "--attack", "fgsm", "--params", "pgd.steps=3"],
     "'pgd' is not an attack of this suite run"),
    (["--models", "a", "--output_dir", "/tmp/x", "--attack", "pgd", "--params", "pgd.steps=x"], "must be an integer"),
    (["--models", "a", "--output_dir", "/tmp/x", "--eps", "0.1"], "--eps does not apply"),
    (["--models", "a", "--output_dir", "/tmp/x", "--bi_gradient", "straight_through"], "--suite adaptive"),
    (["--models", "a", "--output_dir", "/tmp/x", "--variant", "bi"], "--variant does not apply"),
    (["--models", "a", "--output_dir", "/tmp/x", "--num_examples", "10001"], "the test set holds"),
    (["--models", "x/a,y/a", "--output_dir", "/tmp/x"], "2 dirs named 'a'"),
    (["--models", "a", "--output_dir", "/tmp/x", "--max_minutes", "-1"], "--max_minutes must be >= 0"),
])
def test_bad_suite_input_is_refused_before_any_work(args, match, no_work):
    with pytest.raises(EvalError, match=match):
        suite.run(suite_flags(*args))


def test_attack_missing_from_the_table_is_refused(monkeypatch, no_work):
    from dim_tf.eval import attacks

    monkeypatch.delitem(attacks.ATTACKS, "fgm")
    with pytest.raises(EvalError, match="row 'L2 FGM' needs attack 'fgm', which is not in the attack table"):
        suite.run(suite_flags("--models", "a", "--output_dir", "/tmp/x"))


def test_unknown_model_dir_and_model_without_column(tmp_path, monkeypatch):
    monkeypatch.setattr("dim_tf.data.load", lambda *a, **k: pytest.fail("data loaded"))
    monkeypatch.setattr("dim_tf.eval.attack_run.run_attack", lambda *a, **k: pytest.fail("attack ran"))
    args = ("--output_dir", str(tmp_path / "out"), "--attack", "fgsm")
    with pytest.raises(md.ModelDirError, match="does not exist"):
        suite.run(suite_flags("--models", str(tmp_path / "nope"), *args))
    (tmp_path / "half").mkdir()
    with pytest.raises(md.ModelDirError, match="has no manifest.json"):
        suite.run(suite_flags("--models", str(tmp_path / "half"), *args))
    monkeypatch.setattr(md, "load", lambda d: (None, {"model": "resnet"}))
    with pytest.raises(EvalError, match="model 'resnet' is no column"):
        suite.run(suite_flags("--models", str(tmp_path / "half"), *args))


# ------------------------------------------------------------------------------------------------------------------
# End to end: a tiny CNN and an (untrained) DIM, three cheap attacks, 12 examples
# ------------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory, mnist, mnist_folder):
    root = tmp_path_factory.mktemp("models")
    cnn = save_model_dir(root / "cnn", "cnn", mnist_folder, (mnist.train.images[:1500], mnist.train.labels[:1500]))
    return cnn, save_model_dir(root / "dim", "dim", mnist_folder)


SUITE_ARGS = ("--attack", "fgsm,fgm,cw_l2", "--num_examples", "12", "--noprogress")


def run_suite(dirs, out, params="cw_l2.max_iterations=10,binary_search_steps=2"):
    logs = []
    summary = suite.run(suite_flags("--models", ",".join(dirs), "--output_dir", str(out), "--params", params,
                                    *SUITE_ARGS), ["dim_tf.eval", "--suite", "paper"], logs.append)
    return summary, logs


@pytest.fixture(scope="module")
def first_run(model_dirs, tmp_path_factory):
    out = tmp_path_factory.mktemp("suite")
    summary, logs = run_suite(model_dirs, out)
    return out, summary, logs


def test_suite_writes_cells_tables_and_summary(first_run):
    out, summary, logs = first_run
    cols = {c["label"]: c for c in summary["columns"]}
    assert list(cols) == ["CNN", "biCNN", "DIM", "biDIM"]
    for col in cols.values():
        assert set(col["attacks"]) == {"l2:fgm", "l2:cw_l2", "linf:fgsm"}
        stored = {}
        for key, entry in col["attacks"].items():
            with open(out / "cells" / entry["cell"]) as f:
                stored[key] = json.load(f)  # the default store: OUTPUT_DIR/cells
            norm, attack = key.split(":")
            assert entry["cell"].startswith(col["weights_fingerprint"] + os.sep)
            assert os.path.basename(entry["cell"]).startswith(f"{col['variant']}.{attack}.{norm}.")
            broken = np.array([c == "1" for c in stored[key]["broken"]])
            correct = np.array([c == "1" for c in stored[key]["correct"]])
            assert entry["accuracy"] == pytest.approx(np.mean(correct & ~broken))
            assert entry["seconds"] > 0 and entry["computed_now"] == 12 and entry["n"] == stored[key]["n"] == 12
        # All L2 from scratch: correct and broken by neither L2 attack.
        broken = np.array([a == "1" or b == "1" for a, b in zip(stored["l2:fgm"]["broken"],
                                                               stored["l2:cw_l2"]["broken"])])
        assert col["all"]["l2"]["accuracy"] == pytest.approx(np.mean(correct & ~broken))
        assert col["all"]["linf"]["accuracy"] == pytest.approx(col["attacks"]["linf:fgsm"]["accuracy"])
        assert col["minimal"]["accuracy"] == pytest.approx(min(a["accuracy"] for a in col["attacks"].values()))
        assert "l0" not in col["all"]
    assert cols["CNN"]["clean_accuracy"] > 0.5 and cols["CNN"]["all"]["linf"]["accuracy"] < 0.5
    # The exact binarization has no gradient: the gradient attacks are flagged, never reported as robustness.
    for label in ("biCNN", "biDIM"):
        assert all(a["masked"] for a in cols[label]["attacks"].values())
        assert cols[label]["all"]["l2"]["masked"] and cols[label]["minimal"]["masked"]
    assert not any(a["masked"] for a in cols["CNN"]["attacks"].values())
    assert summary["seconds"]["total"] > 0 and summary["seconds"]["attacks_computed_now"] > 0
    assert any("12 images attacked" in line for line in logs) and "suite done in" in logs[-1]
    with open(out / "suite.json") as f:
        assert json.load(f)["columns"][0]["label"] == "CNN"

    table1 = (out / "table1.md").read_text()
    assert "| attack | CNN | biCNN | biDIM | DIM |" in table1
    fgm = next(line for line in table1.splitlines() if line.startswith("| L2 FGM |"))
    cnn_cell = fgm.split("|")[2].strip()
    assert cnn_cell == f"{100 * cols['CNN']['attacks']['l2:fgm']['accuracy']:.1f} (paper 55)"
    assert "\u2020 (paper 92)" in fgm.split("|")[3]  # biCNN: masked mark
    assert tables.MASKED_NOTE in table1 and "not run (paper 15)" in table1 and "Madry" in table1
    assert "Command: `python -m dim_tf.eval --suite paper`" in table1
    table2 = (out / "table2.md").read_text()
    assert "| attack | CNN | DIM | biDIM |" in table2 and "singleIM" in table2


def test_pictures_are_written(first_run):
    out, summary, logs = first_run
    from dim_tf.eval import pictures

    if not pictures.available():
        assert summary["pictures"] == [] and any("pictures skipped" in line for line in logs)
        return
    assert sorted(summary["pictures"]) == ["curves.png", "grid-dim.png", "tsne-dim.png"]
    for name in summary["pictures"]:
        with open(out / name, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    os.remove(out / "curves.png")  # regenerated from suite.json alone, without TensorFlow work
    proc = subprocess.run([sys.executable, "-m", "dim_tf.eval.pictures", "--suite_dir", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert (out / "curves.png").exists()
    proc = subprocess.run([sys.executable, "-m", "dim_tf.eval.pictures", "--suite_dir", str(out / "nope")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "does not exist" in proc.stderr and "Traceback" not in proc.stderr


def test_resume_reuses_matching_cells(first_run, model_dirs, monkeypatch):
    out, first, _ = first_run
    from dim_tf.eval import attack_run

    real, calls = attack_run.run_attack, []

    def counting(model, images, labels, attack, *args, **kwargs):
        calls.append(attack.name)
        return real(model, images, labels, attack, *args, **kwargs)

    monkeypatch.setattr(attack_run, "run_attack", counting)
    monkeypatch.setattr("dim_tf.eval.pictures.available", lambda: False)  # drawn in the first run already
    again, logs = run_suite(model_dirs, out)
    assert calls == []  # every cell reused
    assert all(a["computed_now"] == 0 for c in again["columns"] for a in c["attacks"].values())
    assert [c["all"] for c in again["columns"]] == [c["all"] for c in first["columns"]]
    assert again["seconds"]["attacks_computed_now"] == 0
    assert any("pictures skipped" in line for line in logs)
    # Other parameters for one attack: only its cells are computed (CNN and biCNN).
    changed, _ = run_suite(model_dirs[:1], out, params="cw_l2.max_iterations=10,binary_search_steps=1")
    assert calls == ["cw_l2"] * 2
    for col in changed["columns"]:
        assert [k for k, a in col["attacks"].items() if a["computed_now"]] == ["l2:cw_l2"]


# ------------------------------------------------------------------------------------------------------------------
# Pictures' pieces
# ------------------------------------------------------------------------------------------------------------------

def test_tsne_keeps_separated_clusters_apart():
    from dim_tf.eval.pictures import tsne

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 30)
    x = rng.normal(0, 8, (3, 10))[labels] + rng.normal(0, 1, (90, 10))
    y = tsne(x, perplexity=10, iterations=400)
    assert y.shape == (90, 2) and np.isfinite(y).all()
    d = ((y[:, None] - y[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    assert np.mean(labels[d.argmin(axis=1)] == labels) > 0.95  # nearest neighbour in the same cluster
    centroids = np.stack([y[labels == k].mean(0) for k in range(3)])
    spread = max(np.linalg.norm(y[labels == k] - centroids[k], axis=1).mean() for k in range(3))
    assert min(np.linalg.norm(centroids[i] - centroids[j]) for i in range(3) for j in range(i)) > 2 * spread


def test_latents_of_separate_and_shared_encoders(mnist):
    from dim_tf import registry
    from dim_tf.eval.pictures import latents

    x = mnist.test.images[:5]
    assert latents(registry.build(registry.TrainConfig(model="dim")), x).shape == (5, 10, 10)
    assert latents(registry.build(registry.TrainConfig(model="single_im")), x).shape == (5, 1, 10)
    with pytest.raises(EvalError, match="need a DIM-family model"):
        latents(registry.build(registry.TrainConfig(model="cnn")), x)


def test_row_selection_per_column():
    """ABS runs the cheap gradient rows only, biABS (no input gradient) only the one-step ones; others all rows."""
    keys = lambda model, variant: {r.key for r in suite.rows_for(model, variant, list(paper.ROWS))}
    assert keys("dim", "default") == keys("dim", "bi") == {r.key for r in paper.ROWS}
    assert keys("abs", "default") == {"l2:pgd", "l2:fgm", "linf:pgd", "linf:fgsm"}
    assert keys("abs", "bi") == {"l2:fgm", "linf:fgsm"}
    assert set(suite.ROWS_BY_COLUMN) <= set(paper.COLUMNS.values())
