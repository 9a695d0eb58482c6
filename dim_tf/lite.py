"""TFLite runtime for bundles written by `python -m dim_tf.export`: no TensorFlow needed (LiteRT + NumPy).

    python -m dim_tf.lite BUNDLE IMAGE [IMAGE ...] [--float] [--invert] [--json]

prints each image's label and its ten scores. Images: PNG/JPEG (needs Pillow; colour is converted to grayscale,
16-bit grayscale is scaled to 8 bits, other sizes are resized to 28x28, each with a warning) or NPY ([28, 28],
[28, 28, 1] or [1, 28, 28, 1]; uint8 0..255 or float in [0, 1]). MNIST digits are light on a black background:
pass --invert for dark-on-light drawings.

Python API:

    from dim_tf import lite
    bundle = lite.load_bundle("bundles/bidim")      # checks every file's sha256 against bundle.json
    pred = bundle.predict(images)                   # uint8 0..255 or float [0, 1]; [28, 28], [N, 28, 28(, 1)]
    pred.labels, pred.scores, pred.names

A bundle holds `model.tflite` (int8, uint8 input; or float16/float32 with `--quantize`), `model_float.tflite`
(float32 reference), `labels.txt` and `bundle.json` (see `dim_tf.export`). The DIM family's graphs output the ten
numerators sum(F_i(D(x))) and the denominator sum(D(x)); this runtime computes the scores as
numerators / max(denominator, 1) in float32 (an int8 DIV aborts the interpreter when its divisor quantises to
zero, e.g. on a black image). This module must stay importable without TensorFlow.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import sys
import warnings

import numpy as np

from dim_tf import console
from dim_tf.validation import InputError

BUNDLE_JSON = "bundle.json"
FORMAT = "dim_tf.lite-bundle"
FORMAT_VERSION = 1
IMAGE_SHAPE = (28, 28, 1)
MODELS = ("quantized", "float")
CHUNK = 1000  # images per interpreter call in `predict`
WIDE_GRAY_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")  # Pillow's 16- and 32-bit grayscale


class BundleError(ValueError):
    """A bundle folder that is missing, incomplete, corrupt (sha256 mismatch) or of another format."""


class ImageError(InputError):
    """An image file that cannot be read or has an unusable shape or range."""


# ----------------------------------------------------------------------------------------------------- images


def as_batch(images) -> np.ndarray:
    """Images as [N, 28, 28, 1] (uint8 0..255 or float32 in [0, 1]), or `InputError` naming the problem.

    Accepts one image [28, 28] or [28, 28, 1], or a batch [N, 28, 28] or [N, 28, 28, 1]; dtype uint8, another
    integer type holding 0..255, or float in [0, 1] (NaN and infinities are refused).
    """
    x = np.asarray(images)
    if x.dtype.kind not in "uif":  # bool, object, strings, complex
        raise InputError(f"images must be numeric (uint8 0..255 or float in [0, 1]), got dtype {x.dtype}")
    if x.ndim == 2 and x.shape == IMAGE_SHAPE[:2]:
        x = x[None, ..., None]
    elif x.ndim == 3 and x.shape == IMAGE_SHAPE:
        x = x[None]
    elif x.ndim == 3 and x.shape[1:] == IMAGE_SHAPE[:2]:
        x = x[..., None]
    if x.ndim != 4 or tuple(x.shape[1:]) != IMAGE_SHAPE:
        raise InputError(f"images must have shape [28, 28], [28, 28, 1], [N, 28, 28] or [N, 28, 28, 1] "
                         f"(grayscale 28x28), got {list(x.shape)}")
    if len(x) == 0:
        raise InputError("got an empty batch of images")
    if np.issubdtype(x.dtype, np.floating):
        if not np.isfinite(x).all():
            raise InputError("images contain NaN or infinite values")
        lo, hi = float(x.min()), float(x.max())
        if lo < 0.0 or hi > 1.0:
            hint = "; it looks like 0..255: pass uint8 or divide by 255" if 1.0 < hi <= 255.0 and lo >= 0 else ""
            raise InputError(f"float images must lie in [0, 1], got values in [{lo:g}, {hi:g}]{hint}")
        return x.astype(np.float32, copy=False)
    if np.issubdtype(x.dtype, np.integer):
        if x.dtype != np.uint8:
            lo, hi = int(x.min()), int(x.max())
            if lo < 0 or hi > 255:
                raise InputError(f"integer images must lie in 0..255, got values in [{lo}, {hi}]")
            x = x.astype(np.uint8)
        return x
    raise InputError(f"images must be uint8 0..255 or float in [0, 1], got dtype {x.dtype}")


def _wide_gray_to_8bit(path: str, img) -> np.ndarray:
    """A 16-bit (or 32-bit integer) grayscale image's levels as uint8: 0..65535 scaled to 0..255 (warns)."""
    x = np.asarray(img).astype(np.int64)
    lo, hi = int(x.min()), int(x.max())
    if img.mode == "I" and 0 <= lo and hi <= 255:  # 8-bit levels stored as 32-bit integers
        return x.astype(np.uint8)
    if lo < 0 or hi > 65535:
        raise ImageError(f"{path}: {img.mode} grayscale levels {lo}..{hi} are outside 16 bits; save it as 8-bit")
    warnings.warn(f"{path}: 16-bit grayscale image scaled to 8 bits (0..65535 -> 0..255)", stacklevel=3)
    return np.round(x / 257.0).astype(np.uint8)


def load_image(path: str, invert: bool = False) -> np.ndarray:
    """One image file (PNG/JPEG via Pillow, or NPY) as uint8 or float32 [28, 28, 1]; warns when it converts."""
    if not os.path.isfile(path):
        raise ImageError(f"{path}: no such file")
    if path.lower().endswith(".npy"):
        try:
            x = np.load(path, allow_pickle=False)
        except Exception as e:  # ValueError, OSError, pickle refusals, truncated files
            raise ImageError(f"{path}: not a readable .npy file ({type(e).__name__}: {e})") from e
        shape = list(x.shape)
        if x.ndim == 4 and x.shape[0] == 1:
            x = x[0]
        if x.ndim == 2:
            x = x[..., None]
        if x.shape != IMAGE_SHAPE:
            raise ImageError(f"{path}: an .npy image must have shape [28, 28], [28, 28, 1] or [1, 28, 28, 1], "
                             f"got {shape} (NPY files are not resized; save a 28x28 grayscale image)")
        try:
            x = as_batch(x)[0]
        except InputError as e:
            raise ImageError(f"{path}: {e}") from e
    else:
        try:
            from PIL import Image, UnidentifiedImageError
        except ImportError as e:
            raise ImageError(f"{path}: reading PNG/JPEG needs Pillow (`pip install pillow`); without it only "
                             ".npy images are supported") from e
        try:
            with Image.open(path) as img:
                img.load()
                if img.mode in WIDE_GRAY_MODES:  # convert("L") would clip every level above 255 to white
                    img = Image.fromarray(_wide_gray_to_8bit(path, img))
                elif img.mode != "L":
                    warnings.warn(f"{path}: {img.mode} image converted to 8-bit grayscale", stacklevel=2)
                    img = img.convert("L")
                if img.size != IMAGE_SHAPE[:2]:
                    warnings.warn(f"{path}: {img.size[0]}x{img.size[1]} image resized to 28x28; the model was "
                                  "trained on centred 28x28 digits, so expect lower accuracy", stacklevel=2)
                    img = img.resize(IMAGE_SHAPE[:2], Image.Resampling.LANCZOS)
                x = np.asarray(img, dtype=np.uint8)[..., None]
        except ImageError:
            raise
        except (UnidentifiedImageError, OSError, ValueError) as e:
            raise ImageError(f"{path}: not a readable image ({type(e).__name__}: {e})") from e
    if invert:
        x = 255 - x if x.dtype == np.uint8 else 1.0 - x
    elif float(x.mean()) > (127 if x.dtype == np.uint8 else 0.5):
        warnings.warn(f"{path}: mostly light image; MNIST digits are light on black, pass --invert for "
                      "dark-on-light drawings", stacklevel=2)
    return x


# ----------------------------------------------------------------------------------------------------- bundles


def sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _interpreter_module():
    """The interpreter module: ai_edge_litert's, else the older standalone tflite_runtime's."""
    try:
        from ai_edge_litert import interpreter
    except ImportError:
        try:
            from tflite_runtime import interpreter
        except ImportError as e:
            raise ImportError("dim_tf.lite needs the LiteRT interpreter: `pip install ai-edge-litert`") from e
    return interpreter


@dataclasses.dataclass(frozen=True)
class Prediction:
    """`labels` int [N], `scores` float32 [N, 10] (the model's logits), `names` the labels' class names."""

    labels: np.ndarray
    scores: np.ndarray
    names: list[str]


class Runner:
    """One .tflite file's `serving_default` signature, resized only when the batch size changes. `xnnpack=False`
    turns off the XNNPACK delegate the interpreter applies by default (for comparisons: it is the faster path)."""

    def __init__(self, path: str, signature: str = "serving_default", num_threads: int | None = None,
                 xnnpack: bool = True):
        module = _interpreter_module()
        options = {} if xnnpack else {
            "experimental_op_resolver_type": module.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES}
        try:
            self.interpreter = module.Interpreter(model_path=path, num_threads=num_threads, **options)
            signatures = self.interpreter.get_signature_list()
        except (ValueError, RuntimeError) as e:
            raise BundleError(f"{path}: not a loadable TFLite model ({e})") from e
        if signature not in signatures:
            raise BundleError(f"{path}: no signature {signature!r} (has {sorted(signatures)})")
        runner = self.interpreter.get_signature_runner(signature)
        inputs = runner.get_input_details()
        if len(inputs) != 1:
            raise BundleError(f"{path}: expected one input, the signature has {sorted(inputs)}")
        (self.input_name, self.input), = inputs.items()
        self.outputs = runner.get_output_details()
        self.input_dtype = np.dtype(self.input["dtype"])
        scales = self.input["quantization_parameters"]["scales"]
        zeros = self.input["quantization_parameters"]["zero_points"]
        self.input_scale = float(scales[0]) if len(scales) else None
        self.input_zero_point = int(zeros[0]) if len(zeros) else None
        self._batch = None

    def __call__(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Raw outputs for an input batch already in the model's dtype ([N, 28, 28, 1])."""
        if x.dtype != self.input_dtype:
            raise InputError(f"model input is {self.input_dtype}, got {x.dtype}")
        if x.shape[0] != self._batch:
            self.interpreter.resize_tensor_input(self.input["index"], list(x.shape))
            with console.quiet_stderr():  # applying the XNNPACK delegate prints an INFO line
                self.interpreter.allocate_tensors()
            self._batch = x.shape[0]
        self.interpreter.set_tensor(self.input["index"], np.ascontiguousarray(x))
        self.interpreter.invoke()
        return {name: self.interpreter.get_tensor(d["index"]).copy() for name, d in self.outputs.items()}


def scores_from_outputs(outputs: dict[str, np.ndarray], spec: dict) -> np.ndarray:
    """The scores [N, K] from a graph's raw outputs, per the bundle's `outputs` spec."""
    if spec["scores"] == "numerators / max(denominator, min_denominator)":
        num = outputs["numerators"].astype(np.float32)
        den = np.maximum(outputs["denominator"].astype(np.float32), np.float32(spec["min_denominator"]))
        return num / den.reshape(-1, 1)
    return outputs["scores"].astype(np.float32)


class Bundle:
    """A loaded bundle: `predict(images)`; `meta` is bundle.json, `names` the class names."""

    def __init__(self, path: str, model: str = "quantized", num_threads: int | None = None, check_sha: bool = True,
                 xnnpack: bool = True):
        if model not in MODELS:
            raise ValueError(f"model must be one of {MODELS}, got {model!r}")
        self.path = path
        self.meta = read_meta(path)
        files = self.meta["files"]
        filename = self.meta["models"].get(model)
        if filename is None:
            raise BundleError(f"{path}: this bundle has no {model} model (exported with --quantize "
                              f"{self.meta.get('quantize')})")
        for name in (filename, "labels.txt"):
            full = os.path.join(path, name)
            if not os.path.isfile(full):
                raise BundleError(f"{path}: {name} is missing; re-export the bundle")
            if name not in files:
                raise BundleError(f"{path}: bundle.json lists no sha256 for {name}; re-export the bundle")
            if check_sha and sha256(full) != files[name]["sha256"]:
                raise BundleError(f"{path}: {name} does not match the sha256 in bundle.json (corrupt or replaced "
                                  "file); re-export the bundle")
        with open(os.path.join(path, "labels.txt"), encoding="utf-8") as f:
            self.names = [line.rstrip("\n") for line in f if line.strip()]
        self.model = model
        self.filename = filename
        self.runner = Runner(os.path.join(path, filename), self.meta["signature"], num_threads, xnnpack)
        missing = set(self.meta["outputs"]["names"]) - set(self.runner.outputs)
        if missing:
            raise BundleError(f"{path}: {filename} lacks the outputs {sorted(missing)} named in bundle.json")

    def prepare(self, images) -> np.ndarray:
        """Images (see `as_batch`) converted to this model's input: uint8 pixels, or float32 in [0, 1]."""
        x = as_batch(images)
        if self.runner.input_dtype == np.uint8:
            if x.dtype != np.uint8:
                x = np.round(x * 255.0).astype(np.uint8)
            return x
        if self.runner.input_dtype == np.float32:
            return x.astype(np.float32) / np.float32(255.0) if x.dtype == np.uint8 else x
        raise BundleError(f"{self.filename}: unsupported input dtype {self.runner.input_dtype}")

    def raw(self, images) -> dict[str, np.ndarray]:
        """The graph's raw outputs, concatenated over chunks of `CHUNK` images."""
        x = self.prepare(images)
        parts = [self.runner(x[i:i + CHUNK]) for i in range(0, len(x), CHUNK)]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def predict(self, images) -> Prediction:
        """Labels and scores of images (uint8 0..255 or float [0, 1]; one image or a batch)."""
        out = self.raw(images)
        scores = scores_from_outputs(out, self.meta["outputs"])
        if not np.isfinite(scores).all():
            raise BundleError(f"{self.filename} produced NaN or infinite scores: the model file is broken "
                              "(re-export and check the export's verification)")
        labels = out["label"].astype(np.int64).reshape(-1)
        return Prediction(labels, scores, [self.names[i] for i in labels])


def read_meta(path: str) -> dict:
    """bundle.json of a bundle folder, checked for format and required keys."""
    if not os.path.isdir(path):
        raise BundleError(f"bundle {path!r} does not exist or is not a folder")
    meta_path = os.path.join(path, BUNDLE_JSON)
    if not os.path.isfile(meta_path):
        raise BundleError(f"{path} has no {BUNDLE_JSON}: not a dim_tf bundle (write one with "
                          "`python -m dim_tf.export --model_dir DIR --out BUNDLE`)")
    try:
        with open(meta_path, encoding="utf-8") as f:
            meta = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BundleError(f"{meta_path} is corrupt ({e}); re-export the bundle") from e
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise BundleError(f"{meta_path} is not a {FORMAT} file")
    if meta.get("format_version") != FORMAT_VERSION:
        raise BundleError(f"{meta_path} has format_version {meta.get('format_version')}, this runtime reads "
                          f"{FORMAT_VERSION}; re-export the bundle or update dim_tf")
    missing = [k for k in ("files", "models", "signature", "outputs") if k not in meta]
    if missing:
        raise BundleError(f"{meta_path} lacks {missing}; re-export the bundle")
    return meta


def load_bundle(path: str, model: str = "quantized", num_threads: int | None = None,
                check_sha: bool = True, xnnpack: bool = True) -> Bundle:
    """Loads a bundle folder's `model` ("quantized": model.tflite, or "float": model_float.tflite)."""
    return Bundle(path, model, num_threads, check_sha, xnnpack)


# ----------------------------------------------------------------------------------------------------- CLI


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dim_tf.lite", description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle", help="bundle folder written by python -m dim_tf.export")
    parser.add_argument("images", nargs="+", help="PNG/JPEG (needs Pillow) or NPY images")
    parser.add_argument("--float", action="store_true", help="run model_float.tflite instead of model.tflite")
    parser.add_argument("--invert", action="store_true", help="invert images (dark digits on a light background)")
    parser.add_argument("--json", action="store_true", help="print one JSON object per image")
    parser.add_argument("--threads", type=int, default=None, help="interpreter threads")
    args = parser.parse_args(argv)
    with warnings.catch_warnings():  # restores showwarning afterwards
        warnings.simplefilter("always")
        warnings.showwarning = lambda message, *a, **k: print(f"warning: {message}", file=sys.stderr)
        try:
            bundle = load_bundle(args.bundle, "float" if args.float else "quantized", args.threads)
            images = [load_image(p, args.invert) for p in args.images]
            if any(x.dtype != np.uint8 for x in images):  # mixed files: all as float in [0, 1]
                images = [x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x for x in images]
            pred = bundle.predict(np.stack(images))
        except (ValueError, ImportError) as e:  # BundleError, InputError/ImageError, a missing runtime
            return console.refuse(e)
    for path, label, name, scores in zip(args.images, pred.labels, pred.names, pred.scores):
        if args.json:
            print(json.dumps({"image": path, "label": int(label), "name": name,
                              "scores": [round(float(s), 6) for s in scores]}))
        else:
            print(f"{path}: {name} (label {label})  scores " + " ".join(f"{s:.4f}" for s in scores))
    return 0


if __name__ == "__main__":
    sys.exit(main())
