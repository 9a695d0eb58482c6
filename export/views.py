"""The bundle's companion for pictures: `model_views.tflite` (written by `python -m dim_tf.export ... --views`).

The exported DIM graph (model.tflite) outputs only what a prediction needs: the ten numerators sum(F_i(D(x))) and
the denominator sum(D(x)). A page that shows the ten reconstructions F_i(D(x)) and D(x) needs those images, so the
bundle gets a second graph, the same function up to the sums:

    input  `image` [N, 28, 28, 1]   as model.tflite's (uint8 0..255 for an int8 bundle)
    output `denoised` [N, 28, 28, 1]            D(x) as the internal models read it (binarized for biDIM)
           `reconstructions` [N, K, 28, 28, 1]  F_i(D(x)), in [0, 1]

Why a companion file and not extra outputs of model.tflite: model.tflite stays byte-for-byte what it was (its
sha256, latency and verified accuracy are unchanged, and `dim_tf.lite` keeps reading it), and a caller that only
predicts never pays for 7,840 extra output values. Why int8 for an int8 bundle: it is the same graph up to the
sums, converted with the same calibration images, so its pictures are the int8 model's own reconstructions (the
export records how closely their sums give model.tflite's scores) at a quarter of the float file's size. Bundles
exported with `--quantize float16/none` get a float32 companion.

The export verifies it against Keras (D(x) and F_i(D(x)) on the verification images, in a child process because a
TFLite kernel aborts rather than raises) and records the result under `views` in bundle.json.

    python -m dim_tf.export.views VIEWS.tflite IMAGES.npy OUT.npz      (the child process)
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np

VIEWS_FILE = "model_views.tflite"
OUTPUTS = ("denoised", "reconstructions")
MAX_MEAN_ABS_DIFF = 0.05  # mean |TFLite - Keras| per pixel (int8 rounding; binarized D(x) may flip a few pixels)
MIN_LABEL_AGREEMENT = 0.98  # argmax of the pictures' scores vs model.tflite's label
CHUNK = 250


def supported(model) -> bool:
    """True for the DIM family (a model with internal models); classifiers have nothing to picture."""
    from dim_tf.models import DIM

    return isinstance(model, DIM)


def make_head(model, int8_input_rule: bool):
    """A Keras model computing (D(x), F_i(D(x))) exactly as the exported scoring graph does, before its sums."""
    import keras
    import tensorflow as tf

    from dim_tf.export.graph import binarize_input, denoise as _denoise, warnings_quiet
    from dim_tf.export.graph import internal_per_class as _internal_per_class

    net, binarize = model, model.binarize

    class ViewsHead(keras.Model):
        def __init__(self):
            super().__init__(name="dim_tf_views")
            self.net = net

        def call(self, image):
            x = image
            if binarize:  # the same rule as the scoring graph
                x = binarize_input(x, int8_input_rule)
            d = x
            if net.denoiser is not None:
                d = _denoise(net.denoiser, d)
                if binarize:
                    d = tf.where(d >= 0.5, 1.0, 0.0)
            return {"denoised": d, "reconstructions": _internal_per_class(net.internal, d)}

    head = ViewsHead()
    with warnings_quiet():
        head(tf.zeros([1, 28, 28, 1]))
    return head


def convert(model, scratch: str, quantize: str, representative: np.ndarray | None) -> bytes:
    """The companion's TFLite bytes: int8 (uint8 input, float outputs) for an int8 bundle, else float32."""
    from dim_tf.export.convert import convert as _convert
    from dim_tf.export.graph import saved_model as _saved_model

    int8 = quantize == "int8"
    path = os.path.join(scratch, "sm_views")
    _saved_model(make_head(model, int8_input_rule=int8 and model.binarize), path)
    return _convert(path, "int8" if int8 else "none", representative)


def keras_views(model, images_u8: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Keras' D(x) (binarized as the variant does) and F_i(D(x)) for uint8 images."""
    ds, rs = [], []
    for i in range(0, len(images_u8), CHUNK):
        x = images_u8[i:i + CHUNK].astype(np.float32) / 255.0
        d = model.denoise(x)
        ds.append(np.asarray(d))
        rs.append(np.asarray(model.internal(d)))
    return np.concatenate(ds), np.concatenate(rs)


def verify(model, path: str, images_u8: np.ndarray, scores: np.ndarray | None, scratch: str) -> tuple[dict, list]:
    """Runs the companion (child process) on `images_u8` and compares it with Keras; returns (summary, problems).

    scores: model.tflite's scores on the same images (recorded: do the pictures sum to what the model scores?)."""
    images_path = os.path.join(scratch, "views-images.npy")
    out_path = os.path.join(scratch, "views-out.npz")
    np.save(images_path, images_u8)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run([sys.executable, "-m", "dim_tf.export.views", path, images_path, out_path],
                          capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        how = f"signal {-proc.returncode}" if proc.returncode < 0 else f"exit code {proc.returncode}"
        tail = "\n".join(proc.stderr.strip().splitlines()[-8:])
        return {}, [f"running {VIEWS_FILE} failed ({how}):\n{tail}"]
    with np.load(out_path, allow_pickle=False) as z:
        d, r = z["denoised"], z["reconstructions"]
    kd, kr = keras_views(model, images_u8)
    summary = {"images": int(len(images_u8)),
               "denoised_mean_abs_diff_vs_keras": float(np.mean(np.abs(d - kd))),
               "reconstructions_mean_abs_diff_vs_keras": float(np.mean(np.abs(r - kr))),
               "finite": bool(np.isfinite(d).all() and np.isfinite(r).all())}
    if scores is not None:  # the pictures' sums divided as the runtime divides, against model.tflite's scores
        mine = r.sum(axis=(2, 3, 4)) / np.maximum(d.sum(axis=(1, 2, 3)), 1.0)[:, None]
        summary["scores_from_pictures_max_abs_diff_vs_model"] = float(np.max(np.abs(mine - scores)))
        summary["scores_from_pictures_median_abs_diff_vs_model"] = float(np.median(np.abs(mine - scores)))
        summary["scores_from_pictures_label_agreement"] = float(np.mean(mine.argmax(1) == scores.argmax(1)))
    problems = []
    if not summary["finite"]:
        problems.append(f"{VIEWS_FILE} outputs NaN/inf")
    keys = ["reconstructions_mean_abs_diff_vs_keras"] + ([] if model.binarize else ["denoised_mean_abs_diff_vs_keras"])
    for key in keys:  # a binarized D(x) flips where D is near 0.5 (an untrained model): recorded, not checked
        if not summary[key] <= MAX_MEAN_ABS_DIFF:
            problems.append(f"{VIEWS_FILE}: {key} {summary[key]:.4f} > {MAX_MEAN_ABS_DIFF} (not the model's pictures)")
    agreement = summary.get("scores_from_pictures_label_agreement", 1.0)
    if not agreement >= MIN_LABEL_AGREEMENT:
        problems.append(f"{VIEWS_FILE}: the pictures' scores pick model.tflite's label on only {agreement:.4f} of the "
                        f"images (required {MIN_LABEL_AGREEMENT})")
    return summary, problems


def describe(summary: dict, quantize: str) -> dict:
    """The `views` entry of bundle.json."""
    return {"file": VIEWS_FILE, "outputs": list(OUTPUTS), "quantize": "int8" if quantize == "int8" else "none",
            "input": "the same as model.tflite's",
            "meaning": {"denoised": "D(x) [N, 28, 28, 1] as the internal models read it (binarized in biDIM)",
                        "reconstructions": "F_i(D(x)) [N, K, 28, 28, 1]; model.tflite's numerators are their sums"},
            "verification": summary}


def main(argv) -> int:
    """Child process: VIEWS.tflite IMAGES.npy OUT.npz (uint8 images; float companions get p / 255)."""
    from dim_tf import lite

    path, images_path, out_path = argv
    runner = lite.Runner(path, num_threads=1)
    images = np.load(images_path, allow_pickle=False)
    if runner.input_dtype == np.float32:
        images = images.astype(np.float32) / 255.0
    parts = [runner(images[i:i + CHUNK]) for i in range(0, len(images), CHUNK)]
    np.savez(out_path, **{k: np.concatenate([p[k] for p in parts]) for k in OUTPUTS})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
