"""TFLite export (`dim_tf.export`) and the TFLite runtime (`dim_tf.lite`) on a small untrained DIM.

The model is untrained, so the accuracy checks run with relaxed thresholds (`Checks`); a separate test shows that
the strict checks really fail an export and leave nothing behind.
"""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from dim_tf import lite
from dim_tf.validation import InputError

import ai_edge_litert  # noqa: E402,F401  (a test extra: a missing runtime fails the suite, never skips it)

RELAXED = dict(max_accuracy_drop=1.0, min_agreement=0.0)
VERIFY_IMAGES = 200


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, mnist_folder):
    """An untrained DIM saved as a finished model folder (model.keras + manifest.json, what model_dir.load reads)."""
    import dataclasses

    import keras

    from dim_tf import model_dir as md, registry

    keras.utils.set_random_seed(0)
    cfg = registry.TrainConfig(model="dim")
    model = registry.build(cfg)
    folder = str(tmp_path_factory.mktemp("model") / "dim")
    os.makedirs(folder)
    md.save_model(model, folder)
    md.write_json(os.path.join(folder, md.MANIFEST), {
        "model": "dim", "dataset": "mnist", "data_source": mnist_folder, "config": dataclasses.asdict(cfg),
        "model_config": model.get_config(), "test_accuracy": {"dim": None, "bidim": None}})
    return folder


@pytest.fixture(scope="module")
def bundle(model_dir, mnist_folder, tmp_path_factory):
    """biDIM, int8, verified on 200 test images with relaxed thresholds."""
    from dim_tf.export import exporter

    out = str(tmp_path_factory.mktemp("bundles") / "bidim")
    exporter.export_bundle(model_dir, out, variant="bi", quantize="int8", data_dir=mnist_folder,
                           representative_samples=100, verify_images=VERIFY_IMAGES, checks=exporter.Checks(**RELAXED),
                           log=lambda *a: None)
    return out


def constant(value, n=1, dtype=np.uint8):
    return np.full((n, 28, 28, 1), value, dtype=dtype)


def test_bundle_files_and_metadata(bundle):
    assert sorted(os.listdir(bundle)) == ["bundle.json", "labels.txt", "model.tflite", "model_float.tflite"]
    assert [n for n in os.listdir(os.path.dirname(bundle)) if n.startswith(".")] == []  # no temporary folders left
    meta = json.load(open(os.path.join(bundle, "bundle.json")))
    assert meta["model_name"] == "bidim" and meta["variant"] == "bi" and meta["quantize"] == "int8"
    q = meta["input"]["model.tflite"]
    assert q["dtype"] == "uint8" and q["zero_point"] == 0 and q["scale"] == pytest.approx(1 / 255)
    assert meta["threshold"]["value"] == 0.5
    assert meta["outputs"]["names"] == ["numerators", "denominator", "label"]
    assert meta["outputs"]["scores"] == "numerators / max(denominator, min_denominator)"
    for key in ("keras", "quantized", "float", "agreement_quantized_vs_keras", "agreement_float_vs_keras"):
        assert 0.0 <= meta["accuracy"][key] <= 1.0, key
    assert meta["accuracy"]["test_images"] == VERIFY_IMAGES
    # float32 TFLite computes the Keras function (labels may still differ: the untrained model's scores tie)
    assert meta["verification"]["model_float.tflite"]["scores_close_to_keras"] == 1.0
    assert meta["verification"]["representative"]["samples"] == 100
    assert all(meta["verification"][f]["threshold_check"]["ok"] for f in ("model.tflite", "model_float.tflite"))
    for name, entry in meta["files"].items():
        assert entry["sha256"] == lite.sha256(os.path.join(bundle, name))
    assert {"tensorflow", "keras", "numpy", "ai_edge_litert"} <= set(meta["versions"])
    assert "internal" in meta["model_config"] and meta["train_config"]["model"] == "dim"  # (Keras may name it dim_1)
    assert open(os.path.join(bundle, "labels.txt")).read().split() == [str(i) for i in range(10)]


def test_signature_names(bundle):
    from ai_edge_litert.interpreter import Interpreter

    for filename, dtype in (("model.tflite", np.uint8), ("model_float.tflite", np.float32)):
        interpreter = Interpreter(model_path=os.path.join(bundle, filename))
        signatures = interpreter.get_signature_list()
        assert list(signatures) == ["serving_default"]
        assert signatures["serving_default"]["inputs"] == ["image"]
        assert sorted(signatures["serving_default"]["outputs"]) == ["denominator", "label", "numerators"]
        inputs = interpreter.get_signature_runner("serving_default").get_input_details()
        assert inputs["image"]["dtype"] == dtype
        assert list(inputs["image"]["shape_signature"]) == [-1, 28, 28, 1]


@pytest.mark.parametrize("which", ["quantized", "float"])
def test_threshold_agrees_with_keras_at_127_and_128(bundle, model_dir, which):
    b = lite.load_bundle(bundle, which)
    pred = b.predict(np.concatenate([constant(v) for v in (0, 127, 128, 255)]))
    np.testing.assert_array_equal(pred.scores[1], pred.scores[0])  # 127 -> 0, exactly as black
    np.testing.assert_array_equal(pred.scores[2], pred.scores[3])  # 128 -> 1, exactly as white
    assert not np.array_equal(pred.scores[0], pred.scores[3])
    # per pixel: a checkerboard of 127/128 is the checkerboard of 0/255
    board = (np.indices((28, 28)).sum(axis=0) % 2).astype(bool)[None, ..., None]
    mixed = np.where(board, 128, 127).astype(np.uint8)
    binary = np.where(board, 255, 0).astype(np.uint8)
    np.testing.assert_array_equal(b.predict(mixed).scores, b.predict(binary).scores)
    # the Keras biDIM thresholds the same way (x >= 0.5 on p / 255)
    from dim_tf import model_dir as md, registry

    bi = registry.bi_variant(md.load(model_dir)[0])
    k = np.asarray(bi(np.concatenate([constant(v, dtype=np.float32) / 255.0 for v in (0, 127, 128, 255)])))
    np.testing.assert_allclose(k[1], k[0])
    np.testing.assert_allclose(k[2], k[3])


def test_black_and_white_images_give_finite_scores(bundle):
    for which in ("quantized", "float"):
        b = lite.load_bundle(bundle, which)
        for images in (constant(0, 3), constant(255, 2), constant(0.0, 1, np.float32), constant(1.0, 1, np.float32)):
            pred = b.predict(images)
            assert np.isfinite(pred.scores).all() and pred.scores.shape == (len(images), 10)
            assert ((0 <= pred.labels) & (pred.labels < 10)).all()
            np.testing.assert_array_equal(pred.labels, pred.scores.argmax(axis=1))


def test_input_forms_agree(bundle, mnist):
    b = lite.load_bundle(bundle)
    x = np.round(mnist.test.images[:5] * 255).astype(np.uint8)
    ref = b.predict(x)
    assert b.predict(x.astype(np.float32) / 255.0).scores.tolist() == ref.scores.tolist()
    assert b.predict(x[..., 0]).scores.tolist() == ref.scores.tolist()  # [N, 28, 28]
    assert b.predict(x[0]).scores.tolist() == ref.scores[:1].tolist()  # one [28, 28, 1] image
    assert b.predict(x[0, ..., 0].astype(np.int64)).scores.tolist() == ref.scores[:1].tolist()
    assert ref.names == [str(i) for i in ref.labels]


def test_bad_inputs_are_clear_errors(bundle, tmp_path):
    b = lite.load_bundle(bundle)
    for bad, message in ((np.zeros((2, 27, 28, 1), np.uint8), "shape"), (np.zeros((28, 28, 3)), "shape"),
                         (np.full((28, 28), np.nan, np.float32), "NaN"), (np.full((28, 28), 2.0), "[0, 1]"),
                         (np.full((28, 28), 300), "0..255"), (np.zeros((0, 28, 28, 1), np.uint8), "empty"),
                         (np.full((28, 28), "a"), "numeric")):
        with pytest.raises(InputError, match=message.replace("[", r"\[").replace("]", r"\]").replace(".", r"\.")):
            b.predict(bad)
    np.save(tmp_path / "wide.npy", np.zeros((28, 30), np.uint8))
    with pytest.raises(lite.ImageError, match=r"\[28, 30\]"):
        lite.load_image(str(tmp_path / "wide.npy"))
    (tmp_path / "junk.png").write_bytes(b"not a png")
    with pytest.raises(lite.ImageError, match="not a readable image"):
        lite.load_image(str(tmp_path / "junk.png"))
    with pytest.raises(lite.ImageError, match="no such file"):
        lite.load_image(str(tmp_path / "missing.png"))
    assert lite.main([bundle, str(tmp_path / "wide.npy")]) == 2


def test_cli_prints_label_and_scores(bundle, tmp_path, capsys, mnist):
    from PIL import Image as pil
    digit = np.round(mnist.test.images[0, ..., 0] * 255).astype(np.uint8)
    pil.fromarray(digit).save(tmp_path / "digit.png")
    pil.fromarray(digit).resize((56, 56)).save(tmp_path / "big.png")
    np.save(tmp_path / "digit.npy", digit)
    expected = int(lite.load_bundle(bundle).predict(digit).labels[0])
    assert lite.main([bundle, str(tmp_path / "digit.png"), str(tmp_path / "digit.npy"), str(tmp_path / "big.png"),
                      "--json"]) == 0
    captured = capsys.readouterr()
    rows = [json.loads(line) for line in captured.out.splitlines()]
    assert [r["label"] for r in rows[:2]] == [expected, expected] and len(rows[0]["scores"]) == 10
    assert "resized to 28x28" in captured.err


def test_sha_mismatch_and_corrupt_bundles_are_errors(bundle, tmp_path):
    copy = str(tmp_path / "copy")
    shutil.copytree(bundle, copy)
    with open(os.path.join(copy, "model.tflite"), "ab") as f:
        f.write(b"\0")
    with pytest.raises(lite.BundleError, match="sha256"):
        lite.load_bundle(copy)
    lite.load_bundle(copy, "float")  # the other file is intact
    with open(os.path.join(copy, "bundle.json"), "w") as f:
        f.write("{not json")
    with pytest.raises(lite.BundleError, match="corrupt"):
        lite.load_bundle(copy)
    os.remove(os.path.join(copy, "bundle.json"))
    with pytest.raises(lite.BundleError, match="no bundle.json"):
        lite.load_bundle(copy)
    with pytest.raises(lite.BundleError, match="does not exist"):
        lite.load_bundle(str(tmp_path / "nowhere"))
    assert lite.main([str(tmp_path / "nowhere"), "x.npy"]) == 2


def test_runtime_does_not_import_tensorflow(bundle):
    code = ("import sys, numpy as np\n"
            "import dim_tf.lite\n"
            "assert 'tensorflow' not in sys.modules, 'import'\n"
            f"b = dim_tf.lite.load_bundle({bundle!r})\n"
            "b.predict(np.zeros((2, 28, 28, 1), np.uint8))\n"
            "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, 'predict'\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_failed_verification_raises_and_leaves_nothing(model_dir, mnist_folder, tmp_path):
    from dim_tf.export import exporter

    out = tmp_path / "new" / "bundle"
    with pytest.raises(exporter.ExportError) as err:
        exporter.export_bundle(model_dir, str(out), variant="default", quantize="none", data_dir=mnist_folder,
                               verify_images=50, checks=exporter.Checks(max_accuracy_drop=-1.0, min_agreement=1.01),
                               log=lambda *a: None)
    assert "agrees with keras on 1.0000" in str(err.value) and "accuracy" in str(err.value)
    assert os.listdir(tmp_path) == []  # neither the bundle, its temporary folder, nor the parent it created


def test_export_refuses_bad_requests(model_dir, bundle, tmp_path):
    from dim_tf.export import exporter

    with pytest.raises(exporter.ExportError, match="already exists"):
        exporter.export_bundle(model_dir, bundle)
    with pytest.raises(exporter.ExportError, match="unknown variant"):
        exporter.export_bundle(model_dir, str(tmp_path / "b"), variant="tri")
    assert os.listdir(tmp_path) == []
    proc = subprocess.run([sys.executable, "-m", "dim_tf.export", "--model_dir", model_dir, "--out", bundle],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "already exists" in proc.stderr


def test_benchmark_smoke(bundle):
    from dim_tf.export import benchmark

    rows = benchmark.benchmark(bundle, runs=3, warmup=1, log=lambda *a: None)
    assert set(rows) == {"tflite quantized (int8)", "tflite float (float32)"}
    assert all(r["median_ms"] > 0 and r["bytes"] > 0 for r in rows.values())


def test_interpreter_crash_in_verification_is_an_export_error(monkeypatch, tmp_path):
    """TFLite kernels abort (SIGABRT) rather than raise; the verification's child process turns that into an error."""
    from dim_tf.export import exporter

    real_run = subprocess.run
    monkeypatch.setattr(exporter.subprocess, "run", lambda cmd, **kw: real_run(
        [sys.executable, "-c", "import os, sys; print('kernel check failed', file=sys.stderr); os.abort()"], **kw))
    with pytest.raises(exporter.ExportError, match=r"model\.tflite on the test set failed \(signal 6\)"):
        exporter._run_bundle_model(str(tmp_path), "quantized", str(tmp_path / "x.npy"), str(tmp_path))
