"""Trained model folder -> verified TFLite bundle (see `dim_tf.export` for the bundle's layout): `export_bundle`.

The steps, one module each: `graph` (the exported Keras wrapper and its SavedModel), `convert` (TFLite files:
float32, float16 or int8), `verify` (every file against Keras on the test set, in a child process), `publish`
(built in a hidden folder, renamed into place only once verified). This module chooses the model variant and the
data, runs the steps and writes bundle.json.
"""

from __future__ import annotations

import json
import os
import time

from dim_tf import lite
from dim_tf.shown_paths import shown_path
from dim_tf.export import FLOAT_FILE, LABELS_FILE, MODEL_FILE, ExportError
from dim_tf.export.convert import DEFAULT_REPRESENTATIVE_SAMPLES, QUANTIZE
from dim_tf.export.verify import MAX_ACCURACY_DROP, MIN_AGREEMENT, Checks
from dim_tf.variants import VARIANTS

__all__ = ["Checks", "DEFAULT_REPRESENTATIVE_SAMPLES", "ExportError", "MAX_ACCURACY_DROP", "MIN_AGREEMENT",
           "QUANTIZE", "VARIANTS", "export_bundle"]

CLASS_NAMES = {
    "mnist": [str(i) for i in range(10)],
    "fashion_mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                      "Ankle boot"],
}


def _versions(md) -> dict:
    from importlib.metadata import PackageNotFoundError, version

    versions = md.library_versions()
    for package in ("ai-edge-litert", "pillow"):
        try:
            versions[package.replace("-", "_")] = version(package)
        except PackageNotFoundError:
            pass
    return versions


def export_bundle(model_dir: str, out: str, variant: str = "default", quantize: str = "int8",
                  data_dir: str | None = None, representative_samples: int = DEFAULT_REPRESENTATIVE_SAMPLES,
                  verify_images: int | None = None, checks: Checks = Checks(), overwrite: bool = False,
                  log=print, views: bool = False) -> dict:
    """Exports `model_dir` to the bundle folder `out` (atomically) and returns its bundle.json.

    verify_images: test images used for verification (None: the full test set). views: also write the DIM
    family's picture companion, model_views.tflite (see `dim_tf.export.views`). Raises `ExportError` (and leaves
    nothing at `out`) when the model cannot be exported or a file fails verification.
    """
    import tempfile

    from dim_tf import model_dir as md
    from dim_tf.export import publish

    if variant not in VARIANTS:
        raise ExportError(f"unknown variant {variant!r}; choose one of {VARIANTS}")
    if quantize not in QUANTIZE:
        raise ExportError(f"unknown quantization {quantize!r}; choose one of {QUANTIZE}")
    if representative_samples < 1 and quantize == "int8":
        raise ExportError("int8 export needs at least one representative sample")
    out = os.path.abspath(out)
    publish.check_destination(out, overwrite)
    with md.atomic_folder(out, ExportError) as tmp:
        with tempfile.TemporaryDirectory(prefix="dim_tf_export-") as scratch:
            meta = _build(model_dir, tmp, scratch, variant, quantize, data_dir, representative_samples,
                          verify_images, checks, log, views)
    log(f"wrote {out}")
    return meta


def _build(model_dir, tmp, scratch, variant, quantize, data_dir, representative_samples, verify_images, checks,
           log, views=False) -> dict:
    from dim_tf import data, model_dir as md, variants
    from dim_tf.export import convert, verify, views as views_mod
    from dim_tf.export.graph import DIM_SCORES, INPUT_NAME, SIGNATURE

    t0 = time.time()
    trained, manifest = md.load(model_dir)
    name = manifest.get("model", "?")
    model, model_name = variants.choose(trained, manifest, variant, error=ExportError, hint="")
    dataset_name = manifest.get("dataset", "mnist")
    dataset = data.load(dataset_name, data.data_dir_for(data_dir, manifest))
    test = dataset.test.take(verify_images)
    names = CLASS_NAMES.get(dataset_name, [str(i) for i in range(10)])
    log(f"{model_name} from {model_dir}; {dataset_name} from {dataset.source}")

    # 1. The graph, its SavedModels and their conversions; the labels and the pictures' companion.
    representative = rep_info = None
    if quantize == "int8":
        representative, rep_info = convert.representative(dataset.train, representative_samples, dataset_name)
    files, graph = convert.tflite_files(model, quantize, representative, scratch, log)
    kind, binarize, output_names = graph["kind"], graph["binarize"], graph["outputs"]
    files[LABELS_FILE] = ("\n".join(names) + "\n").encode()
    if views and views_mod.supported(model):  # the page's pictures: D(x) and F_i(D(x)) (dim_tf.export.views)
        files[views_mod.VIEWS_FILE] = views_mod.convert(model, scratch, quantize, representative)
    elif views:
        log(f"{model_name} has no internal models: no {views_mod.VIEWS_FILE}")
    for filename, content in files.items():
        with open(os.path.join(tmp, filename), "wb") as f:
            f.write(content)

    meta = {
        "format": lite.FORMAT, "format_version": lite.FORMAT_VERSION,
        "model": name, "variant": variant, "model_name": model_name, "dataset": dataset_name,
        "quantize": quantize,
        "models": {"quantized": MODEL_FILE, "float": FLOAT_FILE if FLOAT_FILE in files else None},
        "signature": SIGNATURE,
        "outputs": {"names": output_names, "min_denominator": 1.0,
                    "scores": DIM_SCORES if kind == "dim" else "scores",
                    "note": ("the DIM family's graph outputs numerators sum(F_i(D(x))) and the denominator "
                             "sum(D(x)); the runtime divides in float32 (an int8 DIV aborts when its divisor "
                             "quantises to 0, e.g. on a black image). label = argmax(numerators) = argmax(scores)."
                             if kind == "dim" else "scores are the classifier's logits; label = argmax(scores)")},
        "labels": names,
        "files": {k: {"sha256": lite.sha256(os.path.join(tmp, k)), "bytes": os.path.getsize(os.path.join(tmp, k))}
                  for k in files},
    }
    lite_meta_path = os.path.join(tmp, lite.BUNDLE_JSON)
    with open(lite_meta_path, "w") as f:  # provisional: lets the verification run through dim_tf.lite itself
        json.dump({**meta, "verification": "pending"}, f)

    # 2. Verification: Keras vs each file on the test set and 256 constant images (pixel values 0..255).
    verification, views_summary = verify.verify_bundle(tmp, files, model, test, dataset.source, quantize, binarize,
                                                       checks, rep_info, scratch, log)
    n_test = len(test)
    q = verification[MODEL_FILE]
    meta.update({
        "input": {
            "name": INPUT_NAME, "shape": [-1, 28, 28, 1], "layout": "NHWC, one grayscale channel, batch resizable",
            MODEL_FILE: {**q["input"], "meaning": ("uint8 pixel p (0 black .. 255 white); real value = scale * "
                                                   "(p - zero_point) = p / 255" if q["input"]["dtype"] == "uint8"
                                                   else "float32 in [0, 1]")},
            **({FLOAT_FILE: {"dtype": "float32", "range": [0.0, 1.0]}} if FLOAT_FILE in files else {}),
        },
        "threshold": ({"value": 0.5, "keras_rule": "x >= 0.5 (input) and D(x) >= 0.5",
                       "uint8_rule": "pixel <= 127 -> 0, pixel >= 128 -> 1 (checked on all 256 levels)",
                       "int8_graph_input_rule": "x > 0.5 on p/255" if quantize == "int8" else "x >= 0.5",
                       "float_graph_rule": "x >= 0.5"} if binarize else None),
        "model_config": manifest.get("model_config"), "train_config": manifest.get("config"),
        "source": {"model_dir": shown_path(model_dir), "manifest_test_accuracy": manifest.get("test_accuracy"),
                   "model_keras_sha256": lite.sha256(os.path.join(model_dir, md.MODEL_FILE))},
        "accuracy": {"keras": verification["keras"]["accuracy"], "quantized": q["accuracy"],
                     "float": verification.get(FLOAT_FILE, {}).get("accuracy"),
                     "agreement_quantized_vs_keras": q["agreement_with_keras"],
                     "agreement_float_vs_keras": verification.get(FLOAT_FILE, {}).get("agreement_with_keras"),
                     "test_images": n_test},
        "verification": verification,
        "versions": _versions(md),
        "views": views_mod.describe(views_summary, quantize) if views_mod.VIEWS_FILE in files else None,
        "seconds": round(time.time() - t0, 1),
        "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    })
    with open(lite_meta_path, "w") as f:
        json.dump(meta, f, indent=2, sort_keys=True)
        f.write("\n")
    return meta
