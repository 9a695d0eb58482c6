"""The training CLI end to end on real MNIST: it learns, it resumes after a kill, it refuses bad input."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from dim_tf import model_dir, registry

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}


def train_cmd(folder, mnist_folder, *extra):
    return [sys.executable, "-m", "dim_tf.train", "--model_dir", str(folder), "--data_dir", mnist_folder, *extra]


def run(cmd, timeout=600):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=ENV)


def test_dim_learns_on_a_real_mnist_subset(tmp_path, mnist_folder, mnist):
    out = run(train_cmd(tmp_path, mnist_folder, "--model", "dim", "--train_examples", "10000", "--epochs", "4",
                        "--denoiser_epochs", "2", "--noise_warmup_steps", "100"))
    assert out.returncode == 0, out.stderr[-3000:]
    model, manifest = model_dir.load(str(tmp_path))
    assert manifest["model"] == "dim" and manifest["config"]["train_examples"] == 10000
    assert set(manifest["test_accuracy"]) == {"dim", "bidim"}
    assert manifest["test_accuracy"]["dim"] > 0.75, manifest["test_accuracy"]  # chance is 0.10
    assert manifest["test_accuracy"]["bidim"] > 0.4, manifest["test_accuracy"]  # measured 0.88 and 0.59
    assert {"tensorflow", "keras", "numpy"} <= set(manifest["versions"])
    assert manifest["versions"].get("dim_tf_commit") == model_dir.source_commit()  # the code that made the weights
    assert set(manifest["stages"]) == {"denoiser", "internal"} and manifest["training_seconds"] > 0
    predicted = model(mnist.test.images[:500]).numpy().argmax(1)
    assert np.mean(predicted == mnist.test.labels[:500]) > 0.75
    assert os.listdir(tmp_path / "logs" / "internal")  # TensorBoard events
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp-")]


def test_the_code_that_trains_is_named_by_its_commit():
    """A fingerprint is reproduced by the code that made it (70ae462 changed training's arithmetic), so results name
    the commit; outside a git checkout there is none to name."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(model_dir.__file__)))
    head = subprocess.run(["git", "-C", root, "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode:
        pytest.skip("not a git checkout")
    assert model_dir.source_commit().split("+")[0] == head.stdout.strip()
    versions = model_dir.library_versions()
    assert versions["dim_tf_commit"] == model_dir.source_commit() and versions["cpu"]  # and the machine's kind


def test_killed_run_resumes_from_its_last_checkpoint(tmp_path, mnist_folder):
    cmd = train_cmd(tmp_path, mnist_folder, "--model", "im", "--train_examples", "1000", "--batch_size", "50",
                    "--epochs", "12")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    # The manager's state file is written after the checkpoint's own files: waiting for ckpt-1.index alone let a kill
    # land between the two on a loaded machine, and the run then (rightly) started over.
    first = tmp_path / "checkpoints" / "internal" / "checkpoint"
    deadline = time.time() + 300
    while not first.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert first.exists()
    assert not (tmp_path / model_dir.MANIFEST).exists() and not (tmp_path / model_dir.MODEL_FILE).exists()
    out = run(cmd)
    assert out.returncode == 0, out.stderr[-3000:]
    log = out.stdout + out.stderr
    assert "resuming after epoch" in log
    resumed_after = int(log.split("resuming after epoch ")[1].split()[0])
    assert 1 <= resumed_after < 12
    assert log.count("[internal] epoch ") == 2 * (12 - resumed_after)  # "epoch k/12" and "epoch k: loss" lines
    _, manifest = model_dir.load(str(tmp_path))
    assert manifest["stages"]["internal"]["epochs"] == 12


def test_unknown_model_is_refused(tmp_path, mnist_folder):
    out = run(train_cmd(tmp_path, mnist_folder, "--model", "bidim"))
    assert out.returncode != 0 and "--model" in out.stderr and "dim" in out.stderr
    with pytest.raises(ValueError, match="inference variants"):
        registry.TrainConfig(model="bidim")


def test_bad_model_dirs(tmp_path, mnist_folder):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    out = run(train_cmd(blocker / "sub", mnist_folder, "--model", "cnn"))
    assert out.returncode == 2 and "not writable" in out.stderr
    with pytest.raises(model_dir.ModelDirError, match="no manifest.json"):
        model_dir.load(str(tmp_path))
    with pytest.raises(model_dir.ModelDirError, match="does not exist"):
        model_dir.load(str(tmp_path / "missing"))
    model_dir.record_config(str(tmp_path / "run"), registry.TrainConfig(model="cnn"))
    model_dir.prepare(str(tmp_path / "run"), registry.TrainConfig(model="dim"))  # no epoch finished: not locked
    (tmp_path / "run" / "checkpoints" / "classifier").mkdir(parents=True)
    (tmp_path / "run" / "checkpoints" / "classifier" / "checkpoint").write_text('model_checkpoint_path: "ckpt-1"\n')
    with pytest.raises(model_dir.ModelDirError, match="other settings"):
        model_dir.prepare(str(tmp_path / "run"), registry.TrainConfig(model="dim"))


def test_corrupt_checkpoint_and_model_are_clear_errors(tmp_path, mnist_folder):
    cmd = train_cmd(tmp_path, mnist_folder, "--model", "single_im", "--train_examples", "256", "--epochs", "1")
    assert run(cmd).returncode == 0
    data_file = next(p for p in (tmp_path / "checkpoints" / "internal").iterdir() if ".data-" in p.name)
    data_file.write_bytes(b"garbage")
    (tmp_path / model_dir.MODEL_FILE).write_bytes(b"garbage")
    with pytest.raises(model_dir.ModelDirError, match="truncated or corrupt"):
        model_dir.load(str(tmp_path))
    out = run(cmd)
    assert out.returncode == 2 and "corrupt" in out.stderr, out.stderr[-2000:]
    json.loads((tmp_path / model_dir.CONFIG).read_text())
