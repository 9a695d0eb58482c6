"""File sizes and single-image latency of a bundle's int8 and float TFLite models and of the Keras model.

    python -m dim_tf.bench.bundle --bundle bundles/bidim --model_dir runs/dim [--runs 200] [--threads 1]

Latency: one image (batch 1), median (and 10th/90th percentiles) over `--runs` timed calls after `--warmup` untimed
ones, on `--threads` threads. TFLite: set input, invoke, read outputs (the `dim_tf.lite.Runner` call), with the
XNNPACK delegate the interpreter applies by default (what `dim_tf.lite` uses) and, for comparison, without it.
Keras: the bundle's variant (e.g. biDIM) called through a `tf.function` on a constant tensor, result copied to NumPy.
The Keras model is loaded from --model_dir (its model.keras sha256 is compared with the one recorded in bundle.json).
"""

from __future__ import annotations

import os
import statistics
import sys
import time

import numpy as np

from dim_tf import console, lite

MIN_RUNS = 200


def _timed(fn, runs: int, warmup: int) -> dict:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    ms = np.array(times) * 1e3
    return {"median_ms": float(statistics.median(ms)), "p10_ms": float(np.percentile(ms, 10)),
            "p90_ms": float(np.percentile(ms, 90)), "runs": runs}


def benchmark(bundle: str, model_dir: str | None = None, runs: int = MIN_RUNS, warmup: int = 20, threads: int = 1,
              log=print) -> dict:
    """Measures the bundle's models (and the Keras model when `model_dir` is given); returns the numbers."""
    meta = lite.read_meta(bundle)
    image = np.random.default_rng(0).integers(0, 256, size=(1, 28, 28, 1), dtype=np.uint8)
    rows = {}
    for which in lite.MODELS:
        filename = meta["models"].get(which)
        if filename is None:
            continue
        for xnnpack in (True, False):
            b = lite.load_bundle(bundle, which, num_threads=threads, xnnpack=xnnpack)
            x = b.prepare(image)
            row = {"file": filename, "bytes": os.path.getsize(os.path.join(bundle, filename)),
                   "input": str(b.runner.input_dtype), "xnnpack": xnnpack}
            row.update(_timed(lambda: b.runner(x), runs, warmup))
            name = f"tflite {which}" + (f" ({meta['quantize']})" if which == "quantized" else " (float32)")
            rows[name + ("" if xnnpack else ", no XNNPACK")] = row
    if model_dir is not None:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
        from dim_tf import model_dir as md, registry

        model, _ = md.load(model_dir)
        if meta.get("variant") == "bi":
            model = registry.bi_variant(model)
        path = os.path.join(model_dir, md.MODEL_FILE)
        recorded = (meta.get("source") or {}).get("model_keras_sha256")
        if recorded and recorded != lite.sha256(path):
            log(f"warning: {path} is not the model this bundle was exported from (sha256 differs)")
        call = tf.function(lambda t: model(t))
        x = tf.constant(image.astype(np.float32) / 255.0)
        row = {"file": os.path.relpath(path), "bytes": os.path.getsize(path), "input": "float32"}
        row.update(_timed(lambda: call(x).numpy(), runs, warmup))
        rows[f"keras ({meta.get('model_name')}, tf.function)"] = row
    log(f"{meta.get('model_name')} bundle {bundle}: batch 1, {threads} thread(s), {runs} runs after {warmup} warm-up")
    log(f"{'model':<40} {'file':<22} {'size MB':>8} {'median ms':>10} {'p10 ms':>8} {'p90 ms':>8}")
    for name, r in rows.items():
        log(f"{name:<40} {os.path.basename(r['file']):<22} {r['bytes'] / 1e6:>8.2f} {r['median_ms']:>10.3f} "
            f"{r['p10_ms']:>8.3f} {r['p90_ms']:>8.3f}")
    return rows


def define_flags() -> None:
    from absl import flags

    flags.DEFINE_string("bundle", None, "Bundle folder written by python -m dim_tf.export.")
    flags.DEFINE_string("model_dir", None, "The trained model folder the bundle came from (adds the Keras row).")
    flags.DEFINE_integer("runs", MIN_RUNS, f"Timed single-image calls per model (at least {MIN_RUNS}).")
    flags.DEFINE_integer("warmup", 20, "Untimed calls before timing.")
    flags.DEFINE_integer("threads", 1, "Threads for the interpreters and TensorFlow.")
    flags.mark_flag_as_required("bundle")


def main(argv) -> int:
    del argv
    from absl import flags

    f = flags.FLAGS
    if f.runs < MIN_RUNS:
        print(f"error: --runs must be at least {MIN_RUNS}", file=sys.stderr)
        return 2
    try:
        benchmark(f.bundle, f.model_dir, f.runs, f.warmup, f.threads)
    except (ValueError, ImportError) as e:  # BundleError, ModelDirError, a missing runtime
        return console.refuse(e)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    define_flags()
    console.run(main)
