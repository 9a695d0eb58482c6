"""Trained model folder -> verified TFLite bundle (see `dim_tf.export` for the bundle's layout).

Path (the one that works on TF 2.21 / Keras 3.15): a Keras wrapper (`ExportHead`) around the trained model is
exported with `model.export(dir, format="tf_saved_model", input_signature=...)`, then converted with
`tf.lite.TFLiteConverter.from_saved_model`. `from_concrete_functions` and tf.Module wrappers wrote weightless
files that output NaN on this stack, so every file is run on the test set before the bundle is published.

The graph (`serving_default`, input `image` [N, 28, 28, 1]):
  * the DIM family outputs `numerators` [N, K] = sum(F_i(D(x))), `denominator` [N] = sum(D(x)) and `label` [N];
    the runtime divides (scores = numerators / max(denominator, 1)): an int8 DIV aborts the interpreter when its
    divisor quantises to zero (a black image). argmax(numerators) equals argmax(scores): the divisor is shared.
  * other classifiers (CNN, Madry) output `scores` [N, K] (logits) and `label` [N].
  * speed (the same functions, checked by the float-vs-Keras comparison): the denoiser's transposed convolutions
    become pad + CONV_2D + DEPTH_TO_SPACE (`_transpose_conv`; with a resizable batch TFLite's TRANSPOSE_CONV gets
    its output shape at run time and stays out of the XNNPACK delegate), and the two convolutions that read the
    one-channel image become SPACE_TO_DEPTH + a stride-1 CONV_2D (`_image_conv`). Figures in the README.
  * binarized variants (biDIM, biCNN) threshold the input at 0.5 in the graph. In the int8 file the rule is
    `x > 0.5` on the uint8 input's real value p/255 (TFLite's int8 comparison rescales with 8 fractional bits: `>=`
    turns pixel 127 on, `>` gives 127 -> 0, 128 -> 1 exactly); the float files keep Keras' `x >= 0.5`. D's
    output is binarized with `>= 0.5` as in Keras. Every export checks all 256 uint8 levels against black/white.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

from dim_tf import lite

VARIANTS = ("default", "bi")
QUANTIZE = ("int8", "float16", "none")
DEFAULT_REPRESENTATIVE_SAMPLES = 5000  # min/max calibration: 1000 left heavy digits saturating the sums
MAX_ACCURACY_DROP = 0.005   # |int8 accuracy - Keras accuracy| on the test set, as a fraction (0.5 point)
MIN_AGREEMENT = 0.99        # fraction of test images whose label matches the Keras model's
FLOAT_RTOL = FLOAT_ATOL = 1e-3  # float32 TFLite vs Keras scores (measured differences are ~1e-5)
MODEL_FILE = "model.tflite"
FLOAT_FILE = "model_float.tflite"
LABELS_FILE = "labels.txt"
SIGNATURE = "serving_default"
INPUT_NAME = "image"
CLASS_NAMES = {
    "mnist": [str(i) for i in range(10)],
    "fashion_mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                      "Ankle boot"],
}
DIM_SCORES = "numerators / max(denominator, min_denominator)"


class ExportError(ValueError):
    """The export cannot run, or its result failed verification (the message carries the numbers)."""


@dataclasses.dataclass(frozen=True)
class Checks:
    """Acceptance thresholds of the verification (relax them only for tests on untrained models)."""

    max_accuracy_drop: float = MAX_ACCURACY_DROP
    min_agreement: float = MIN_AGREEMENT


# ----------------------------------------------------------------------------------------------------- graph


def _internal_per_class(internal, d):
    """`InternalModels(d)` with each class's dense layers as their own matmul: [B, 28, 28, 1] -> [B, K, 28, 28, 1].

    Keras runs the K class-wise dense layers as one einsum, which TFLite turns into BATCH_MATMUL with one
    (per-tensor) scale for all K weight sets; K plain matmuls become FULLY_CONNECTED ops whose int8 weights get a
    scale per output channel. Same function in float (checked by the export's float-vs-Keras comparison).
    """
    import tensorflow as tf

    from dim_tf.models import ClassWiseDense

    k_classes = internal.num_classes

    def dense(layer, k, x):
        kernel = layer.kernel[k] if isinstance(layer, ClassWiseDense) else layer.kernel
        bias = layer.bias[k] if isinstance(layer, ClassWiseDense) else layer.bias
        return layer.activation(tf.matmul(x, kernel) + bias)

    h = _image_conv(internal.stem, d)
    if internal.shared_encoder:
        h = tf.reshape(h, [-1, h.shape[1] * h.shape[2] * h.shape[3]])
        z = internal.enc_latent(internal.enc_hidden(h))
        latents = [z] * k_classes
    else:
        h = tf.reshape(h, [-1, h.shape[1] * h.shape[2], k_classes, internal.stem_filters])
        latents = []
        for k in range(k_classes):
            hk = tf.reshape(h[:, :, k, :], [-1, h.shape[1] * internal.stem_filters])
            latents.append(dense(internal.enc_latent, k, dense(internal.enc_hidden, k, hk)))
    outs = [dense(internal.dec_out, k, dense(internal.dec_hidden, k, latents[k])) for k in range(k_classes)]
    return tf.reshape(tf.stack(outs, axis=1), [-1, k_classes, *internal.image_shape])


def _transpose_conv(layer, x):
    """`layer` (a Conv2DTranspose) on x; kernel 3, stride 2, "same" as pad + 2x2 Conv2D + DEPTH_TO_SPACE.

    The same function with static shapes: TFLite's TRANSPOSE_CONV reads its output shape from a tensor computed
    from the batch size at run time, which keeps it (and the shape ops feeding it) out of the XNNPACK delegate.
    Output pixel (2i + a, 2j + b) sums input rows i - 1, i and columns j - 1, j: an even a uses kernel rows 2 (input
    row i - 1) and 0 (row i), an odd a row 1 (row i) only; likewise for columns. Other configurations: layer(x).
    """
    import tensorflow as tf

    if (tuple(layer.kernel_size), tuple(layer.strides), layer.padding, tuple(layer.dilation_rate),
            layer.data_format) != ((3, 3), (2, 2), "same", (1, 1), "channels_last"):
        return layer(x)
    kernel = layer.kernel  # [3, 3, out, in]
    taps = ((2, 0), (None, 1))  # by output parity: kernel index for input offsets -1 and 0 (None: no tap)
    zeros = tf.zeros([kernel.shape[3], kernel.shape[2]])
    blocks = [tf.stack([tf.stack([zeros if ta is None or tb is None else tf.transpose(kernel[ta, tb])
                                  for tb in taps[b]]) for ta in taps[a]])
              for a in (0, 1) for b in (0, 1)]  # each [2, 2, in, out]; channel block (2a + b) of the output
    y = tf.nn.conv2d(tf.pad(x, [[0, 0], [1, 0], [1, 0], [0, 0]]), tf.concat(blocks, axis=-1), 1, "VALID")
    if layer.use_bias:
        y = y + tf.tile(layer.bias, [4])
    return layer.activation(tf.nn.depth_to_space(y, 2))


def _image_conv(layer, x):
    """`layer` (a Conv2D, odd kernel, stride 2, "same") on a one-channel x [B, H, W, 1] (H, W even), as
    SPACE_TO_DEPTH(2) + a stride-1 convolution over the 2x2 blocks: the same function.

    XNNPACK runs a convolution with one input channel at a fraction of its usual speed (the 5x5 stem of the internal
    models took twice as long as this form). Output row i sums input rows 2i + a - pad (a = 0..k-1, pad = (k - 2)
    // 2); row 2(i + o) + p is channel p of block row i + o, so block offset o and parity p take kernel row
    2o + p + pad when that lies in 0..k-1 (else zero); likewise for columns. Other configurations: layer(x).
    """
    import tensorflow as tf

    k = tuple(layer.kernel_size)
    if (x.shape[-1], k[0] % 2, k[0] == k[1], tuple(layer.strides), layer.padding, tuple(layer.dilation_rate),
            x.shape[1] % 2, x.shape[2] % 2) != (1, 1, True, (2, 2), "same", (1, 1), 0, 0):
        return layer(x)
    size, pad = k[0], (k[0] - 2) // 2

    def tap(o: int, p: int) -> int | None:
        """The kernel row (column) of block offset o and parity p; None outside the kernel."""
        a = 2 * o + p + pad
        return a if 0 <= a < size else None

    def weight(o: int, q: int, p: int, r: int):
        a, b = tap(o, p), tap(q, r)
        return zeros if a is None or b is None else layer.kernel[a, b, 0]

    offsets = [o for o in range(-size, size) if tap(o, 0) is not None or tap(o, 1) is not None]
    zeros = tf.zeros([layer.kernel.shape[-1]])
    kernel = tf.stack([tf.stack([tf.stack([weight(o, q, p, r) for p in (0, 1) for r in (0, 1)])  # channel 2p + r
                                 for q in offsets]) for o in offsets])  # [n, n, 4, out]
    before, after = -offsets[0], offsets[-1]
    blocks = tf.pad(tf.nn.space_to_depth(x, 2), [[0, 0], [before, after], [before, after], [0, 0]])
    y = tf.nn.conv2d(blocks, kernel, 1, "VALID")
    return layer.activation(y + layer.bias if layer.use_bias else y)


def _denoise(denoiser, x):
    """`Denoiser(x)` with the image convolution as `_image_conv` and the transposed convolutions as
    `_transpose_conv` (the same function; faster and static-shaped in TFLite)."""
    for layer in denoiser.encoder:
        x = _image_conv(layer, x)  # layer(x) unless x has one channel
    for layer in denoiser.decoder:
        x = _transpose_conv(layer, x)
    return x


def _make_head(model, int8_input_rule: bool):
    """A Keras model computing the exported outputs of `model` (see the module docstring)."""
    import keras
    import tensorflow as tf

    from dim_tf.models import DIM, BinarizedInput

    if isinstance(model, DIM):
        kind, net, binarize = "dim", model, model.binarize
    elif isinstance(model, BinarizedInput):
        kind, net, binarize = "classifier", model.classifier, True
    else:
        kind, net, binarize = "classifier", model, False

    class ExportHead(keras.Model):
        def __init__(self):
            super().__init__(name="dim_tf_export")
            self.net = net

        def call(self, image):
            x = image
            if binarize:  # see the module docstring for > vs >=
                x = tf.where(x > 0.5, 1.0, 0.0) if int8_input_rule else tf.where(x >= 0.5, 1.0, 0.0)
            if kind == "classifier":
                scores = net(x)
                return {"scores": scores, "label": tf.argmax(scores, axis=1, output_type=tf.int32)}
            d = x
            if net.denoiser is not None:
                d = _denoise(net.denoiser, d)
                if binarize:
                    d = tf.where(d >= 0.5, 1.0, 0.0)
            numerators = tf.reduce_sum(_internal_per_class(net.internal, d), axis=[2, 3, 4])
            return {"numerators": numerators, "denominator": tf.reduce_sum(d, axis=[1, 2, 3]),
                    "label": tf.argmax(numerators, axis=1, output_type=tf.int32)}

    head = ExportHead()
    with warnings_quiet():  # Keras warns that the wrapper has no build(): it has no weights of its own
        head(tf.zeros([1, 28, 28, 1]))
    outputs = ["numerators", "denominator", "label"] if kind == "dim" else ["scores", "label"]
    return head, kind, binarize, outputs


def _saved_model(head, path: str) -> None:
    import tensorflow as tf

    with warnings_quiet():
        head.export(path, format="tf_saved_model", verbose=False,
                    input_signature=[tf.TensorSpec([None, 28, 28, 1], tf.float32, name=INPUT_NAME)])


@contextlib.contextmanager
def warnings_quiet():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _convert(saved_model: str, mode: str, representative: np.ndarray | None = None) -> bytes:
    """float32 ("none"), float16-weight ("float16") or full-integer int8 ("int8", uint8 input) TFLite bytes."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model, signature_keys=[SIGNATURE])
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


# ----------------------------------------------------------------------------------------------------- verification


def _run_bundle_model(bundle_dir: str, which: str, images_path: str, scratch: str) -> dict:
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
        raise ExportError(f"running {_file_of(which)} on the test set failed ({how}):\n{tail}")
    with np.load(out_path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _versions(md) -> dict:
    from importlib.metadata import PackageNotFoundError, version

    versions = md.library_versions()
    for package in ("ai-edge-litert", "pillow"):
        try:
            versions[package.replace("-", "_")] = version(package)
        except PackageNotFoundError:
            pass
    return versions


def _file_of(which: str) -> str:
    return MODEL_FILE if which == "quantized" else FLOAT_FILE


def _threshold_check(scores: np.ndarray) -> dict:
    """For 256 constant images (pixel 0..255): do 0..127 all match black and 128..255 all match white?"""
    same = lambda a, b: bool(np.allclose(a, b, rtol=1e-6, atol=1e-6))  # noqa: E731
    below = [v for v in range(128) if not same(scores[v], scores[0])]
    above = [v for v in range(128, 256) if not same(scores[v], scores[255])]
    return {"ok": not below and not above,
            "levels_0_127_equal_black": not below, "levels_128_255_equal_white": not above,
            "black_differs_from_white": not same(scores[0], scores[255]),
            "mismatched_levels": below + above}


def _summary(name: str, labels: np.ndarray, scores: np.ndarray, truth: np.ndarray, ref_labels: np.ndarray) -> dict:
    return {"accuracy": float(np.mean(labels == truth)), "agreement_with_keras": float(np.mean(labels == ref_labels)),
            "disagreements": int(np.sum(labels != ref_labels)), "finite": bool(np.isfinite(scores).all()),
            "label_is_argmax_scores": float(np.mean(labels == scores.argmax(axis=1)))}


# ----------------------------------------------------------------------------------------------------- export


def _source_data_dir(data_dir: str | None, manifest: dict) -> str | None:
    from dim_tf import data

    folder = data.resolve_data_dir(data_dir)
    if folder is None and os.path.isdir(str(manifest.get("data_source", ""))):
        folder = manifest["data_source"]  # where the model was trained from, if still there
    return folder


def _publish(tmp: str, out: str, overwrite: bool) -> None:
    if not os.path.exists(out):
        os.rename(tmp, out)
        return
    if not overwrite:
        raise ExportError(f"{out} already exists; pass --overwrite to replace it")
    if not os.path.isfile(os.path.join(out, lite.BUNDLE_JSON)):
        raise ExportError(f"{out} exists and is not a bundle (no {lite.BUNDLE_JSON}); refusing to replace it")
    old = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.old-", dir=os.path.dirname(out))
    os.rename(out, os.path.join(old, "bundle"))
    os.rename(tmp, out)
    shutil.rmtree(old, ignore_errors=True)


def export_bundle(model_dir: str, out: str, variant: str = "default", quantize: str = "int8",
                  data_dir: str | None = None, representative_samples: int = DEFAULT_REPRESENTATIVE_SAMPLES,
                  verify_images: int | None = None, checks: Checks = Checks(), overwrite: bool = False,
                  log=print, views: bool = False) -> dict:
    """Exports `model_dir` to the bundle folder `out` (atomically) and returns its bundle.json.

    verify_images: test images used for verification (None: the full test set). views: also write the DIM
    family's picture companion, model_views.tflite (see `dim_tf.export.views`). Raises `ExportError` (and leaves
    nothing at `out`) when the model cannot be exported or a file fails verification.
    """
    if variant not in VARIANTS:
        raise ExportError(f"unknown variant {variant!r}; choose one of {VARIANTS}")
    if quantize not in QUANTIZE:
        raise ExportError(f"unknown quantization {quantize!r}; choose one of {QUANTIZE}")
    if representative_samples < 1 and quantize == "int8":
        raise ExportError("int8 export needs at least one representative sample")
    out = os.path.abspath(out)
    if os.path.exists(out) and not overwrite:
        raise ExportError(f"{out} already exists; pass --overwrite to replace it")
    parent = os.path.dirname(out)
    created = []  # folders this export creates above the bundle, deepest first (removed again on failure)
    folder = parent
    while not os.path.exists(folder):
        created.append(folder)
        folder = os.path.dirname(folder)
    try:
        os.makedirs(parent, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.tmp-", dir=parent)
    except OSError as e:
        raise ExportError(f"cannot write beside {out} ({e.strerror}); pick another --out") from e
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; a published bundle gets the usual permissions
        with tempfile.TemporaryDirectory(prefix="dim_tf_export-") as scratch:
            meta = _build(model_dir, tmp, scratch, variant, quantize, data_dir, representative_samples,
                          verify_images, checks, log, views)
        _publish(tmp, out, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for folder in created:
            with contextlib.suppress(OSError):
                os.rmdir(folder)
        raise
    log(f"wrote {out}")
    return meta


def _build(model_dir, tmp, scratch, variant, quantize, data_dir, representative_samples, verify_images, checks,
           log, views=False) -> dict:
    from dim_tf import data, model_dir as md, predict, registry
    from dim_tf.export import views as views_mod

    t0 = time.time()
    trained, manifest = md.load(model_dir)
    name = manifest.get("model", "?")
    if variant == "bi":
        model = registry.bi_variant(trained)
        if model is None:
            raise ExportError(f"model {name!r} has no binarized variant (only {sorted(registry.BI_VARIANTS)})")
        model_name = registry.BI_VARIANTS.get(name, f"bi_{name}")
    else:
        model, model_name = trained, name
    dataset_name = manifest.get("dataset", "mnist")
    dataset = data.load(dataset_name, _source_data_dir(data_dir, manifest))
    test = dataset.test.take(verify_images)
    names = CLASS_NAMES.get(dataset_name, [str(i) for i in range(10)])
    log(f"{model_name} from {model_dir}; {dataset_name} from {dataset.source}")

    # 1. SavedModels (the int8 one differs only in the input threshold's comparison) and conversions.
    head, kind, binarize, output_names = _make_head(model, int8_input_rule=False)
    _saved_model(head, os.path.join(scratch, "sm_float"))
    float_bytes = _convert(os.path.join(scratch, "sm_float"), "none")
    if float_bytes is None or len(float_bytes) == 0:
        raise ExportError("the TFLite converter returned an empty float model")
    files = {}
    rep_info = representative = None
    if quantize == "int8":
        rng = np.random.default_rng(0)
        n = min(representative_samples, len(dataset.train))
        idx = np.sort(rng.choice(len(dataset.train), size=n, replace=False))
        representative = dataset.train.images[idx]
        rep_info = {"samples": int(n), "source": f"{dataset_name} training split (first 55,000 official training "
                                                  "images), random without replacement, seed 0"}
        sm_int8 = os.path.join(scratch, "sm_int8")
        if binarize:
            _saved_model(_make_head(model, int8_input_rule=True)[0], sm_int8)
        else:
            sm_int8 = os.path.join(scratch, "sm_float")
        t = time.time()
        files[MODEL_FILE] = _convert(sm_int8, "int8", representative)
        log(f"int8 conversion with {n} representative images: {time.time() - t:.1f}s")
        files[FLOAT_FILE] = float_bytes
    elif quantize == "float16":
        files[MODEL_FILE] = _convert(os.path.join(scratch, "sm_float"), "float16")
        files[FLOAT_FILE] = float_bytes
    else:
        files[MODEL_FILE] = float_bytes
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
        "test_images": n_test, "dataset_source": dataset.source,
        "thresholds": {"max_accuracy_drop": checks.max_accuracy_drop, "min_agreement": checks.min_agreement},
        "keras": {"accuracy": float(np.mean(keras_labels[:n_test] == truth))},
        "representative": rep_info,
    }
    problems = []
    which_models = [("quantized", MODEL_FILE)] + ([("float", FLOAT_FILE)] if FLOAT_FILE in files else [])
    for which, filename in which_models:
        t = time.time()
        res = _run_bundle_model(tmp, which, images_path, scratch)
        scores, labels = res["scores"], res["labels"]
        summary = _summary(filename, labels[:n_test], scores[:n_test], truth, keras_labels[:n_test])
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
            summary["threshold_check"] = _threshold_check(scores[n_test:])
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
        verification["keras"]["threshold_check"] = _threshold_check(keras_scores[n_test:])
    if problems:
        raise ExportError("export verification failed:\n  " + "\n  ".join(problems))

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
        "source": {"model_dir": os.path.abspath(model_dir), "manifest_test_accuracy": manifest.get("test_accuracy"),
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
