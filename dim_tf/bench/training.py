"""Training speed of one stage: `python -m dim_tf.bench.training --model dim --stage internal`.

Builds the stage exactly as `python -m dim_tf.train` does (same objective, optimizer and train step, with any
`--adversarial` setting), times `--steps` updates on real MNIST batches after a warm-up, and prints images/s,
the multiply-add FLOPs of one update per image (counted on the traced step's graph: convolutions and their
gradients, matmuls, einsums) and the fraction of this machine's fp32 matmul peak (a 2048x2048 tf.matmul,
measured in the same run) that the throughput reaches.
"""

from __future__ import annotations

import time

from absl import flags

from dim_tf import console

FLAGS = flags.FLAGS


def define_flags() -> None:
    from dim_tf import registry
    from dim_tf.training import adversarial

    flags.DEFINE_enum("model", "dim", list(registry.MODELS), "Model whose stage is timed.")
    flags.DEFINE_string("stage", None, "Stage name (default: the model's last, e.g. internal for dim).")
    flags.DEFINE_enum("adversarial", None, list(adversarial.METHODS), "Training attack (default: the model's).")
    flags.DEFINE_integer("adv_steps", 40, "PGD steps of the training attack.")
    flags.DEFINE_integer("batch_size", 128, "Global batch size.")
    flags.DEFINE_integer("steps", 30, "Timed updates (after 5 untimed ones).")
    flags.DEFINE_string("data_dir", None, "Folder with the LeCun IDX files (else $DIM_TF_DATA_DIR, else tfds).")


def graph_flops(concrete_function) -> int:
    """Multiply-add FLOPs (2 per MAC) of the convolution, matmul and einsum ops in a traced function's graph,
    gradients included (Conv2DBackpropFilter / Input). Ops inside loops count once per loop body."""
    import math

    from dim_tf.bench.inference import einsum_flops

    total = 0
    graphs = [concrete_function.graph]
    while graphs:
        graph = graphs.pop()
        for op in graph.get_operations():
            for attr in ("body", "then_branch", "else_branch", "f"):  # while-loop bodies, conds, nested calls
                try:
                    name = op.get_attr(attr).name
                except (ValueError, AttributeError):
                    continue
                if name in graph._functions:  # noqa: SLF001 (no public accessor for a graph's library)
                    graphs.append(graph._functions[name].graph)  # noqa: SLF001
            shapes = [[int(d) if d is not None else 1 for d in t.shape] if t.shape.rank is not None else []
                      for t in op.inputs]
            out = [int(d) if d is not None else 1 for d in op.outputs[0].shape] if op.outputs and \
                op.outputs[0].shape.rank is not None else []
            if op.type == "Conv2D":
                kh, kw, ci, _ = shapes[1]
                total += 2 * math.prod(out) * kh * kw * ci
            elif op.type == "Conv2DBackpropInput":  # output = input gradient: filter [kh, kw, ci, co], grad shapes[2]
                kh, kw, ci, _ = shapes[1]
                total += 2 * math.prod(shapes[2]) * kh * kw * ci
            elif op.type == "Conv2DBackpropFilter":  # input shapes[0], grad of the output shapes[2]
                total += 2 * math.prod(shapes[2]) * math.prod(out[:3])
            elif op.type == "MatMul":
                a, b = shapes
                m = a[1] if op.get_attr("transpose_a") else a[0]
                k = a[0] if op.get_attr("transpose_a") else a[1]
                n = b[0] if op.get_attr("transpose_b") else b[1]
                total += 2 * m * k * n
            elif op.type == "Einsum":
                total += einsum_flops(op.get_attr("equation").decode(), shapes)
            elif op.type in ("BatchMatMulV2", "BatchMatMulV3"):
                a = shapes[0]
                total += 2 * math.prod(out) * (a[-2] if op.get_attr("adj_x") else a[-1])
    return total


def measure(cfg, stage_name: str | None, steps: int, data_dir: str | None) -> dict:
    """{"images_per_second", "flops_per_image", "seconds_per_step"} of `cfg`'s stage on real MNIST batches."""
    import tensorflow as tf

    from dim_tf import data, registry
    from dim_tf.training import loop

    dataset = data.load(cfg.dataset, data_dir)
    strategy = tf.distribute.get_strategy()
    model = registry.build(cfg)
    stages = registry.stages(cfg, model, dataset.validation)
    names = [s.name for s in stages]
    stage = stages[-1] if stage_name is None else {s.name: s for s in stages}.get(stage_name)
    if stage is None:
        raise ValueError(f"--stage {stage_name!r} is not a stage of {cfg.model}; choose one of {', '.join(names)}")
    optimizer = loop.make_optimizer(cfg.learning_rate, 10_000)
    optimizer.build(stage.model.trainable_variables)
    step = loop.make_train_step(strategy, stage.model, stage.objective, optimizer, cfg.batch_size)
    train = stage.reads(dataset.train.take(8 * cfg.batch_size))  # D(x) for plain internal models
    batches = [(tf.constant(x), tf.constant(y)) for x, y in
               data.pipeline(train, cfg.batch_size, shuffle_seed=0, drop_remainder=True)]
    for x, y in batches[:5]:
        step(x, y).numpy()
    start = time.perf_counter()
    for i in range(steps):
        loss = step(*batches[i % len(batches)])
    loss.numpy()
    seconds = (time.perf_counter() - start) / steps
    x, y = batches[0]
    flops = graph_flops(step.get_concrete_function(x, y)) / cfg.batch_size
    return {"stage": stage.name, "images_per_second": cfg.batch_size / seconds, "flops_per_image": flops,
            "seconds_per_step": seconds}


def main(argv) -> int:
    del argv
    from dim_tf import registry
    from dim_tf.bench.inference import matmul_peak_gflops

    try:
        cfg = registry.TrainConfig(model=FLAGS.model, adversarial=FLAGS.adversarial, adv_steps=FLAGS.adv_steps,
                                   batch_size=FLAGS.batch_size, adv_monitor_examples=0)
        row = measure(cfg, FLAGS.stage, FLAGS.steps, FLAGS.data_dir)
    except ValueError as e:
        return console.refuse(e)
    peak = matmul_peak_gflops()
    achieved = row["images_per_second"] * row["flops_per_image"] / 1e9
    print(f"{cfg.model} stage {row['stage']}, adversarial {cfg.attack_method}, batch {cfg.batch_size}: "
          f"{row['images_per_second']:.0f} images/s ({1000 * row['seconds_per_step']:.1f} ms/step), "
          f"{row['flops_per_image'] / 1e6:.1f} MFLOP/image per update, {achieved:.1f} GFLOP/s = "
          f"{100 * achieved / peak:.1f}% of the fp32 matmul peak ({peak:.1f} GFLOP/s)")
    return 0


if __name__ == "__main__":
    define_flags()
    console.run(main)
