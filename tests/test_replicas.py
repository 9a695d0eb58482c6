"""Attack batches split over replicas (dim_tf.eval.replicas): the split model equals the plain one, runs each slice
on its own device, and `run_attack` under MirroredStrategy over two logical CPUs gives the default strategy's
results; `python -m dim_tf.eval --strategy mirrored --cpu_devices 2` records its two replicas."""

import json
import os
import subprocess
import sys

import pytest

from dim_tf.eval.replicas import slice_sizes

HERE = os.path.dirname(os.path.abspath(__file__))
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}


@pytest.mark.parametrize("batch,parts,sizes", [(7, 2, [4, 3]), (250, 2, [125, 125]), (1, 2, [1, 0]),
                                               (10, 3, [4, 3, 3])])
def test_slice_sizes_are_near_equal_and_cover_the_batch(batch, parts, sizes):
    assert slice_sizes(batch, parts).numpy().tolist() == sizes


@pytest.fixture(scope="module")
def check(mnist_folder):
    out = subprocess.run([sys.executable, os.path.join(HERE, "replica_split_check.py"), mnist_folder],
                         capture_output=True, text=True, timeout=300, env=ENV)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_split_model_equals_the_plain_model(check):
    assert check["split_type"] == "SplitOverReplicas" and check["single_replica_unchanged"]
    for batch in ("batch7", "batch1"):
        figures = check[batch]
        assert figures["grad_scale"] > 1e-3, figures  # a real gradient flowed
        for key in ("logits", "grad", "nested_logits", "nested_grad"):
            tolerance = 1e-5 if "logits" in key else 1e-5 * figures["grad_scale"]
            assert figures[key] <= tolerance, (batch, key, figures)
    assert check["weight_grad"] < 1e-4
    assert check["slice_rows"] == {"7": [4, 3], "2": [1, 1], "1": [1]}


def test_each_slice_runs_forward_and_backward_on_its_own_device(check):
    devices = check["devices"]
    assert len(devices) == 2 and devices[0] != devices[1]
    assert check["forward_devices"] == devices
    assert check["backward_devices"] == devices


@pytest.mark.parametrize("attack", ["fgsm", "pgd"])
def test_benchmark_under_mirrored_strategy_matches_the_default(check, attack):
    default, mirrored = check["benchmark"][f"{attack}-default"], check["benchmark"][f"{attack}-mirrored"]
    assert default["replicas"] == 1 and mirrored["replicas"] == 2
    assert sum(default["clean_correct"]) >= 8 and any(default["success"])  # the tiny CNN learned; attacks bite
    for key in ("clean_correct", "success", "forward_passes", "backward_passes", "zero_gradient"):
        assert mirrored[key] == default[key], key
    assert default["forward_passes"] == sum(default["clean_correct"]) * (1 if attack == "fgsm" else 2)


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "dim_tf.eval", *args], capture_output=True, text=True, timeout=240,
                          env=ENV)


def test_cli_mirrored_over_two_cpus(tmp_path, mnist_folder):
    import keras

    from dim_tf import model_dir as md

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(), keras.layers.Dense(10)])
    md.save_model(model, str(tmp_path))
    md.write_json(str(tmp_path / md.MANIFEST), {"model": "linear", "dataset": "mnist", "data_source": mnist_folder})
    out = tmp_path / "fgsm.json"
    proc = run_cli("--model_dir", str(tmp_path), "--attack", "fgsm", "--num_examples", "8", "--noprogress",
                   "--strategy", "mirrored", "--cpu_devices", "2", "--output", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["strategy"] == "mirrored" and result["replicas"] == 2
    proc = run_cli("--model_dir", str(tmp_path), "--attack", "fgsm", "--cpu_devices", "0")
    assert proc.returncode == 2 and "error: --cpu_devices 0: must be >= 1" in proc.stderr
