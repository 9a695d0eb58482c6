"""Inference speed of ABS against DIM on this machine, in one run:
`python -m dim_tf.bench.abs_vs_dim --abs_dir runs/abs --dim_dir runs/dim`.

Per image: the median latency of single-image calls (batch 1, each a traced `tf.function` call, after a warm-up
call) over `--single_images` test images for ABS and ten times as many for DIM. Batched: images/s over the first
`--batch_images` test images in batches of `--batch_size` (one pass for ABS, best of three for DIM). ABS's one-off
cost of decoding its prior samples (cached afterwards) is reported apart. Also the accuracy on the images timed
one at a time, and the ratios ABS time / DIM time (the paper: ABS takes "several seconds" per forward pass; goal:
DIM >= 1000x faster per image). With `--bundle` (an exported DIM/biDIM bundle), the on-device form is timed too:
its int8 TFLite model, batch 1, one thread, on the same single images.
"""

from __future__ import annotations

import statistics
import time

import numpy as np
from absl import flags

from dim_tf import console

FLAGS = flags.FLAGS


def define_flags() -> None:
    flags.DEFINE_string("abs_dir", None, "A trained ABS run (python -m dim_tf.train --model abs).")
    flags.DEFINE_string("dim_dir", None, "A trained DIM run.")
    flags.DEFINE_string("data_dir", None, "Folder with the LeCun IDX files (else $DIM_TF_DATA_DIR, else tfds).")
    flags.DEFINE_integer("single_images", 20, "Test images timed one at a time for ABS (DIM: ten times as many).")
    flags.DEFINE_integer("batch_images", 500, "Test images timed in batches.")
    flags.DEFINE_integer("batch_size", 250, "Batch size of the batched timing.")
    flags.DEFINE_integer("abs_samples", None, "ABS prior samples per class (default: the model's, 8000).")
    flags.DEFINE_integer("abs_steps", None, "ABS Adam steps on the latents (default: the model's, 50).")
    flags.DEFINE_string("bundle", None, "Also time this exported DIM bundle's int8 TFLite model (python -m "
                        "dim_tf.export), batch 1, one thread.")
    flags.DEFINE_string("output", None, "Also write the figures to this JSON file.")
    flags.mark_flags_as_required(["abs_dir", "dim_dir"])


def time_each(call, inputs: list) -> tuple[list[float], list[int]]:
    """(wall seconds, predicted class) of `call` (a batch -> [1, 10] logits) on each of the batch-1 `inputs`, after
    one warm-up call."""
    np.asarray(call(inputs[0]))
    seconds, predicted = [], []
    for x in inputs:
        start = time.perf_counter()
        logits = np.asarray(call(x))
        seconds.append(time.perf_counter() - start)
        predicted.append(int(logits.argmax()))
    return seconds, predicted


def single_image_calls(model, images) -> tuple[list[float], list[int]]:
    """`time_each` for a traced call of `model` on images [N, 28, 28, 1], one at a time."""
    import tensorflow as tf

    call = tf.function(lambda x: model(x), reduce_retracing=True)
    return time_each(lambda x: call(x).numpy(), [tf.constant(images[i:i + 1]) for i in range(len(images))])


def measure(model, test, single: int, batch_images: int, batch_size: int, repeats: int) -> dict:
    from dim_tf.bench.inference import throughput

    seconds, predicted = single_image_calls(model, test.images[:single])
    return {"single_images": single, "median_seconds_per_image": statistics.median(seconds),
            "mean_seconds_per_image": statistics.fmean(seconds),
            "accuracy_on_single_images": sum(p == y for p, y in zip(predicted, test.labels[:single])) / single,
            "batch_images": batch_images, "batch_size": batch_size,
            "images_per_second": throughput(model, test.images[:batch_images], batch_size, repeats)}


def tflite_single_images(bundle: str, images, labels) -> dict:
    """Median latency and accuracy of the bundle's int8 model on images [N, 28, 28, 1] one at a time (1 thread)."""
    from dim_tf import lite

    b = lite.load_bundle(bundle, "quantized", num_threads=1)
    pixels = np.rint(np.asarray(images) * 255).astype(np.uint8)
    seconds, predicted = time_each(lambda x: b.predict(x).scores, [pixels[i:i + 1] for i in range(len(pixels))])
    return {"bundle": bundle, "single_images": len(pixels), "median_seconds_per_image": statistics.median(seconds),
            "accuracy_on_single_images": float(np.mean(np.asarray(predicted) == np.asarray(labels)))}


def run(abs_dir: str, dim_dir: str, data_dir: str | None, single: int, batch_images: int, batch_size: int,
        abs_samples: int | None = None, abs_steps: int | None = None, bundle: str | None = None, log=print) -> dict:
    """Times ABS (its settings possibly overridden) and DIM; returns the figures and the ratios."""
    from dim_tf import data, model_dir as md, registry
    from dim_tf.models import ABS

    abs_model, abs_manifest = md.load(abs_dir)
    dim_model, dim_manifest = md.load(dim_dir)
    if not isinstance(abs_model, ABS):
        raise ValueError(f"--abs_dir {abs_dir} holds a {abs_manifest.get('model')!r} model, not abs")
    abs_model = registry.with_inference(abs_model, abs_samples, abs_steps)
    test = data.load("mnist", data_dir).test
    start = time.perf_counter()
    abs_model.prior()
    prior_seconds = time.perf_counter() - start
    log(f"ABS (N={abs_model.num_samples}, K={abs_model.steps}): prior decoded in {prior_seconds:.1f} s; timing ...")
    abs_row = {"model_dir": abs_dir, "num_samples": abs_model.num_samples, "steps": abs_model.steps,
               "prior_seconds": prior_seconds, **measure(abs_model, test, single, batch_images, batch_size, 1)}
    log("DIM: timing ...")
    dim_row = {"model_dir": dim_dir, "model": dim_manifest.get("model"),
               **measure(dim_model, test, 10 * single, batch_images, batch_size, 3)}
    ratios = {"per_image": abs_row["median_seconds_per_image"] / dim_row["median_seconds_per_image"],
              "batched": dim_row["images_per_second"] / abs_row["images_per_second"]}
    result = {"abs": abs_row, "dim": dim_row, "dim_faster_by": ratios, "versions": md.library_versions()}
    if bundle is not None:
        log("DIM int8 TFLite: timing ...")
        result["tflite"] = tflite_single_images(bundle, test.images[:10 * single], test.labels[:10 * single])
        ratios["per_image_tflite"] = abs_row["median_seconds_per_image"] / result["tflite"]["median_seconds_per_image"]
    return result


def main(argv) -> int:
    del argv
    from dim_tf import model_dir as md

    try:
        result = run(FLAGS.abs_dir, FLAGS.dim_dir, FLAGS.data_dir, FLAGS.single_images, FLAGS.batch_images,
                     FLAGS.batch_size, FLAGS.abs_samples, FLAGS.abs_steps, FLAGS.bundle)
    except ValueError as e:
        return console.refuse(e)
    a, d, r = result["abs"], result["dim"], result["dim_faster_by"]
    print("| model | per image, batch 1 (median) | batched images/s | accuracy on the single images |")
    print("|---|---|---|---|")
    print(f"| ABS (N={a['num_samples']}, K={a['steps']}) | {1e3 * a['median_seconds_per_image']:.1f} ms | "
          f"{a['images_per_second']:.2f} | {100 * a['accuracy_on_single_images']:.0f}% of {a['single_images']} |")
    print(f"| DIM | {1e3 * d['median_seconds_per_image']:.3f} ms | {d['images_per_second']:.0f} | "
          f"{100 * d['accuracy_on_single_images']:.0f}% of {d['single_images']} |")
    if "tflite" in result:
        t = result["tflite"]
        print(f"| DIM bundle, int8 TFLite | {1e3 * t['median_seconds_per_image']:.3f} ms | - | "
              f"{100 * t['accuracy_on_single_images']:.0f}% of {t['single_images']} |")
    print(f"DIM is {r['per_image']:.0f}x faster per image (batch 1) and {r['batched']:.0f}x faster batched "
          f"(batch {a['batch_size']}, {a['batch_images']} images); ABS's one-off prior decoding: "
          f"{a['prior_seconds']:.1f} s")
    if "per_image_tflite" in r:
        print(f"The int8 TFLite bundle is {r['per_image_tflite']:.0f}x faster per image than ABS")
    if FLAGS.output:
        md.write_json(FLAGS.output, result)
    return 0


if __name__ == "__main__":
    define_flags()
    console.run(main)
