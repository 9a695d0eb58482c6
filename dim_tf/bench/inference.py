"""Quality and speed figures of trained models: `python -m dim_tf.bench.inference --model_dirs runs/dim,runs/cnn`.

Prints, per model: clean test accuracy (and of its bi- variant), training seconds (from the manifest), batched
inference throughput in images/s, multiply-add FLOPs per image, and the fraction of this machine's fp32 matmul
peak (a 2048x2048 tf.matmul, measured in the same run) that the throughput reaches.
"""

from __future__ import annotations

import math
import time

from absl import flags

from dim_tf import console

FLAGS = flags.FLAGS


def define_flags() -> None:
    flags.DEFINE_list("model_dirs", None, "Comma-separated trained model folders.")
    flags.DEFINE_string("data_dir", None, "Folder with the LeCun IDX files (else $DIM_TF_DATA_DIR, else tfds).")
    flags.DEFINE_integer("batch_size", 1000, "Batch size of the throughput measurement.")
    flags.DEFINE_string("output", None, "Also write the figures to this JSON file.")
    flags.mark_flag_as_required("model_dirs")


def einsum_flops(equation: str, shapes) -> int:
    inputs, _ = equation.replace(" ", "").split("->")
    sizes = {}
    for spec, shape in zip(inputs.split(","), shapes):
        for letter, size in zip(spec, shape):
            sizes[letter] = size
    total = 2
    for size in sizes.values():
        total *= size
    return total


def flops_per_image(model) -> int:
    """Multiply-add FLOPs (2 per MAC) of the conv, transposed-conv, matmul and einsum ops for one image."""
    import tensorflow as tf

    graph = tf.function(model).get_concrete_function(tf.TensorSpec([1, 28, 28, 1], tf.float32)).graph
    total = 0
    for op in graph.get_operations():
        shapes = [[int(d) for d in t.shape] for t in op.inputs]
        out = [int(d) for d in op.outputs[0].shape] if op.outputs else []
        if op.type == "Conv2D":  # filter [kh, kw, ci, co], output [1, H, W, co]
            kh, kw, ci, _ = shapes[1]
            total += 2 * math.prod(out) * kh * kw * ci
        elif op.type == "Conv2DBackpropInput":  # transposed conv: filter [kh, kw, c_out, c_in], input shapes[2]
            kh, kw, c_out, _ = shapes[1]
            total += 2 * math.prod(shapes[2]) * kh * kw * c_out
        elif op.type == "MatMul":
            a, b = shapes
            total += 2 * a[0] * a[1] * (b[0] if op.get_attr("transpose_b") else b[1])
        elif op.type == "Einsum":
            total += einsum_flops(op.get_attr("equation").decode(), shapes)
        elif op.type in ("BatchMatMulV2", "BatchMatMulV3"):
            a, b = shapes
            total += 2 * math.prod(out) * (a[-2] if op.get_attr("adj_x") else a[-1])
    return total


def matmul_peak_gflops(n: int = 2048, repeats: int = 10) -> float:
    """Measured fp32 GFLOP/s of an n x n tf.matmul (best of `repeats`)."""
    import tensorflow as tf

    a = tf.random.normal([n, n])
    mm = tf.function(lambda x: tf.matmul(x, x))
    mm(a).numpy()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        mm(a).numpy()
        best = min(best, time.perf_counter() - start)
    return 2 * n ** 3 / best / 1e9


def throughput(model, images, batch_size: int, repeats: int = 3) -> float:
    """Images per second of batched inference over `images` (best of `repeats` passes)."""
    import tensorflow as tf

    call = tf.function(lambda x: model(x))
    batches = [tf.constant(images[i:i + batch_size]) for i in range(0, len(images), batch_size)]
    call(batches[0]).numpy()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for batch in batches:
            call(batch).numpy()
        best = min(best, time.perf_counter() - start)
    return len(images) / best


def benchmark_dir(model_dir: str, dataset, batch_size: int, peak: float) -> dict:
    from dim_tf import model_dir as md, predict, registry

    model, manifest = md.load(model_dir)
    row = {"model_dir": model_dir, "model": manifest["model"],
           "test_accuracy": {manifest["model"]: predict.accuracy(model, dataset.test.images, dataset.test.labels)},
           "training_seconds": manifest["training_seconds"], "parameters": manifest["parameters"]}
    bi = registry.bi_variant(model)
    if bi is not None:
        row["test_accuracy"][registry.BI_VARIANTS[manifest["model"]]] = predict.accuracy(
            bi, dataset.test.images, dataset.test.labels)
    row["images_per_second"] = throughput(model, dataset.test.images, batch_size)
    row["flops_per_image"] = flops_per_image(model)
    row["fraction_of_matmul_peak"] = row["images_per_second"] * row["flops_per_image"] / (peak * 1e9)
    return row


def main(argv) -> int:
    del argv
    from dim_tf import data, model_dir as md

    try:
        dataset = data.load("mnist", FLAGS.data_dir)
        peak = matmul_peak_gflops()
        rows = [benchmark_dir(d, dataset, FLAGS.batch_size, peak) for d in FLAGS.model_dirs]
    except ValueError as e:
        return console.refuse(e)
    print(f"fp32 matmul peak (2048x2048): {peak:.1f} GFLOP/s")
    print("| model | test accuracy | training s | images/s | MFLOP/image | % of peak |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        acc = ", ".join(f"{k} {100 * v:.2f}%" for k, v in r["test_accuracy"].items())
        print(f"| {r['model']} | {acc} | {r['training_seconds']:.0f} | {r['images_per_second']:.0f} | "
              f"{r['flops_per_image'] / 1e6:.2f} | {100 * r['fraction_of_matmul_peak']:.1f} |")
    if FLAGS.output:
        md.write_json(FLAGS.output, {"matmul_peak_gflops": peak, "models": rows, "versions": md.library_versions()})
    return 0


if __name__ == "__main__":
    define_flags()
    console.run(main)
