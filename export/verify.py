"""Verification of an unpublished bundle: each .tflite file is run through `dim_tf.lite` (in a child process: a
broken TFLite kernel aborts rather than raises) on the test images and on 256 constant images (pixel values 0..255),
and compared with the Keras model: accuracy, label agreement, the float file's scores, the binarization threshold on
every uint8 level, the int8 input's scale. A bundle that fails any check is not published (`ExportError` with the
numbers)."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time

import numpy as np

from dim_tf.export import FLOAT_FILE, MODEL_FILE, ExportError
from dim_tf.shown_paths import shown_source

MAX_ACCURACY_DROP = 0.005   # |int8 accuracy - Keras accuracy| on the test set, as a fraction (0.5 point)
MIN_AGREEMENT = 0.99        # fraction of test images whose label matches the Keras model's
FLOAT_RTOL = FLOAT_ATOL = 1e-3  # float32 TFLite vs Keras scores (measured differences are ~1e-5)


@dataclasses.dataclass(frozen=True)
class Checks:
    """Acceptance thresholds of the verification (relax them only for tests on untrained models)."""

    max_accuracy_drop: float = MAX_ACCURACY_DROP
    min_agreement: float = MIN_AGREEMENT


def run_bundle_model(bundle_dir: str, which: str, images_path: str, scratch: str) -> dict:
    """Runs one model of the (unpublished) bundle through `dim_tf.lite` in a child process.

    A child process, because a broken TFLite kernel aborts (SIGABRT) instead of raising: the export must survive
    that to report it and remove its temporary folder.
    """
    out_path = os.path.join(scratch, f"out-{which}.npz")
    cmd = [sys.executable, "-m", "dim_tf.export._worker", bundle_dir, which, images_path, out_path]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        how = f"signal {-proc.returncode}" if proc.returncode < 0 else f"exit code {proc.returncode}"
        tail = "\n".join(proc.stderr.strip().splitlines()[-8:])
        raise ExportError(f"running {file_of(which)} on the test set failed ({how}):\n{tail}")
    with np.load(out_path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}



def file_of(which: str) -> str:
    return MODEL_FILE if which == "quantized" else FLOAT_FILE


def threshold_check(scores: np.ndarray) -> dict:
    """For 256 constant images (pixel 0..255): do 0..127 all match black and 128..255 all match white?"""
    same = lambda a, b: bool(np.allclose(a, b, rtol=1e-6, atol=1e-6))  # noqa: E731
    below = [v for v in range(128) if not same(scores[v], scores[0])]
    above = [v for v in range(128, 256) if not same(scores[v], scores[255])]
    return {"ok": not below and not above,
            "levels_0_127_equal_black": not below, "levels_128_255_equal_white": not above,
            "black_differs_from_white": not same(scores[0], scores[255]),
            "mismatched_levels": below + above}


def summarize(labels: np.ndarray, scores: np.ndarray, truth: np.ndarray, ref_labels: np.ndarray) -> dict:
    return {"accuracy": float(np.mean(labels == truth)), "agreement_with_keras": float(np.mean(labels == ref_labels)),
            "disagreements": int(np.sum(labels != ref_labels)), "finite": bool(np.isfinite(scores).all()),
            "label_is_argmax_scores": float(np.mean(labels == scores.argmax(axis=1)))}


def verify_bundle(tmp: str, files: dict, model, test, dataset_source: str, quantize: str, binarize: bool,
                  checks: Checks, rep_info: dict | None, scratch: str, log) -> tuple[dict, dict | None]:
    """Verifies the bundle being built in `tmp` (its bundle.json provisional) against `model` on the `test` split;
    returns (bundle.json's `verification`, the views companion's summary or None). Raises `ExportError` listing
    every failed check."""
    from dim_tf import predict
    from dim_tf.export import views as views_mod

    views_summary = None
    # 2. Verification: Keras vs each file on the test set and 256 constant images (pixel values 0..255).
    probes = np.repeat(np.arange(256, dtype=np.uint8), 28 * 28).reshape(256, 28, 28, 1)
    images_u8 = np.concatenate([np.round(test.images * 255.0).astype(np.uint8), probes])
    images_path = os.path.join(scratch, "images.npy")
    np.save(images_path, images_u8)
    n_test = len(test)
    t = time.time()
    keras_scores = predict.scores(model, images_u8.astype(np.float32) / 255.0)
    keras_labels = keras_scores.argmax(axis=1)
    log(f"keras on {n_test} test images: {time.time() - t:.1f}s")
    truth = test.labels
    verification = {
        "test_images": n_test, "dataset_source": shown_source(dataset_source),
        "thresholds": {"max_accuracy_drop": checks.max_accuracy_drop, "min_agreement": checks.min_agreement},
        "keras": {"accuracy": float(np.mean(keras_labels[:n_test] == truth))},
        "representative": rep_info,
    }
    problems = []
    which_models = [("quantized", MODEL_FILE)] + ([("float", FLOAT_FILE)] if FLOAT_FILE in files else [])
    for which, filename in which_models:
        t = time.time()
        res = run_bundle_model(tmp, which, images_path, scratch)
        scores, labels = res["scores"], res["labels"]
        summary = summarize(labels[:n_test], scores[:n_test], truth, keras_labels[:n_test])
        summary["seconds"] = round(time.time() - t, 2)
        summary["max_abs_score_diff_vs_keras"] = float(np.max(np.abs(scores[:n_test] - keras_scores[:n_test])))
        summary["mean_abs_score_diff_vs_keras"] = float(np.mean(np.abs(scores[:n_test] - keras_scores[:n_test])))
        summary["input"] = {"dtype": str(res["input_dtype"]), "scale": float(res["input_scale"]),
                            "zero_point": int(res["input_zero_point"])}
        summary["black_image"] = {"label": int(labels[n_test]), "scores": [round(float(s), 5) for s in scores[n_test]],
                                  "keras_label": int(keras_labels[n_test])}
        summary["white_image"] = {"label": int(labels[-1]), "scores": [round(float(s), 5) for s in scores[-1]],
                                  "keras_label": int(keras_labels[-1])}
        if binarize:
            summary["threshold_check"] = threshold_check(scores[n_test:])
        verification[filename] = summary
        if which == "quantized" and views_mod.VIEWS_FILE in files:
            views_summary, views_problems = views_mod.verify(model, os.path.join(tmp, views_mod.VIEWS_FILE),
                                                             images_u8[:n_test], scores[:n_test], scratch)
            problems += views_problems
        log(f"{filename}: accuracy {summary['accuracy']:.4f} (keras {verification['keras']['accuracy']:.4f}), "
            f"agreement {summary['agreement_with_keras']:.4f} ({summary['disagreements']} of {n_test} differ), "
            f"{summary['seconds']:.1f}s")
        if not np.isfinite(scores).all():
            problems.append(f"{filename} outputs NaN/inf (on {int(np.sum(~np.isfinite(scores).all(axis=1)))} "
                            "images): a broken conversion")
        drop = abs(summary["accuracy"] - verification["keras"]["accuracy"])
        if drop > checks.max_accuracy_drop + 1e-9:  # 0.1101 - 0.1051 is 0.005000000000000004
            problems.append(f"{filename} accuracy {summary['accuracy']:.4f} vs keras "
                            f"{verification['keras']['accuracy']:.4f}: differs by {100 * drop:.2f} points "
                            f"(allowed {100 * checks.max_accuracy_drop:.2f})")
        if summary["agreement_with_keras"] < checks.min_agreement:
            problems.append(f"{filename} agrees with keras on {summary['agreement_with_keras']:.4f} of the test "
                            f"images ({summary['disagreements']} differ; required {checks.min_agreement:.4f})")
        if which == "float" or quantize == "none":  # float32: must compute the Keras function, not just agree
            close = np.isclose(scores[:n_test], keras_scores[:n_test], rtol=FLOAT_RTOL, atol=FLOAT_ATOL)
            summary["scores_close_to_keras"] = float(np.mean(close))
            if not close.all():
                problems.append(f"{filename} scores differ from keras beyond rtol/atol {FLOAT_RTOL}/{FLOAT_ATOL} on "
                                f"{int(np.sum(~close.all(axis=1)))} images (max abs diff "
                                f"{summary['max_abs_score_diff_vs_keras']:.3g}): the exported graph is not the model")
        if binarize and not summary["threshold_check"]["ok"]:
            problems.append(f"{filename} binarization threshold is off: {summary['threshold_check']}")
        if which == "quantized" and quantize == "int8":
            inp = summary["input"]
            if inp["dtype"] != "uint8" or inp["zero_point"] != 0 or abs(inp["scale"] * 255.0 - 1.0) > 1e-6:
                problems.append(f"{filename} input is {inp}, expected uint8 with scale 1/255 and zero point 0 "
                                "(the representative images must span 0..1)")
    if binarize:
        verification["keras"]["threshold_check"] = threshold_check(keras_scores[n_test:])
    if problems:
        raise ExportError("export verification failed:\n  " + "\n  ".join(problems))
    return verification, views_summary
