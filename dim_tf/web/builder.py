"""Bundles -> a static site folder (see `dim_tf.web`).

    SITE/index.html, app.js, preprocess.js, attack.js, style.css   the page (dim_tf/web/static)
    SITE/site.json                     what the page loads: models, their files and outputs, test digits, the
                                       adaptive-suite line, versions, sizes
    SITE/models/<id>/                  each bundle's model.tflite, model_float.tflite, model_views.tflite (batch
                                       pinned to 1, see `pin_batch`), labels.txt, bundle.json
    SITE/digits/test-NNNN.png          the first N test images of the bundle's dataset (28x28 grayscale PNG)
    SITE/vendor/litertjs/              LiteRT.js (@litertjs/core, pinned by dim_tf/web/npm/package-lock.json)

The site is built in a hidden folder beside SITE and renamed into place when complete (and, with `check`, after it
has run in headless Chromium), so a failed build leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time

import numpy as np

from dim_tf import lite, model_dir
from dim_tf.shown_paths import shown_path
from dim_tf.web import SiteError, runtime

SITE_FORMAT = "dim_tf.web-site"
SITE_VERSION = 1
SITE_JSON = "site.json"
STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
STATIC_FILES = ("index.html", "app.js", "preprocess.js", "attack.js", "style.css")
DIM_SCORES = "numerators / max(denominator, min_denominator)"
VIEWS_OUTPUTS = ["denoised", "reconstructions"]
DISPLAY = {"dim": "DIM", "bidim": "biDIM", "im": "IM", "biim": "biIM", "single_im": "singleIM",
           "dn_single_im": "Dn-singleIM", "cnn": "CNN", "bicnn": "biCNN", "madry": "Madry", "bimadry": "biMadry"}
DEFAULT_DIGITS = 10


# ----------------------------------------------------------------------------------------------------- bundles


def inspect_bundle(path: str) -> dict:
    """A bundle's bundle.json and the files the site needs, checked (present, sha256); SiteError when lacking."""
    try:
        meta = lite.read_meta(path)  # missing folder / bundle.json, other format, wrong format_version
    except lite.BundleError as e:
        raise SiteError(str(e)) from e
    kind = "dim" if meta["outputs"].get("scores") == DIM_SCORES else "classifier"
    files = {"quantized": meta["models"].get("quantized"), "float": meta["models"].get("float")}
    views = meta.get("views")
    if kind == "dim":
        if not views or not views.get("file"):
            raise SiteError(f"{path}: this DIM bundle has no model_views.tflite, the page's D(x) and F_i(D(x)) "
                            f"pictures; re-export it with `python -m dim_tf.export --model_dir "
                            f"{(meta.get('source') or {}).get('model_dir', 'DIR')} --out {path} --variant "
                            f"{meta.get('variant', 'default')} --views --overwrite`")
        files["views"] = views["file"]
    else:
        files["views"] = None
    if not files["quantized"]:
        raise SiteError(f"{path}: bundle.json names no model file")
    for name in [f for f in files.values() if f] + ["labels.txt"]:
        full = os.path.join(path, name)
        if not os.path.isfile(full):
            raise SiteError(f"{path}: {name} is missing; the site needs it (re-export the bundle)")
        entry = meta["files"].get(name)
        if entry is None:
            raise SiteError(f"{path}: bundle.json lists no sha256 for {name}; re-export the bundle")
        if lite.sha256(full) != entry["sha256"]:
            raise SiteError(f"{path}: {name} does not match the sha256 in bundle.json (corrupt or replaced file); "
                            "re-export the bundle")
    with open(os.path.join(path, "labels.txt"), encoding="utf-8") as f:
        labels = [line.rstrip("\n") for line in f if line.strip()]
    return {"path": os.path.abspath(path), "meta": meta, "kind": kind, "files": files, "labels": labels}


def pin_batch(src: str, dst: str) -> dict:
    """Copies a .tflite file specialised to batch 1: the tensors' `shape_signature` dropped, and a RESHAPE whose
    target shape the graph computes from the batch at run time (SHAPE -> STRIDED_SLICE -> PACK) given that shape
    as a constant (the ops that only computed it are removed).

    The bundle's graphs take [N, 28, 28, 1] with N resizable; LiteRT.js 2.5.3 refuses a [1, 28, 28, 1] input against
    the signature [-1, 28, 28, 1], and a run-time reshape target made its outputs garbage (seen on the CNN graph).
    Every other operator, weight and quantisation parameter is kept as it is: the copy is run beside the original
    with the LiteRT interpreter on three images and must give identical outputs (and the tests compare the page's
    numbers with `dim_tf.lite` on the original file)."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    try:
        with open(src, "rb") as f:
            model = flatbuffer_utils.read_model_from_bytearray(bytearray(f.read()))
    except Exception as e:  # flatbuffers raises whatever a garbled file makes it raise
        raise SiteError(f"{src} is not a readable .tflite file ({type(e).__name__}: {e}); re-export the bundle") from e
    pinned = frozen = removed = 0
    for subgraph in model.subgraphs:
        for tensor in subgraph.tensors:
            sig = tensor.shapeSignature
            if sig is not None and len(sig) and (np.asarray(sig) < 0).any():
                tensor.shapeSignature = None
                pinned += 1
        for op in subgraph.operators:
            if flatbuffer_utils.opcode_to_name(model, op.opcodeIndex) != "RESHAPE" or len(op.inputs) < 2:
                continue
            shape_tensor = subgraph.tensors[op.inputs[1]]
            if model.buffers[shape_tensor.buffer].data is not None:
                continue  # already a constant
            target = np.asarray(subgraph.tensors[op.outputs[0]].shape, np.int32)
            buffer = schema.BufferT()
            buffer.data = np.frombuffer(target.tobytes(), np.uint8)
            model.buffers.append(buffer)
            const = schema.TensorT()
            const.shape, const.type, const.buffer = [len(target)], schema.TensorType.INT32, len(model.buffers) - 1
            const.name = f"{(shape_tensor.name or b'shape').decode() if isinstance(shape_tensor.name, bytes) else shape_tensor.name}_batch1"
            subgraph.tensors.append(const)
            op.inputs[1] = len(subgraph.tensors) - 1
            frozen += 1
        while True:  # drop operators whose outputs nothing reads any more
            used = set(subgraph.outputs) | {i for op in subgraph.operators for i in op.inputs}
            dead = [op for op in subgraph.operators if not any(o in used for o in op.outputs)]
            if not dead:
                break
            subgraph.operators = [op for op in subgraph.operators if op not in dead]
            removed += len(dead)
    with open(dst, "wb") as f:
        f.write(flatbuffer_utils.convert_object_to_bytearray(model))
    try:
        runner, original = lite.Runner(dst, num_threads=1), lite.Runner(src, num_threads=1)
    except lite.BundleError as e:
        raise SiteError(f"{src}: the batch-1 copy does not load ({e})") from e
    shape = list(runner.input["shape"])
    if shape != [1, 28, 28, 1]:
        raise SiteError(f"{src}: expected input [1, 28, 28, 1] after pinning the batch, got {shape}")
    ramp = (np.arange(28 * 28) * 7 % 256).astype(np.uint8).reshape(1, 28, 28, 1)
    for image in (np.zeros_like(ramp), ramp, 255 - ramp):
        x = image if runner.input_dtype == np.uint8 else image.astype(np.float32) / np.float32(255)
        a, b = runner(x), original(x)
        if sorted(a) != sorted(b) or any(not np.array_equal(a[k], b[k]) for k in a):
            raise SiteError(f"{src}: the batch-1 copy computes something else than the original; cannot ship it")
    return {"source_sha256": lite.sha256(src), "sha256": lite.sha256(dst), "bytes": os.path.getsize(dst),
            "tensors_pinned": pinned, "reshapes_made_constant": frozen, "operators_removed": removed}


# ----------------------------------------------------------------------------------------------------- adaptive


def _same_dir(a: str | None, b: str | None) -> bool:
    if not a or not b:
        return False
    return os.path.realpath(a) == os.path.realpath(b) or os.path.basename(os.path.normpath(a)) == \
        os.path.basename(os.path.normpath(b))


def adaptive_line(meta: dict, reports: list[tuple[str, dict]]) -> str | None:
    """One sentence from the adaptive suite's report (`adaptive.json`) for this bundle's model and variant."""
    source = (meta.get("source") or {}).get("model_dir")
    for path, report in reports:
        for m in report.get("models", []):
            if m.get("variant") != meta.get("variant") or not _same_dir(m.get("model_dir"), source):
                continue
            norms = m.get("norms", {})
            parts = []
            for norm, label in (("linf", "L-inf"), ("l2", "L2")):
                n = norms.get(norm)
                if n and n.get("accuracy") is not None:
                    med = n.get("median_distance")
                    parts.append(f"{100 * n['accuracy']:.1f}% at {label} {n['eps']:g}" +
                                 (f" (median distance {med:.3g})" if med is not None else ""))
            if not parts:
                continue
            clean = m.get("clean_accuracy")
            budget = report.get("budget", 1)
            name = DISPLAY.get(m.get("variant_name"), m.get("variant_name"))
            return (f"What the adaptive suite measured ({report.get('num_examples')} test images"
                    f"{f', budget {budget:g}' if budget != 1 else ''}; per image the worst case over every attack it "
                    f"runs): {name} keeps {' and '.join(parts)}" +
                    (f"; clean {100 * clean:.1f}%." if clean is not None else "."))
    return None


def _read_reports(paths: list[str], bundles: list[dict], log) -> list[tuple[str, dict]]:
    """The given adaptive.json files, else each bundle's model folder's default `eval/adaptive/adaptive.json`."""
    found = list(paths)
    if not found:
        for b in bundles:
            source = (b["meta"].get("source") or {}).get("model_dir")
            default = os.path.join(source, "eval", "adaptive", "adaptive.json") if source else None
            if default and os.path.isfile(default) and default not in found:
                found.append(default)
    reports = []
    for path in found:
        try:
            with open(path, encoding="utf-8") as f:
                report = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            raise SiteError(f"--adaptive {path}: not a readable adaptive.json ({e})") from e
        if report.get("suite") != "adaptive":
            raise SiteError(f"--adaptive {path}: not an adaptive-suite report (python -m dim_tf.eval --suite adaptive)")
        reports.append((path, report))
    return reports


# ----------------------------------------------------------------------------------------------------- digits


def write_digits(site: str, dataset: str, data_dir: str | None, count: int) -> list[dict]:
    """The first `count` test images as 28x28 grayscale PNGs under site/digits."""
    if count <= 0:
        return []
    from PIL import Image

    from dim_tf import data

    folder = data.resolve_data_dir(data_dir)
    if folder is None:
        raise SiteError(f"the test digits come from the {dataset} IDX files: pass --data_dir (or set "
                        f"${data.DATA_DIR_ENV}), or --digits 0 for a site without test digits")
    try:
        test = data.load_idx_split(folder, "test")
    except data.DataError as e:
        raise SiteError(f"test digits: {e}") from e
    count = min(count, len(test))
    os.makedirs(os.path.join(site, "digits"))
    out = []
    for i in range(count):
        name = f"digits/test-{i:04d}.png"
        pixels = np.round(test.images[i, ..., 0] * 255.0).astype(np.uint8)
        Image.fromarray(pixels, mode="L").save(os.path.join(site, name))
        out.append({"file": name, "index": i, "label": int(test.labels[i])})
    return out


# ----------------------------------------------------------------------------------------------------- site


def _summary(meta: dict) -> str:
    acc = meta.get("accuracy") or {}
    bits = []
    if acc.get("quantized") is not None:
        bits.append(f"{100 * acc['quantized']:.2f}% int8" if meta.get("quantize") == "int8"
                    else f"{100 * acc['quantized']:.2f}%")
    if acc.get("keras") is not None:
        bits.append(f"Keras {100 * acc['keras']:.2f}%")
    test = acc.get("test_images")
    return (f"{', '.join(bits)} on {test} {meta.get('dataset', 'mnist')} test images" if bits else "") + \
        (f"; binarized at {meta['threshold']['value']}" if meta.get("threshold") else "")


def _tree_size(folder: str) -> tuple[int, int]:
    total = files = 0
    for root, _, names in os.walk(folder):
        for name in names:
            total += os.path.getsize(os.path.join(root, name))
            files += 1
    return total, files


def _write(site: str, bundles: list[dict], digits: list[dict], reports, runtime_info: dict, log) -> dict:
    for name in STATIC_FILES:
        shutil.copyfile(os.path.join(STATIC_DIR, name), os.path.join(site, name))
    models, ids = [], set()
    for b in bundles:
        meta = b["meta"]
        base = meta.get("model_name") or os.path.basename(b["path"])
        model_id, k = base, 2
        while model_id in ids:
            model_id, k = f"{base}-{k}", k + 1
        ids.add(model_id)
        folder = os.path.join(site, "models", model_id)
        os.makedirs(folder)
        pinned = {}
        for which, name in b["files"].items():
            if name:
                pinned[name] = pin_batch(os.path.join(b["path"], name), os.path.join(folder, name))
        for name in ("labels.txt", lite.BUNDLE_JSON):
            shutil.copyfile(os.path.join(b["path"], name), os.path.join(folder, name))
        line = adaptive_line(meta, reports)
        models.append({
            "id": model_id, "name": DISPLAY.get(base, base), "model_name": base, "model": meta.get("model"),
            "variant": meta.get("variant"), "kind": b["kind"], "bundle": shown_path(b["path"]),
            "dir": f"models/{model_id}/",
            "files": b["files"], "quantize": meta.get("quantize"),
            "views_quantize": (meta.get("views") or {}).get("quantize"),
            "outputs": meta["outputs"], "views_outputs": VIEWS_OUTPUTS if b["files"]["views"] else [],
            "labels": b["labels"], "threshold": (meta.get("threshold") or {}).get("value"),
            "accuracy": meta.get("accuracy"), "summary": _summary(meta), "adaptive": line,
            "source_model_dir": (meta.get("source") or {}).get("model_dir"), "pinned": pinned,
        })
        log(f"{model_id}: {', '.join(n for n in b['files'].values() if n)} from {b['path']}" +
            ("" if line else " (no adaptive-suite result found)"))
    site_meta = {
        "format": SITE_FORMAT, "format_version": SITE_VERSION,
        "built": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "models": models, "digits": digits,
        "runtime": runtime_info, "adaptive_reports": [shown_path(p) for p, _ in reports],
        "pinned_batch_note": pin_batch.__doc__.split("\n\n")[0].strip(),
    }
    path = os.path.join(site, SITE_JSON)
    with open(path, "w") as f:  # provisional, for the size
        json.dump(site_meta, f)
    site_meta["bytes"], site_meta["files"] = _tree_size(site)
    with open(path, "w") as f:
        json.dump(site_meta, f, indent=1)
        f.write("\n")
    return site_meta


def build_site(bundles: list[str], out: str, *, digits: int = DEFAULT_DIGITS, data_dir: str | None = None,
               node_modules: str | None = None, adaptive: list[str] | None = None, overwrite: bool = False,
               check: bool = False, log=print) -> dict:
    """Writes the site for `bundles` (one or more bundle folders; the page switches between them) to `out`.

    Raises SiteError (and leaves nothing at `out`) when a bundle lacks what the page needs, npm cannot install the
    runtime, the test digits cannot be read, or, with `check`, the page fails in headless Chromium."""
    if not bundles:
        raise SiteError("give at least one bundle folder (python -m dim_tf.export ... --views writes one)")
    out = os.path.abspath(out)
    if os.path.exists(out):
        if not overwrite:
            raise SiteError(f"{out} already exists; pass --overwrite to replace it")
        if not os.path.isfile(os.path.join(out, SITE_JSON)):
            raise SiteError(f"{out} exists and is not a site (no {SITE_JSON}); refusing to replace it")
    inspected = [inspect_bundle(b) for b in bundles]
    datasets = {b["meta"].get("dataset", "mnist") for b in inspected}
    if len(datasets) > 1:
        raise SiteError(f"the bundles come from different datasets ({sorted(datasets)}); build one site per dataset")
    reports = _read_reports(list(adaptive or []), inspected, log)
    folder = runtime.node_modules(node_modules, log)
    with model_dir.atomic_folder(out, SiteError) as tmp:
        runtime_info = runtime.copy_into(tmp, folder)
        digit_list = write_digits(tmp, datasets.pop(), data_dir, digits)
        meta = _write(tmp, inspected, digit_list, reports, runtime_info, log)
        if check:
            from dim_tf.web import browser

            meta["check"] = browser.check_site(tmp, log)
    log(f"wrote {out}: {meta['bytes'] / 1e6:.1f} MB in {meta['files']} files; open it with "
        f"`python -m http.server -d {out} 8000` and http://localhost:8000/")
    return meta


def load_site(site: str) -> dict:
    """site.json of a built site."""
    with contextlib.suppress(FileNotFoundError), open(os.path.join(site, SITE_JSON), encoding="utf-8") as f:
        return json.load(f)
    raise SiteError(f"{site} has no {SITE_JSON}: not a site written by python -m dim_tf.web")
