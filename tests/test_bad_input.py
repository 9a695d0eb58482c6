"""Bad input as a new user types it (issue 17): each case ends in one line `error: ...` that names the problem and
the fix (exit code 2), before any work where possible, with nothing half-written left behind; a Ctrl-C, an
offline start and `--help` behave; the programs print their own output only."""

import dataclasses
import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import eval_settings
from dim_tf import data, lite, model_dir as md, registry, train
from dim_tf.eval import single

# What a user's shell has: no TF_CPP_MIN_LOG_LEVEL, no CUDA_VISIBLE_DEVICES.
USER_ENV = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "CUDA_VISIBLE_DEVICES")}
NOISE = re.compile(r"absl::InitializeLog|^[IWE]\d{4} |cuInit|cuda|oneDNN|XNNPACK|Sharding callback|Traceback", re.M)
TINY = ("--model", "cnn", "--train_examples", "256", "--epochs", "1", "--batch_size", "64")
TINY_CONFIG = registry.TrainConfig(model="cnn", train_examples=256, epochs=1, batch_size=64)


def run(module, *args, env=None, timeout=300):
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=timeout,
                          env=env or USER_ENV)


def one_error_line(proc) -> str:
    """The only line on stderr, which must be an `error: ...` line with exit code 2."""
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), (proc.returncode, proc.stderr)
    return lines[0]


def saved_run(folder, model, manifest: dict) -> str:
    """A finished-looking run folder: `model` as model.keras and `manifest` as manifest.json."""
    os.makedirs(folder, exist_ok=True)
    md.save_model(model, str(folder))
    md.write_json(os.path.join(folder, md.MANIFEST), {"dataset": "mnist", "seed": 0, "test_accuracy": {}, **manifest})
    return str(folder)


@pytest.fixture(scope="module")
def models():
    import keras

    keras.utils.set_random_seed(0)
    return {name: registry.build(registry.TrainConfig(model=name)) for name in ("cnn", "dim")}


@pytest.fixture(scope="module")
def cnn_run(tmp_path_factory, mnist_folder):
    """A tiny training run that was killed in its first epoch (config.json only), finished as `python -m
    dim_tf.eval` says, by a user's shell (no TensorFlow environment variables): (folder, hint, process)."""
    folder = tmp_path_factory.mktemp("cnn_run") / "run"
    md.record_config(str(folder), TINY_CONFIG)
    with pytest.raises(md.ModelDirError, match="training did not finish there") as info:
        single.run(eval_settings("--model_dir", str(folder), "--attack", "fgsm"))
    hint = re.search(r"`(python -m dim_tf\.train [^`]*)`", str(info.value)).group(1)
    proc = subprocess.run([sys.executable, *hint.split()[1:]], capture_output=True, text=True, timeout=300,
                          env={**USER_ENV, data.DATA_DIR_ENV: mnist_folder})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return folder, hint, proc


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory):
    """A dim_tf.lite bundle whose model scores class 0 with the mean pixel value (the other nine: 0)."""
    import tensorflow as tf

    class Head(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 28, 28, 1], tf.float32, name="image")])
        def serve(self, image):
            mean = tf.reduce_mean(image, axis=[1, 2, 3])[:, None]
            scores = tf.concat([mean, tf.zeros_like(mean) * tf.ones([1, 9])], axis=1)
            return {"scores": scores, "label": tf.argmax(scores, axis=1, output_type=tf.int32)}

    head = Head()
    folder = tmp_path_factory.mktemp("bundle")
    (folder / "model.tflite").write_bytes(
        tf.lite.TFLiteConverter.from_concrete_functions([head.serve.get_concrete_function()], head).convert())
    (folder / "labels.txt").write_text("".join(f"{i}\n" for i in range(10)))
    files = {name: {"sha256": hashlib.sha256((folder / name).read_bytes()).hexdigest()}
             for name in ("model.tflite", "labels.txt")}
    (folder / lite.BUNDLE_JSON).write_text(json.dumps({
        "format": lite.FORMAT, "format_version": lite.FORMAT_VERSION, "files": files,
        "models": {"quantized": "model.tflite"}, "signature": "serving_default",
        "outputs": {"names": ["label", "scores"], "scores": "scores"}}))
    return str(folder)


# 1. --epochs 0 / --denoiser_epochs -1, and a manifest of an untrained model
def test_zero_epochs_are_refused_and_an_untrained_manifest_is_not_evaluated(tmp_path, models, monkeypatch):
    for name, value in (("epochs", 0), ("epochs", -1), ("denoiser_epochs", 0)):
        with pytest.raises(ValueError, match=f"--{name} must be >= 1"):
            registry.TrainConfig(**{name: value})
    with pytest.raises(ValueError, match="--abs_calibration_examples must be >= 0, got -1"):
        registry.TrainConfig(model="abs", abs_calibration_examples=-1)
    folder = saved_run(tmp_path / "run", models["cnn"], {"model": "cnn", "stages": {"classifier": {"epochs": 0}}})
    monkeypatch.setattr("dim_tf.data.load", lambda *a, **k: pytest.fail("data loaded"))
    with pytest.raises(md.ModelDirError, match=r"untrained model \(stage classifier ran 0 epochs\).*--epochs >= 1"):
        single.run(eval_settings("--model_dir", folder, "--attack", "fgsm", "--output", str(tmp_path / "r.json")))
    from dim_tf.export import exporter

    with pytest.raises(md.ModelDirError, match="untrained model"):
        exporter.export_bundle(folder, str(tmp_path / "bundle"), log=lambda *_: None)
    assert not os.path.exists(tmp_path / "bundle") and not os.path.exists(tmp_path / "r.json")


# 2. manifest.json and model.keras from different runs
@pytest.mark.parametrize("file_model,manifest_model", [("cnn", "dim"), ("dim", "cnn")])
def test_manifest_that_does_not_match_the_model_file(tmp_path, models, monkeypatch, file_model, manifest_model):
    folder = saved_run(tmp_path / "run", models[file_model], {"model": manifest_model})
    monkeypatch.setattr("dim_tf.data.load", lambda *a, **k: pytest.fail("data loaded"))
    message = f"holds a {file_model} model but .*manifest.json says '{manifest_model}'.*new --model_dir"
    with pytest.raises(md.ModelDirError, match=message):
        single.run(eval_settings("--model_dir", folder, "--attack", "fgsm", "--output", str(tmp_path / "r.json")))
    from dim_tf.export import exporter

    with pytest.raises(md.ModelDirError, match=message):
        exporter.export_bundle(folder, str(tmp_path / "bundle"), log=lambda *_: None)
    assert not os.path.exists(tmp_path / "bundle")


# 3. a 16-bit grayscale PNG
def test_16_bit_png_is_scaled_not_clipped(tmp_path, tiny_bundle, capsys):
    from PIL import Image

    levels = np.zeros((28, 28), np.uint16)
    levels[8:20, 8:20] = 1000  # dark grey: 1000 / 65535 of white
    levels[0, 0] = 65535
    path = str(tmp_path / "digit16.png")
    Image.fromarray(levels).save(path)
    with pytest.warns(UserWarning, match="16-bit grayscale image scaled to 8 bits"):
        x = lite.load_image(path)
    assert x.dtype == np.uint8 and x[10, 10, 0] == 4 and x[0, 0, 0] == 255 and x[27, 27, 0] == 0
    assert lite.main([tiny_bundle, path, "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["scores"][0] < 0.05  # the mean pixel; clipped to white it was 0.18
    assert "16-bit grayscale image scaled to 8 bits" in err


# 4 and 11. a failed start leaves nothing behind and locks nothing; a run prints only its own output
def test_failed_start_leaves_nothing_and_locks_nothing(tmp_path, cnn_run):
    folder = tmp_path / "run"
    with pytest.raises(data.DataError, match="does not exist"):
        train.train(TINY_CONFIG, str(folder), str(tmp_path / "no_such_folder"), None)
    assert not folder.exists()
    # The settings of a start that finished no epoch (e.g. fewer examples than one batch) lock nothing.
    md.record_config(str(folder), dataclasses.replace(TINY_CONFIG, train_examples=10))
    md.prepare(str(folder), TINY_CONFIG)
    finished, _, proc = cnn_run  # a folder whose first start was killed: its command ran
    assert "test accuracy: cnn" in proc.stdout
    assert not NOISE.search(proc.stderr), proc.stderr  # no CUDA/absl start-up notes, no checkpoint INFO lines
    with pytest.raises(md.ModelDirError, match="other settings.*re-run without those flags"):
        md.prepare(str(finished), dataclasses.replace(TINY_CONFIG, batch_size=32))  # it finished an epoch: locked


# 5. --batch_size 0 / -5
def test_bad_batch_size_is_one_line_and_writes_nothing(tmp_path, mnist_folder):
    folder = tmp_path / "run"
    line = one_error_line(run("dim_tf.train", "--model_dir", str(folder), "--data_dir", mnist_folder,
                              *TINY, "--batch_size", "0"))
    assert "--batch_size must be >= 1, got 0" in line and not folder.exists()
    with pytest.raises(ValueError, match="--batch_size must be >= 1, got -5"):
        registry.TrainConfig(batch_size=-5)
    with pytest.raises(ValueError, match="--train_examples must be >= 1, got 0"):
        registry.TrainConfig(train_examples=0)


# 6. the hint of eval on an unfinished run works as printed
def test_unfinished_run_hint_works_as_printed(cnn_run):
    folder, hint, proc = cnn_run
    assert hint == f"python -m dim_tf.train --model_dir {folder}"
    _, manifest = md.load(str(folder))
    assert manifest["config"] == dataclasses.asdict(TINY_CONFIG)
    # Settings not given come from config.json; a setting given that differs is refused.
    assert train.settings(str(folder), registry.TrainConfig(), set()) == TINY_CONFIG
    asked = train.settings(str(folder), registry.TrainConfig(model="dim"), {"model"})
    assert asked == dataclasses.replace(TINY_CONFIG, model="dim")
    with pytest.raises(md.ModelDirError, match=r"other settings \{'model': \('cnn', 'dim'\)\}"):
        md.prepare(str(folder), asked)


# 7. eval --output FOLDER
def test_eval_output_that_is_a_folder_is_refused_before_any_work(tmp_path, no_work):
    with pytest.raises(ValueError, match=r"--output '.*' is a folder; give the result's file name"):
        single.run(eval_settings("--model_dir", str(tmp_path), "--attack", "fgsm", "--output", str(tmp_path)))
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(ValueError, match=r"a_file is a file, not a folder\); pick another --output"):
        single.run(eval_settings("--model_dir", str(tmp_path), "--attack", "fgsm",
                           "--output", str(tmp_path / "a_file" / "r.json")))


# 8. Ctrl-C during training
def test_ctrl_c_prints_one_line_and_how_to_resume(tmp_path, mnist_folder):
    folder = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "dim_tf.train", "--model_dir", str(folder), "--data_dir", mnist_folder, "--model",
         "cnn", "--train_examples", "200", "--batch_size", "50", "--epochs", "50"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=USER_ENV,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # a shell may start us ignoring SIGINT
    deadline = time.time() + 300
    while not md.finished_epochs(str(folder)) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    lines = err.strip().splitlines()
    assert proc.returncode == 130 and len(lines) == 1, err
    assert re.fullmatch(r"interrupted after epoch \d+ of the classifier stage \(saved in .*\); re-run the same "
                        r"command to resume", lines[0]), lines


# 9. offline without --data_dir
@pytest.mark.parametrize("network", ["no_name", "hangs"])
def test_offline_start_fails_in_seconds(tmp_path, monkeypatch, network):
    import tensorflow_datasets as tfds

    def connect(*_, **__):
        if network == "hangs":
            time.sleep(8)
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))  # nothing cached
    monkeypatch.setattr(socket, "create_connection", connect)
    monkeypatch.setattr(data, "PROBE_SECONDS", 1.0)
    monkeypatch.setattr(tfds, "load", lambda *a, **k: pytest.fail("tensorflow-datasets asked to download"))
    start = time.time()
    with pytest.raises(data.DataError, match=r"storage\.googleapis\.com.*--data_dir or \$DIM_TF_DATA_DIR"):
        data.load("mnist", None)
    assert time.time() - start < 5


# 10. messages name the real problem and the full path
def test_messages_name_the_problem(tmp_path, models, monkeypatch, mnist_folder):
    folder = saved_run(tmp_path / "run", models["cnn"], {"model": "cnn"})
    path = os.path.join(folder, md.MODEL_FILE)
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)
    with pytest.raises(md.ModelDirError, match="model.keras is truncated or corrupt") as info:
        md.load(folder)
    assert "File not found" not in str(info.value)
    # IDX errors give the file's full path.
    idx = tmp_path / "idx"
    idx.mkdir()
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        os.symlink(os.path.join(os.path.abspath(mnist_folder), name), idx / name)
    (idx / "t10k-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x01" + bytes(12))
    with pytest.raises(data.DataError, match=re.escape(str(idx / "t10k-images-idx3-ubyte")) + ": magic number 2049"):
        data.load("mnist", str(idx))
    # A bad $DIM_TF_DATA_DIR is named as such; a file is not "missing".
    monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(data.DataError, match=r"\(from \$DIM_TF_DATA_DIR\) does not exist; set \$DIM_TF_DATA_DIR"):
        data.load("mnist", None)
    with pytest.raises(data.DataError, match=r"\(from \$DIM_TF_DATA_DIR\)"):
        data.load("mnist", data.data_dir_for(None, {}))  # eval and export pass the variable's value on
    monkeypatch.setenv(data.DATA_DIR_ENV, str(idx))
    with pytest.raises(data.DataError, match=r"magic number.*comes from \$DIM_TF_DATA_DIR"):
        data.load("mnist", None)
    with pytest.raises(data.DataError, match="is a file, not a folder"):
        data.load("mnist", path)
    with pytest.raises(md.ModelDirError, match="is a file, not a folder"):
        md.load(path)


# 11. the on-device runtime prints its own output only
def test_lite_prints_no_xnnpack_line(tmp_path, tiny_bundle):
    np.save(tmp_path / "digit.npy", np.zeros((28, 28), np.uint8))
    proc = run("dim_tf.lite", tiny_bundle, str(tmp_path / "digit.npy"))
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert "digit.npy: 0 (label 0)" in proc.stdout


# 12. --help
def test_help_exits_0():
    proc = run("dim_tf.benchmark", "--help")
    assert proc.returncode == 0 and "--model_dirs" in proc.stdout and proc.stderr == "", proc.stderr


def test_a_refusal_is_one_line_and_a_library_failure_keeps_its_traceback(capsys):
    """`console.refuse`: an error this project raises is its one `error:` line (exit code 2); a ValueError raised
    inside a library while working (here json's, like TensorFlow's `in user code:` an hour into a suite) is raised
    again, traceback and all, instead of being shown as a line that names nothing."""
    from dim_tf import console
    from dim_tf.eval.threat import ThreatModel

    try:
        ThreatModel.parse("l3")
    except ValueError as e:
        assert console.refuse(e) == 2
        line = f"error: {e}\n"
    assert capsys.readouterr().err == line and "l3" in line
    with pytest.raises(json.JSONDecodeError) as raised:
        try:
            json.loads("{")
        except ValueError as e:
            console.refuse(e)
    assert "json" in raised.traceback[-1].path.parts and capsys.readouterr().err == ""
