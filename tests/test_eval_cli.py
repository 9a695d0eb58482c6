"""`python -m dim_tf.eval`: bad input is refused before any work (exit 2, one line on stderr), and a run writes
one JSON of the documented schema."""

import json
import os
import subprocess
import sys

import pytest

from conftest import eval_settings, save_model_dir
from dim_tf import model_dir as md
from dim_tf.eval import single


@pytest.fixture(scope="module")
def cnn_dir(tmp_path_factory, mnist, mnist_folder):
    train = (mnist.train.images[:1500], mnist.train.labels[:1500])
    return save_model_dir(tmp_path_factory.mktemp("cnn"), "cnn", mnist_folder, train)


@pytest.fixture(scope="module")
def madry_dir(tmp_path_factory, mnist_folder):
    return save_model_dir(tmp_path_factory.mktemp("madry"), "madry", mnist_folder)


@pytest.mark.parametrize("args,match", [
    (["--attack", "deepfoo"], "unknown attack 'deepfoo'"),
    (["--attack", "pgd", "--norm", "l3"], "unknown norm 'l3'"),
    (["--attack", "pgd", "--norm", "l0"], "supports linf, l2, l1, not l0"),
    (["--attack", "pointwise", "--norm", "l0", "--eps", "12.5"], "whole number"),
    (["--attack", "fgsm", "--norm", "l2"], "supports linf, not l2"),
    (["--attack", "pgd", "--eps", "0"], r"outside the sensible range of linf: \(0, 1\]"),
    (["--attack", "pgd", "--eps", "0.1,1.2"], r"outside the sensible range of linf: \(0, 1\]"),
    (["--attack", "pgd", "--norm", "l2", "--eps", "28.5"], r"\(0, 28\]"),
    (["--attack", "pgd", "--norm", "l1", "--eps", "785"], r"\(0, 784\]"),
    (["--attack", "pgd", "--eps", "abc"], "not a number"),
    (["--attack", "pgd", "--num_examples", "10001"], "the test set holds 10000 images"),
    (["--attack", "pgd", "--num_examples", "0"], "the test set holds 10000 images"),
    (["--attack", "pgd", "--variant", "tri"], "unknown variant"),
    (["--attack", "pgd", "--bi_gradient", "magic"], "unknown --bi_gradient"),
    (["--attack", "pgd", "--params", "steps"], "key=value"),
    (["--attack", "pgd", "--params", "stepz=3"], "no parameter 'stepz'"),
    (["--attack", "pgd", "--params", "steps=1.5"], "must be an integer"),
    (["--attack", "pgd", "--restarts", "0"], "restarts"),
    (["--attack", "pgd", "--strategy", "tpu"], "unknown strategy"),
    (["--attack", "pgd", "--max_minutes", "5"], "apply to --suite paper only"),
    (["--attack", "pgd", "--output_dir", "out"], "--output_dir applies to --suite only"),
])
def test_bad_flags_are_refused_before_any_work(args, match, no_work):
    with pytest.raises(ValueError, match=match):
        single.run(eval_settings("--model_dir", "/nonexistent", *args))


def test_model_dir_without_manifest(tmp_path, monkeypatch):
    monkeypatch.setattr("dim_tf.data.load", lambda *a, **k: pytest.fail("data loaded"))
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(md.ModelDirError, match="has no manifest.json"):
        single.run(eval_settings("--model_dir", str(tmp_path), "--attack", "pgd"))
    with pytest.raises(md.ModelDirError, match="does not exist"):
        single.run(eval_settings("--model_dir", str(tmp_path / "nope"), "--attack", "pgd"))


def test_bi_variant_of_madry_is_refused(madry_dir, monkeypatch, tmp_path):
    monkeypatch.setattr("dim_tf.data.load", lambda *a, **k: pytest.fail("data loaded"))
    with pytest.raises(ValueError, match="has no binarized variant"):
        single.run(eval_settings("--model_dir", madry_dir, "--attack", "pgd", "--variant", "bi",
                      "--output", str(tmp_path / "x.json")))


def run_cli(*args, timeout=240):
    return subprocess.run([sys.executable, "-m", "dim_tf.eval", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})


def test_cli_exit_code_2_and_one_line_on_stderr(tmp_path):
    proc = run_cli("--model_dir", str(tmp_path), "--attack", "pgd", "--eps", "2")
    assert proc.returncode == 2
    assert "error: eps '2' is outside the sensible range of linf" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = run_cli("--model_dir", str(tmp_path), "--attack", "pgd")  # no manifest there
    assert proc.returncode == 2 and "has no manifest.json" in proc.stderr and "Traceback" not in proc.stderr
    assert not os.path.exists(tmp_path / "eval")


def test_cli_lists_the_attack_table():
    proc = run_cli("--attack", "list")
    assert proc.returncode == 0, proc.stderr
    for name in ("fgsm", "fgm", "pgd", "bim", "mim", "cw_l2", "spsa", "ddn", "deepfool", "brendel_bethge",
                 "boundary", "hop_skip_jump", "pointwise", "gaussian_noise", "uniform_noise"):
        assert f"\n{name} " in proc.stdout
    assert "no attack covers" not in proc.stdout


def check_schema(result, n, eps):
    assert result["schema"] == "dim_tf.eval.result/1"
    for key, kind in {"model": dict, "data": dict, "attack": dict, "threat_model": str, "num_examples": int,
                      "clean_accuracy": float, "clean_correct": list, "eps": list, "robust_accuracy": dict,
                      "results": list, "forward_passes": int, "backward_passes": int, "zero_gradient": bool,
                      "gradient_probe": dict, "out_of_bounds": int, "warnings": list, "seconds": float,
                      "versions": dict, "command": str, "written": str, "strategy": str}.items():
        assert isinstance(result[key], kind), key
    assert result["num_examples"] == n == len(result["clean_correct"])
    assert result["eps"] == eps and list(result["robust_accuracy"]) == [f"{e:g}" for e in eps]
    assert {"name", "family", "kind", "params", "restarts", "seed", "source"} <= set(result["attack"])
    assert {"tensorflow", "keras", "numpy", "cleverhans", "python"} <= set(result["versions"])
    for res, e in zip(result["results"], eps):
        assert res["eps"] == e
        assert len(res["success"]) == len(res["distance"]) == n
        assert 0.0 <= res["robust_accuracy"] <= result["clean_accuracy"]
        assert "median_distance" in res and "attack_success_rate" in res


def test_cli_writes_one_json(cnn_dir, tmp_path):
    out = tmp_path / "sub" / "pgd.json"
    proc = run_cli("--model_dir", cnn_dir, "--attack", "pgd", "--eps", "0.3,0.05", "--num_examples", "30",
                   "--batch_size", "16", "--params", "steps=3", "--output", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "pgd linf" in proc.stderr  # the progress bar
    assert "robust accuracy" in proc.stdout
    result = json.loads(out.read_text())
    check_schema(result, 30, [0.05, 0.3])
    assert result["model"]["name"] == result["model"]["variant_name"] == "cnn"
    assert result["attack"]["params"]["steps"] == 3
    assert result["clean_accuracy"] > 0.3
    assert not [f for f in os.listdir(out.parent) if f.startswith(".tmp")]  # written atomically


def test_bi_variant_with_exact_gradient_is_flagged(cnn_dir, tmp_path):
    result = single.run(eval_settings("--model_dir", cnn_dir, "--attack", "fgsm", "--variant", "bi",
                                      "--num_examples", "20", "--noprogress"), log=lambda *_: None)
    check_schema(result, 20, [0.3])
    assert result["model"]["variant_name"] == "bicnn" and result["zero_gradient"] is True
    assert os.path.exists(os.path.join(cnn_dir, "eval", "bicnn-fgsm-linf.json"))  # the default output path
