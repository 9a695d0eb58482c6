"""One distributed training loop for every stage: the same code path for one device, MirroredStrategy and
MultiWorkerMirroredStrategy. A checkpoint per epoch; a re-run resumes from the last one."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from typing import Callable

import keras
import numpy as np
import tensorflow as tf

from dim_tf import data
from dim_tf.model_dir import ModelDirError
from dim_tf.training import adversarial
from dim_tf.training.fused_adam import FusedAdam


@dataclasses.dataclass
class Stage:
    """A training stage: `objective(x, y, step) -> [B] losses` updates `model`'s trainable variables."""

    name: str
    model: keras.Model
    objective: Callable
    epochs: int
    learning_rate: float
    validate: Callable[[], dict]  # metrics on the validation split, e.g. {"val_accuracy": 0.98}
    collapse: adversarial.CollapseCheck | None = None  # stops the stage when a robustness metric collapses
    # Maps the training images once when the stage starts (after the stages before it trained), e.g. the frozen
    # denoiser's outputs, which the objective then reads instead of computing them in every update.
    inputs: Callable[[np.ndarray], np.ndarray] | None = None

    def reads(self, split: data.Split) -> data.Split:
        """What the objective reads of the training split `split`: its images mapped by `inputs`, if set."""
        return split if self.inputs is None else data.Split(self.inputs(split.images), split.labels)


def make_optimizer(learning_rate: float, total_steps: int) -> keras.optimizers.Optimizer:
    """Adam (fused: `FusedAdam`) with cosine decay to zero over `total_steps`; create inside the strategy's scope."""
    return FusedAdam(keras.optimizers.schedules.CosineDecay(learning_rate, max(total_steps, 1)))


def make_train_step(strategy: tf.distribute.Strategy, model: keras.Model, objective: Callable,
                    optimizer: keras.optimizers.Optimizer, global_batch_size: int):
    """A `tf.function` taking one distributed batch (x, y), applying one update, returning the mean loss."""
    variables = model.trainable_variables

    def replica_step(x, y):
        with tf.GradientTape() as tape:
            per_example = objective(x, y, optimizer.iterations)
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch_size)
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    @tf.function
    def train_step(x, y):
        per_replica = strategy.run(replica_step, args=(x, y))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    return train_step


def _distributed_epoch(strategy, split: data.Split, global_batch_size: int, seed: int):
    ds = data.pipeline(split, global_batch_size, shuffle_seed=seed, drop_remainder=True)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return strategy.experimental_distribute_dataset(ds.with_options(options))


def run_stage(stage: Stage, strategy: tf.distribute.Strategy, train: data.Split, global_batch_size: int,
              seed: int, model_dir: str, log: Callable[[str], None] = print) -> dict:
    """Trains `stage` (built inside `strategy.scope()`), resuming from `model_dir/checkpoints/<stage>`.

    Returns {"epochs", "seconds", "loss", "history" (per epoch: loss, seconds, validation metrics), **last
    validation metrics}, plus "collapsed" (the metric, the epoch it collapsed in, the epoch whose weights were kept)
    when `stage.collapse` stopped it; TensorBoard logs go to model_dir/logs/<stage>.
    """
    steps_per_epoch = len(train) // global_batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"{len(train)} training examples is fewer than one batch of {global_batch_size}; "
                         "lower --batch_size or raise --train_examples")
    with strategy.scope():
        optimizer = make_optimizer(stage.learning_rate, stage.epochs * steps_per_epoch)
        optimizer.build(stage.model.trainable_variables)
    epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
    seconds = tf.Variable(0.0, dtype=tf.float64, trainable=False, name="seconds")
    last_loss = tf.Variable(float("nan"), dtype=tf.float64, trainable=False, name="loss")
    history = tf.Variable("[]", dtype=tf.string, trainable=False, name="history")  # JSON list, one dict per epoch
    collapsed = tf.Variable("", dtype=tf.string, trainable=False, name="collapsed")  # JSON of a collapse, if any
    # Keras 3 models expose no trackable children to tf.train.Checkpoint: list their weights explicitly.
    ckpt = tf.train.Checkpoint(weights=list(stage.model.weights), optimizer=optimizer, epoch=epoch,
                               seconds=seconds, loss=last_loss, history=history, collapsed=collapsed)
    manager = tf.train.CheckpointManager(ckpt, os.path.join(model_dir, "checkpoints", stage.name), max_to_keep=2)
    if manager.latest_checkpoint:
        try:
            ckpt.restore(manager.latest_checkpoint).assert_existing_objects_matched()
        except Exception as e:  # corrupt files surface as OpError, ValueError, AssertionError or IndexError
            raise ModelDirError(f"checkpoint {manager.latest_checkpoint} is corrupt or from another model ({e}); "
                               "delete that folder or use a new --model_dir") from e
        log(f"[{stage.name}] resuming after epoch {int(epoch.numpy())} from {manager.latest_checkpoint}")
    train_step = make_train_step(strategy, stage.model, stage.objective, optimizer, global_batch_size)
    if stage.inputs is not None and int(epoch.numpy()) < stage.epochs:
        start = time.time()
        train = stage.reads(train)
        log(f"[{stage.name}] inputs of {len(train)} training examples computed once ({time.time() - start:.1f} s)")
    writer = tf.summary.create_file_writer(os.path.join(model_dir, "logs", stage.name))
    metrics: dict = {}
    while int(epoch.numpy()) < stage.epochs and not collapsed.numpy():
        e = int(epoch.numpy())
        log(f"[{stage.name}] epoch {e + 1}/{stage.epochs}")
        bar = keras.utils.Progbar(steps_per_epoch, verbose=1 if sys.stdout.isatty() else 2, stateful_metrics=["loss"])
        start, total = time.time(), 0.0
        for step, (x, y) in enumerate(_distributed_epoch(strategy, train, global_batch_size, seed * 1000 + e)):
            batch_loss = float(train_step(x, y).numpy())
            total += batch_loss
            bar.update(step + 1, [("loss", batch_loss)])
        loss = total / steps_per_epoch
        last_loss.assign(loss)
        seconds.assign_add(time.time() - start)
        metrics = stage.validate()
        with writer.as_default(step=e + 1):
            tf.summary.scalar("loss", loss)
            for name, value in metrics.items():
                tf.summary.scalar(name, value)
        log(f"[{stage.name}] epoch {e + 1}: loss {loss:.5f} " +
            " ".join(f"{k} {v:.4f}" for k, v in metrics.items()) + f" ({time.time() - start:.1f} s)")
        epochs = json.loads(history.numpy()) + [{"epoch": e + 1, "loss": loss, "seconds": time.time() - start,
                                                 **metrics}]
        metric = stage.collapse.collapsed(epochs) if stage.collapse else None
        if metric and manager.latest_checkpoint:  # back to the weights of the epoch before, and stop
            spent = seconds.numpy()  # the collapsed epoch's compute still counts
            ckpt.restore(manager.latest_checkpoint)
            seconds.assign(spent)
            kept = int(epoch.numpy())
            collapsed.assign(json.dumps({"metric": metric, "epoch": e + 1, "kept_epoch": kept}))
            log(f"[{stage.name}] STOPPED: {metric} collapsed in epoch {e + 1} ({epochs[-1][metric]:.4f}, best "
                f"{max(h[metric] for h in epochs[:-1]):.4f}: catastrophic overfitting); kept the weights of epoch "
                f"{kept}. Train with --adversarial pgd, a smaller --adv_step_size or fewer --epochs.")
            metrics = {k: v for k, v in epochs[-2].items() if k not in ("epoch", "loss", "seconds")}
        else:
            epoch.assign(e + 1)
        history.assign(json.dumps(epochs))
        manager.save(checkpoint_number=e + 1)
    if not metrics:
        metrics = stage.validate()
    result = {"epochs": int(epoch.numpy()), "seconds": float(seconds.numpy()), "loss": float(last_loss.numpy()),
              "history": json.loads(history.numpy()), **metrics}
    if collapsed.numpy():
        result["collapsed"] = json.loads(collapsed.numpy())
    return result
