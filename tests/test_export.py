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

from conftest import absolute_paths, untrained_model_dir
from dim_tf import lite
from dim_tf.validation import InputError

import ai_edge_litert  # noqa: E402,F401  (a test extra: a missing runtime fails the suite, never skips it)

RELAXED = dict(max_accuracy_drop=1.0, min_agreement=0.0)
VERIFY_IMAGES = 200


def export_bi(model_dir: str, out: str, data_dir: str) -> str:
    """The binarized variant, int8, verified on 200 test images with relaxed thresholds."""
    from dim_tf.export import exporter

    exporter.export_bundle(model_dir, out, variant="bi", quantize="int8", data_dir=data_dir,
                           representative_samples=100, verify_images=VERIFY_IMAGES, checks=exporter.Checks(**RELAXED),
                           log=lambda *a: None)
    return out


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, mnist_folder):
    """An untrained DIM."""
    return untrained_model_dir(str(tmp_path_factory.mktemp("model") / "dim"), "dim", mnist_folder)


@pytest.fixture(scope="module")
def bundle(model_dir, mnist_folder, tmp_path_factory):
    """biDIM, int8 (see `export_bi`)."""
    return export_bi(model_dir, str(tmp_path_factory.mktemp("bundles") / "bidim"), mnist_folder)


@pytest.fixture(scope="module")
def cnn_bundle(mnist_folder, tmp_path_factory):
    """(model dir, biCNN int8 bundle) of an untrained CNN. Unlike the untrained DIM's int8 file, which puts every
    image in class 0, its labels vary with the image, so a replay test can see the wrong images or model."""
    folder = tmp_path_factory.mktemp("cnn")
    model_dir = untrained_model_dir(str(folder / "cnn"), "cnn", mnist_folder)
    return model_dir, export_bi(model_dir, str(folder / "bicnn"), mnist_folder)


def constant(value, n=1, dtype=np.uint8):
    return np.full((n, 28, 28, 1), value, dtype=dtype)


def test_bundle_files_and_metadata(bundle):
    assert sorted(os.listdir(bundle)) == ["bundle.json", "labels.txt", "model.tflite", "model_float.tflite"]
    assert [n for n in os.listdir(os.path.dirname(bundle)) if n.startswith(".")] == []  # no temporary folders left
    text = open(os.path.join(bundle, "bundle.json")).read()
    assert absolute_paths(text, os.getcwd()) == []  # shipped to devices: no path of the machine that built it
    meta = json.loads(text)
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


@pytest.mark.parametrize("kernel", [3, 5, 7])
def test_graph_rewrites_compute_the_same_convolutions(kernel):
    """The exported graph's SPACE_TO_DEPTH image convolution and DEPTH_TO_SPACE transposed convolution."""
    import keras

    from dim_tf.export.graph import image_conv, transpose_conv

    rng = np.random.default_rng(kernel)
    x = rng.uniform(size=(2, 28, 28, 1)).astype(np.float32)
    conv = keras.layers.Conv2D(6, kernel, strides=2, padding="same", activation="relu")
    conv(x)
    conv.bias.assign(rng.normal(size=6).astype(np.float32))
    np.testing.assert_allclose(image_conv(conv, x), conv(x), atol=1e-5)
    h = rng.normal(size=(2, 7, 7, 4)).astype(np.float32)
    up = keras.layers.Conv2DTranspose(3, 3, strides=2, padding="same", activation="sigmoid")
    up(h)
    up.bias.assign(rng.normal(size=3).astype(np.float32))
    np.testing.assert_allclose(transpose_conv(up, h), up(h), atol=1e-5)
    assert transpose_conv(up, h).shape == (2, 14, 14, 3)


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
    from dim_tf.bench import bundle as bundle_speed

    rows = bundle_speed.benchmark(bundle, runs=3, warmup=1, log=lambda *a: None)
    assert set(rows) == {"tflite quantized (int8)", "tflite float (float32)", "tflite quantized (int8), no XNNPACK",
                         "tflite float (float32), no XNNPACK"}
    assert rows["tflite quantized (int8)"]["xnnpack"] and not rows["tflite quantized (int8), no XNNPACK"]["xnnpack"]
    assert all(r["median_ms"] > 0 and r["bytes"] > 0 for r in rows.values())


def test_interpreter_crash_in_verification_is_an_export_error(monkeypatch, tmp_path):
    """TFLite kernels abort (SIGABRT) rather than raise; the verification's child process turns that into an error."""
    from dim_tf.export import ExportError, verify

    real_run = subprocess.run
    monkeypatch.setattr(verify.subprocess, "run", lambda cmd, **kw: real_run(
        [sys.executable, "-c", "import os, sys; print('kernel check failed', file=sys.stderr); os.abort()"], **kw))
    with pytest.raises(ExportError, match=r"model\.tflite on the test set failed \(signal 6\)"):
        verify.run_bundle_model(str(tmp_path), "quantized", str(tmp_path / "x.npy"), str(tmp_path))


# ----------------------------------------------------------------------------------------------------- robustness

ROBUSTNESS_EXAMPLES = 12


@pytest.fixture(scope="module")
def robustness_run(cnn_bundle, mnist_folder, tmp_path_factory):
    """The documented command on the untrained biCNN bundle: two replayed attacks and two HopSkipJump steps on 12
    test images (the untrained model gets one of them right: the attacks run on that one)."""
    model_dir, bundle = cnn_bundle
    folder = tmp_path_factory.mktemp("robustness")
    out, adv = str(folder / "robustness.json"), str(folder / "adversarials.npz")
    cmd = [sys.executable, "-m", "dim_tf.export.robustness", "--bundle", bundle, "--model_dir", model_dir,
           "--data_dir", mnist_folder, "--num_examples", str(ROBUSTNESS_EXAMPLES),
           "--replay", "pgd:linf:0.3,fgm:l2:1.5",
           "--decision_examples", str(ROBUSTNESS_EXAMPLES), "--decision_eps", "1,3",
           "--decision_params", "steps=2,initial_gradient_eval_steps=10,max_gradient_eval_steps=20,init_directions=20",
           "--output", out, "--adversarials", adv, "--noprogress"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with np.load(adv) as z:
        return json.load(open(out)), {k: z[k] for k in z.files}, proc.stdout


def test_robustness_report_shape(robustness_run):
    result, adversarials, stdout = robustness_run
    assert result["schema"] == "dim_tf.export.robustness/1"
    assert absolute_paths(json.dumps(result), os.getcwd()) == []
    assert result["bundle"]["files"] == {"quantized": "model.tflite", "float": "model_float.tflite"}
    assert result["model"]["crafted_on"] == "bicnn-straight_through" and result["model"]["reference"] == "bicnn"
    y = np.array(result["labels"])
    assert len(y) == ROBUSTNESS_EXAMPLES == result["data"]["num_examples"]
    models = {"keras", "keras_uint8", "quantized", "float"}
    assert [e["name"] for e in result["replay"]] == ["pgd-linf-0.3", "fgm-l2-1.5"]
    for entry in [result["clean"], *result["replay"]]:
        predictions = {k: np.array(v) for k, v in entry["predictions"].items()}
        assert set(predictions) == set(entry["accuracy"]) == models
        for k, p in predictions.items():  # the summary numbers are those of the per-sample labels
            assert p.shape == y.shape and entry["accuracy"][k] == pytest.approx(np.mean(p == y))
            if k != "keras":
                assert entry["agreement_with_keras"][k] == pytest.approx(np.mean(p == predictions["keras"]))
        assert entry["wrong"]["keras_and_quantized"] == int(np.sum((predictions["keras"] != y) &
                                                                   (predictions["quantized"] != y)))
    for entry in result["replay"]:
        crafting = entry["crafting"]
        assert not crafting["zero_gradient"] and crafting["backward_passes"] > 0  # BPDA: a real gradient
        assert entry["accuracy"]["keras"] == crafting["robust_accuracy"][f"{entry['eps']:g}"]  # same forward pass
        x = adversarials[entry["name"]]
        assert x.shape == (ROBUSTNESS_EXAMPLES, 28, 28, 1) and x.dtype == np.float32
    decision = result["decision"]
    assert decision["attack"] == "hop_skip_jump" and decision["params"]["steps"] == 2
    for which, model in decision["models"].items():
        correct = np.array(model["clean_correct"])
        assert correct.any(), f"{which} gets none of the images right: nothing was attacked"
        assert set(model["robust_accuracy"]) == {"1", "3"} and model["forward_passes"] > 0
        assert model["backward_passes"] == 0 and model["gradient_probe"]["none"]  # decision-based: no gradient
        assert model["clean_accuracy"] == pytest.approx(correct.mean())
        for eps, robust in model["robust_accuracy"].items():  # robust: correct and no adversarial within eps
            dist = np.array([np.inf if d is None else d for d in model["distance"]])
            assert robust == pytest.approx(np.mean(correct & ~(dist <= float(eps) + 1e-4)))
    assert decision["models"]["quantized"]["model"] == "model.tflite"
    assert "replay pgd-linf-0.3" in stdout and "hop_skip_jump l2 on model.tflite" in stdout


def test_robustness_int8_replay_matches_the_interpreter(robustness_run, cnn_bundle, mnist):
    """The replay's int8 labels are those of a bare LiteRT interpreter on the uint8-rounded adversarials."""
    from ai_edge_litert.interpreter import Interpreter

    result, adversarials, _ = robustness_run
    interpreter = Interpreter(model_path=os.path.join(cnn_bundle[1], "model.tflite"), num_threads=1)
    runner = interpreter.get_signature_runner("serving_default")
    clean = np.round(mnist.test.images[:ROBUSTNESS_EXAMPLES] * 255).astype(np.uint8)
    assert runner(image=clean)["label"].tolist() == result["clean"]["predictions"]["quantized"]
    for entry in result["replay"]:
        pixels = np.round(adversarials[entry["name"]] * 255).astype(np.uint8)
        out = runner(image=pixels)
        assert out["label"].tolist() == entry["predictions"]["quantized"]
        assert out["scores"].argmax(axis=1).tolist() == entry["predictions"]["quantized"]
    # the check can fail: the attacks changed some int8 labels
    assert any(e["predictions"]["quantized"] != result["clean"]["predictions"]["quantized"] for e in result["replay"])
    assert np.array_equal(adversarials["labels"], result["labels"])


def test_replay_labels_are_those_of_each_file(bundle, mnist):
    """On the untrained biDIM, whose int8 file labels differently from its float file: each key gets its own model,
    the int8 file and keras_uint8 the uint8-rounded images."""
    from ai_edge_litert.interpreter import Interpreter

    from dim_tf.export.robustness import replay_labels

    x = mnist.test.images[:20]
    images = np.clip(x + np.random.default_rng(0).uniform(-0.3, 0.3, x.shape), 0, 1).astype(np.float32)
    seen = []
    labels = replay_labels(images, lambda imgs: seen.append(imgs) or np.arange(len(imgs)) % 10,
                           {w: lite.load_bundle(bundle, w) for w in lite.MODELS})
    np.testing.assert_array_equal(seen[0], images)
    np.testing.assert_array_equal(seen[1], np.round(images * 255) / 255)
    for filename, which, inputs in (("model.tflite", "quantized", np.round(images * 255).astype(np.uint8)),
                                    ("model_float.tflite", "float", images)):
        runner = Interpreter(model_path=os.path.join(bundle, filename)).get_signature_runner("serving_default")
        assert labels[which].tolist() == runner(image=inputs)["label"].tolist(), which
    assert labels["quantized"].tolist() != labels["float"].tolist()  # so that a swap would show


def test_robustness_refuses_bad_settings(cnn_bundle, tmp_path):
    from dim_tf.eval.threat import EvalError
    from dim_tf.export.robustness import robustness

    model_dir, bundle = cnn_bundle
    for kwargs, message in (({"replay": "pgd:linf"}, "attack:norm:eps"),
                            ({"replay": "cw_l2:l2:1.5"}, "minimal-distance"),
                            ({"replay": "pgd:l0:3"}, "supports"),
                            ({"replay": "pgd:linf:2"}, "outside the sensible range"),
                            ({"decision_attack": "pgd"}, "needs gradients"),
                            ({"decision_examples": 0}, "decision_examples"),
                            ({"bi_gradient": "smooth"}, "bi_gradient")):
        with pytest.raises(EvalError, match=message):
            robustness(bundle, model_dir, **kwargs)
    other = tmp_path / "other"
    shutil.copytree(model_dir, other)
    with open(other / "model.keras", "ab") as f:
        f.write(b"\0")
    with pytest.raises(EvalError, match="not the model"):
        robustness(bundle, str(other), num_examples=2)
    proc = subprocess.run([sys.executable, "-m", "dim_tf.export.robustness", "--bundle", str(tmp_path / "none"),
                           "--model_dir", model_dir], capture_output=True, text=True)
    assert proc.returncode == 2 and "does not exist" in proc.stderr
