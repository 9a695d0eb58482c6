"""The paper suite's cells (dim_tf.eval.cells): reused when the weights and settings match (also for a model saved
again: the key is the weights, not the file), extended to more images by attacking only the new ones, refused on a
changed model with one error line, the missing-cells listing and the time budget; and no absolute path in any
report (the paper suite's here, the adaptive suite's in test_adaptive.py, the committed ones in eval/results/)."""

import glob
import json
import os
import re

import numpy as np
import pytest

from conftest import REPO, absolute_paths, eval_settings, save_model_dir
from dim_tf import model_dir as md
from dim_tf.eval import cells
from dim_tf.eval.suites import paper as suite
from dim_tf.eval.threat import EvalError

# FGSM only (CNN and biCNN: two cells), 4 images per chunk.
ARGS = ("--attack", "fgsm", "--batch_size", "4", "--noprogress")


@pytest.fixture(scope="module")
def cnn_dir(tmp_path_factory, mnist, mnist_folder):
    root = tmp_path_factory.mktemp("cell_models")
    return save_model_dir(root / "cnn", "cnn", mnist_folder, (mnist.train.images[:1500], mnist.train.labels[:1500]))


def run(model_dir, store, out, n, *extra, argv=("dim_tf.eval",)):
    logs = []
    summary = suite.run(eval_settings("--suite", "paper", "--models", str(model_dir), "--output_dir", str(out),
                                      "--cells_dir", str(store), "--num_examples", str(n), *ARGS, *extra),
                        list(argv), logs.append)
    return summary, logs


@pytest.fixture
def attacked(monkeypatch):
    """The images of every run_attack call, in order (the suite's attacks still run)."""
    from dim_tf.eval import attack_run

    real, calls = attack_run.run_attack, []

    def recording(model, images, labels, *args, **kwargs):
        calls.append(np.array(images))
        return real(model, images, labels, *args, **kwargs)

    monkeypatch.setattr(attack_run, "run_attack", recording)
    monkeypatch.setattr("dim_tf.eval.pictures.available", lambda: False)
    return calls


def read_cells(store) -> dict[str, dict]:
    found = {}
    for path in glob.glob(os.path.join(store, "*", "*.json")):
        with open(path) as f:
            found[os.path.basename(path).split(".")[0]] = json.load(f)  # default / bi
    return found


def test_a_model_saved_again_reuses_its_cells(cnn_dir, tmp_path, attacked):
    first, _ = run(cnn_dir, tmp_path / "cells", tmp_path / "out", 8)
    assert len(attacked) == 4  # 2 cells x 2 chunks of 4 images
    # The same weights saved again elsewhere (other file bytes, other path, same folder name): nothing recomputed.
    model, manifest = md.load(cnn_dir)
    again_dir = tmp_path / "elsewhere" / "cnn"
    again_dir.mkdir(parents=True)
    md.save_model(model, str(again_dir))
    md.write_json(str(again_dir / md.MANIFEST), manifest)
    with open(os.path.join(cnn_dir, md.MODEL_FILE), "rb") as a, open(again_dir / md.MODEL_FILE, "rb") as b:
        assert a.read() != b.read()
    again, logs = run(again_dir, tmp_path / "cells", tmp_path / "out2", 8)
    assert len(attacked) == 4 and again["seconds"]["attacks_computed_now"] == 0
    assert [c["attacks"] for c in again["columns"]] == [
        {k: {**a, "computed_now": 0, "seconds_now": 0.0} for k, a in c["attacks"].items()} for c in first["columns"]]
    assert "cells: 2 of 2 complete at 8 images" in logs[1]
    with open(tmp_path / "cells" / cells.index.INDEX) as f:
        recorded = json.load(f)["models"]["cnn"]
    assert recorded["fingerprint"] == first["columns"][0]["weights_fingerprint"]
    assert recorded["columns"] == ["CNN", "biCNN"]


def test_a_cell_is_extended_by_attacking_only_the_new_images(cnn_dir, tmp_path, mnist, attacked):
    run(cnn_dir, tmp_path / "cells", tmp_path / "out", 5)  # chunks of 4 and 1
    before = read_cells(tmp_path / "cells")
    del attacked[:]
    summary, _ = run(cnn_dir, tmp_path / "cells", tmp_path / "out", 10)
    # Per cell: images 5-8 and 9, the first N test images in order; nothing before image 5 again.
    assert [len(x) for x in attacked] == [4, 1, 4, 1]
    for chunks in (attacked[:2], attacked[2:]):
        np.testing.assert_array_equal(np.concatenate(chunks), mnist.test.images[5:10])
    after = read_cells(tmp_path / "cells")
    for variant, cell in after.items():
        old = before[variant]
        assert cell["n"] == 10 and [c["first"] for c in cell["chunks"]] == [0, 4, 5, 9]
        assert [c["seed"] for c in cell["chunks"]] == [0, 4, 5, 9]
        for key in ("correct", "broken"):
            assert cell[key][:5] == old[key]
        assert cell["distance"][:5] == old["distance"] and cell["chunks"][:2] == old["chunks"]
    assert all(a["n"] == 10 and a["computed_now"] == 5 for c in summary["columns"] for a in c["attacks"].values())
    # A shorter run reads the first N of a longer cell, and attacks nothing.
    short, _ = run(cnn_dir, tmp_path / "cells", tmp_path / "out", 3)
    assert len(attacked) == 4 and short["columns"][0]["attacks"]["linf:fgsm"]["n"] == 3


def test_a_changed_model_is_refused_with_one_line(cnn_dir, tmp_path, monkeypatch):
    cells.index.record(str(tmp_path / "cells"), "cnn", {
        "fingerprint": "0123456789abcdef", "model": "cnn", "columns": ["CNN", "biCNN"],
        "training_command": "python -m dim_tf.train --model cnn --model_dir runs/cnn --epochs 6",
        "trained_at_commit": "70ae462"})
    monkeypatch.setattr("dim_tf.data.load", lambda *a, **k: pytest.fail("data loaded"))
    monkeypatch.setattr("dim_tf.eval.attack_run.run_attack", lambda *a, **k: pytest.fail("attack ran"))
    with pytest.raises(EvalError) as refused:
        run(cnn_dir, tmp_path / "cells", tmp_path / "out", 4)
    message = str(refused.value)
    assert "\n" not in message and message.startswith("model 'cnn' changed:")
    assert "0123456789abcdef" in message and "--model cnn --model_dir runs/cnn --epochs 6" in message
    assert "another folder name" in message and "at commit 70ae462" in message
    assert not (tmp_path / "out").exists() and os.listdir(tmp_path / "cells") == [cells.index.INDEX]


def test_missing_cells_are_listed_with_their_cost_before_any_work(cnn_dir, tmp_path, attacked):
    run(cnn_dir, tmp_path / "cells", tmp_path / "out", 4)
    del attacked[:]
    summary, logs = run(cnn_dir, tmp_path / "cells", tmp_path / "out", 8, "--max_minutes", "0")
    assert attacked == []  # --max_minutes 0: list and render only
    start = logs.index(next(line for line in logs if line.startswith("cells: 0 of 2 complete at 8 images")))
    rows = logs[start + 2:start + 4]
    for row, column in zip(rows, ("CNN", "biCNN")):
        assert column in row and "L-inf FGSM" in row and "s/image, this cell)" in row
        assert re.search(r"FGSM\s+4\s+4\s", row)  # stored 4, to run 4
    assert logs[start + 4].startswith("missing: 2 cells, 8 images to attack; estimated ")
    assert [m["stored"] for m in summary["missing"]] == [4, 4] and all(m["estimate_seconds"] > 0
                                                                      for m in summary["missing"])
    table = (tmp_path / "out" / "table1.md").read_text()
    fgsm = next(line for line in table.splitlines() if line.startswith("| L-inf FGSM |"))
    assert "[n=4]" in fgsm and "not run (paper 15)" in table and "[n=K]: computed on the first K" in table
    # Without seconds of its own, a cell's cost comes from the other variant of the same weights, else from the same
    # kind of model under other weights, else it is unknown.
    scanned = cells.store.scan(str(tmp_path / "cells"))
    stored = next(s for s in scanned if s["variant"] == "default")
    rate = stored["seconds"] / stored["images"]
    bi_settings = {**stored["settings"], "variant": "bi", "bi_gradient": "exact"}
    bi = cells.store.CellId(stored["fingerprint"], "bi", "fgsm", "linf", cells.store.settings_hash(bi_settings))
    only_default = [s for s in scanned if s["variant"] == "default"]
    assert cells.plan.rate_for(bi, bi_settings, "cnn", only_default) == (
        pytest.approx(rate), "as the other variant of these weights")
    other = cells.store.CellId("f" * 16, "default", "fgsm", "linf", stored["settings_hash"])
    assert cells.plan.rate_for(other, stored["settings"], "cnn", only_default) == (
        pytest.approx(rate), f"as on {os.path.relpath(cnn_dir)}")
    assert cells.plan.rate_for(other, stored["settings"], "dim", only_default) == (None, "unknown")
    assert cells.plan.rate_for(other, {**stored["settings"], "seed": 1}, "cnn", scanned) == (None, "unknown")


def test_listing_and_budget():
    cell_id = cells.store.CellId("a" * 16, "bi", "boundary", "l2", "0" * 10)
    todos = [cells.plan.Todo(cell_id, "runs/dim", "dim", "biDIM", "L2 Boundary", 100, 1000, 2.0, "this cell"),
             cells.plan.Todo(cell_id, "runs/dim", "dim", "DIM", "L2 Boundary", 0, 1000),
             cells.plan.Todo(cell_id, "runs/dim", "dim", "DIM", "L2 PGD", 1000, 1000, 0.1, "this cell")]
    lines = cells.plan.listing(todos, "eval/results/cells")
    assert lines[0] == "cells: 1 of 3 complete at 1000 images (store eval/results/cells)"
    assert "biDIM" in lines[2] and "30 min (2 s/image, this cell)" in lines[2] and lines[3].endswith("unknown")
    assert lines[4] == ("missing: 2 cells, 1,900 images to attack; estimated 30 min for 1 of them, 1 of unknown "
                        "cost (no stored seconds yet)")
    now = [0.0]
    budget = cells.plan.Budget(2, clock=lambda: now[0])  # 2 minutes
    assert budget.allows(100) and budget.allows(None) and not budget.allows(121)
    now[0] = 119.0
    assert budget.allows(1) and not budget.allows(2) and budget.allows(None)
    now[0] = 120.0
    assert not budget.allows(None) and not budget.allows(0)
    assert cells.plan.Budget(None).allows(1e9)


def test_a_time_budget_stops_before_work_it_cannot_finish(cnn_dir, tmp_path, attacked):
    run(cnn_dir, tmp_path / "cells", tmp_path / "out", 4)  # measures the seconds per image
    per_image = min(sum(c["seconds"] for c in cell["chunks"]) / cell["n"]
                    for cell in read_cells(tmp_path / "cells").values())
    del attacked[:]
    # A budget shorter than one chunk of 4 images at the measured rate: nothing starts.
    summary, logs = run(cnn_dir, tmp_path / "cells", tmp_path / "out", 12, "--max_minutes", f"{per_image / 60:.6f}")
    assert attacked == [] and sum(1 for line in logs if ": not started (next chunk" in line) == 2
    table = (tmp_path / "out" / "table1.md").read_text()
    assert "[n=4]" in table and len(summary["missing"]) == 2


def test_reports_hold_no_absolute_path(cnn_dir, tmp_path, attacked):
    out, store = tmp_path / "out", tmp_path / "cells"
    argv = ["dim_tf.eval", "--suite", "paper", f"--models={os.path.abspath(cnn_dir)}", "--output_dir", str(out),
            "--cells_dir", str(store)]
    summary, _ = run(cnn_dir, store, out, 4, argv=argv)
    reports = [out / "table1.md", out / "table2.md", out / "suite.json", store / cells.index.INDEX,
               *glob.glob(os.path.join(store, "*", "*.json"))]
    for path in reports:
        text = open(path).read()
        assert absolute_paths(text, str(tmp_path), os.getcwd()) == [], path
    assert "--output_dir " + os.path.relpath(out) in summary["command"]
    assert f"--models={os.path.relpath(cnn_dir)}" in summary["command"]
    assert "Command: `python -m dim_tf.eval --suite paper" in (out / "table1.md").read_text()


def test_committed_reports_hold_no_absolute_path():
    files = [p for p in glob.glob(os.path.join(REPO, "eval", "results", "**", "*"), recursive=True)
             if p.endswith((".md", ".json"))]
    assert files
    for path in files:
        with open(path) as f:
            assert absolute_paths(f.read(), REPO) == [], path


def test_training_command_gives_settings_added_after_the_run_their_default():
    """A run trained before a setting existed (its config lacks it) had that setting's default: the command that
    retrains it names the default wherever the preset now says otherwise (dim_robust now trains D too)."""
    from dim_tf import registry

    old = {k: v for k, v in registry.PRESETS["dim_robust"][1].items() if k != "adv_denoiser_weight"}
    config = {"model": "dim", "preset": "dim_robust", **old}
    command = cells.index.training_command({"config": config}, "runs/dim_robust")
    assert command == "python -m dim_tf.train --model dim_robust --model_dir runs/dim_robust --adv_denoiser_weight 0.0"
    now = {**config, "adv_denoiser_weight": registry.PRESETS["dim_robust"][1]["adv_denoiser_weight"]}
    assert cells.index.training_command({"config": now}, "D") == "python -m dim_tf.train --model dim_robust --model_dir D"
