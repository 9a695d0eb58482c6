"""TFLite conversion of the exported graph (`dim_tf.export.graph`): float32, float16 weights, or full-integer int8
with uint8 input calibrated on training images.

Path (the one that works on TF 2.21 / Keras 3.15): the Keras wrapper is exported with `model.export(dir,
format="tf_saved_model", input_signature=...)`, then converted with `tf.lite.TFLiteConverter.from_saved_model`.
`from_concrete_functions` and tf.Module wrappers wrote weightless files that output NaN on this stack, so every file
is run on the test set (`dim_tf.export.verify`) before the bundle is published.
"""

from __future__ import annotations

import os
import time

import numpy as np

from dim_tf.export import FLOAT_FILE, MODEL_FILE, ExportError
from dim_tf.export.graph import INPUT_NAME, SIGNATURE, make_head, saved_model, warnings_quiet

QUANTIZE = ("int8", "float16", "none")
DEFAULT_REPRESENTATIVE_SAMPLES = 5000  # min/max calibration: 1000 left heavy digits saturating the sums


def convert(saved_model_dir: str, mode: str, representative: np.ndarray | None = None) -> bytes:
    """float32 ("none"), float16-weight ("float16") or full-integer int8 ("int8", uint8 input) TFLite bytes."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir, signature_keys=[SIGNATURE])
    if mode == "int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ({INPUT_NAME: representative[i:i + 1]}
                                                     for i in range(len(representative)))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8
    elif mode == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    with warnings_quiet():
        return converter.convert()


def representative(train, samples: int, dataset_name: str) -> tuple[np.ndarray, dict]:
    """The int8 calibration images (`samples` training images, random without replacement, seed 0) and what
    bundle.json records about them."""
    rng = np.random.default_rng(0)
    n = min(samples, len(train))
    idx = np.sort(rng.choice(len(train), size=n, replace=False))
    info = {"samples": int(n), "source": f"{dataset_name} training split (first 55,000 official training images), "
                                         "random without replacement, seed 0"}
    return train.images[idx], info


def tflite_files(model, quantize: str, calibration: np.ndarray | None, scratch: str, log) -> tuple[dict, dict]:
    """The bundle's model files {MODEL_FILE: bytes[, FLOAT_FILE: bytes]} for `quantize`, and the graph's
    {"kind", "binarize", "outputs"}. SavedModels go to `scratch`; the int8 one differs from the float one only in
    the input threshold's comparison (binarized variants)."""
    head, kind, binarize, output_names = make_head(model, int8_input_rule=False)
    float_dir = os.path.join(scratch, "sm_float")
    saved_model(head, float_dir)
    float_bytes = convert(float_dir, "none")
    if float_bytes is None or len(float_bytes) == 0:
        raise ExportError("the TFLite converter returned an empty float model")
    files = {}
    if quantize == "int8":
        int8_dir = os.path.join(scratch, "sm_int8")
        if binarize:
            saved_model(make_head(model, int8_input_rule=True)[0], int8_dir)
        else:
            int8_dir = float_dir
        t = time.time()
        files[MODEL_FILE] = convert(int8_dir, "int8", calibration)
        log(f"int8 conversion with {len(calibration)} representative images: {time.time() - t:.1f}s")
        files[FLOAT_FILE] = float_bytes
    elif quantize == "float16":
        files[MODEL_FILE] = convert(float_dir, "float16")
        files[FLOAT_FILE] = float_bytes
    else:
        files[MODEL_FILE] = float_bytes
    return files, {"kind": kind, "binarize": binarize, "outputs": output_names}
