"""`run_attack(model, images, labels, attack, norm, eps_list)`: one attack on one model, scored RobustBench-style.

Only the correctly classified examples are attacked (a misclassified one is non-robust at every eps). Each
returned example is checked, moved back into [0, 1] and the eps-ball if an attack overshot (counted in
`out_of_bounds`), and re-classified; robust accuracy = correct and not broken, over all examples.
The model's calls during the attack go through `CountingModel`, which counts forward and backward passes (images,
not batches) and turns a missing gradient into a zero one: that is gradient masking, flagged as
`zero_gradient: true` in the result.
"""

from __future__ import annotations

import math
import sys
import time

import keras
import numpy as np
import tensorflow as tf

from dim_tf.eval import attacks as attack_table
from dim_tf.eval.compiled import compiled
from dim_tf.eval.replicas import SplitOverReplicas, split_model
from dim_tf.eval.threat import TOLERANCE, EvalError, ThreatModel, parse_eps_list, project
from dim_tf.eval.results import SCHEMA
from dim_tf.predict import batched
from dim_tf.validation import check_images, check_labels


class CountingModel:
    """`model` as attacks call it: counts forward/backward passes (per image) in variables, so the counts are right
    inside `tf.function`s too; a None gradient (e.g. `tf.where` in biDIM's exact binarization) becomes zero; records
    the largest |gradient| that reached the input, to flag an all-zero gradient."""

    def __init__(self, model):
        self.model = model
        with tf.init_scope():
            self.forward = tf.Variable(0, dtype=tf.int64, trainable=False, name="forward_passes")
            self.backward = tf.Variable(0, dtype=tf.int64, trainable=False, name="backward_passes")
            self.max_abs_grad = tf.Variable(0.0, dtype=tf.float32, trainable=False, name="max_abs_grad")

    def __call__(self, x):
        x = tf.convert_to_tensor(x, tf.float32)
        self.forward.assign_add(tf.cast(tf.shape(x)[0], tf.int64))

        @tf.custom_gradient
        def mark(t):
            def grad(dy):
                updates = [self.backward.assign_add(tf.cast(tf.shape(dy)[0], tf.int64)),
                           self.max_abs_grad.assign(tf.maximum(self.max_abs_grad, tf.reduce_max(tf.abs(dy))))]
                # Inside a tf.function differentiated from outside (foolbox's tape), TensorFlow prunes a gradient's
                # side effects that its result does not depend on: the dependency keeps the counts.
                with tf.control_dependencies(updates):
                    return tf.identity(dy)

            return tf.identity(t), grad

        x = mark(x)
        logits = tf.convert_to_tensor(self.model(x))
        # Keeps x connected to the output, so that tape.gradient returns zeros instead of None.
        return logits + 0.0 * tf.reduce_sum(x, axis=list(range(1, len(x.shape))))[:, None]

    def counts(self) -> tuple[int, int]:
        return int(self.forward.numpy()), int(self.backward.numpy())


def gradient_probe(model, x, y) -> dict:
    """The loss gradient of `model` at a batch: None (no path from input to output) or all zero?"""
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.constant(y), logits=model(x))
    grad = tape.gradient(loss, x)
    if grad is None:
        return {"none": True, "all_zero": True, "max_abs": 0.0}
    max_abs = float(tf.reduce_max(tf.abs(grad)))
    return {"none": False, "all_zero": max_abs == 0.0, "max_abs": max_abs}


class Progress:
    """A one-line progress bar on stderr (a line per update when stderr is not a terminal, at most every 10 s)."""

    def __init__(self, label: str, total: int, enabled: bool = True, stream=None):
        self.label, self.total, self.enabled = label, max(int(total), 1), enabled
        self.stream = stream or sys.stderr
        self.done, self.start, self.last_print = 0, time.time(), 0.0
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.show("")

    def show(self, note: str, final: bool = False) -> None:
        if not self.enabled:
            return
        now = time.time()
        if not (self.tty or final or self.done == 0 or now - self.last_print >= 10.0):
            return
        self.last_print = now
        elapsed = now - self.start
        frac = min(self.done / self.total, 1.0)
        eta = f" eta {elapsed / frac * (1 - frac):.0f}s" if 0 < frac < 1 else ""
        bar = "#" * int(frac * 24) + "-" * (24 - int(frac * 24))
        line = f"{self.label} [{bar}] {self.done}/{self.total} {elapsed:.1f}s{eta} {note}"
        self.stream.write(("\r" + line.ljust(100)) if self.tty else line + "\n")
        if final and self.tty:
            self.stream.write("\n")
        self.stream.flush()

    def update(self, n: int = 1, note: str = "") -> None:
        self.done += n
        self.show(note)

    def close(self, note: str = "") -> None:
        self.show(note, final=True)


def _batches(indices: np.ndarray, size: int):
    for i in range(0, len(indices), size):
        yield indices[i:i + size]


def _median(values) -> float | None:
    return float(np.median(values)) if len(values) else None


def _labels(model, batch):
    return tf.argmax(model(batch), axis=1, output_type=tf.int32)


def run_attack(model, images, labels, attack, norm, eps_list=None, *, batch_size: int = 250, seed: int = 0,
               restarts: int = 1, params: dict | None = None, progress: bool = True, strategy=None,
               keep_adversarials: bool = False) -> dict:
    """Runs `attack` (a name from the table or an `Attack` row) under threat model `norm` ("linf", "l2", "l1",
    "l0" or a `ThreatModel`) at each eps of `eps_list` (a float, a list, or "0.1,0.3"; None: the norm's usual
    eps) on `model` (images [N, 28, 28, 1] float32 in [0, 1] -> [N, 10] logits) and returns the result as a
    JSON-ready dict (see the README of dim_tf.eval, or the keys below). Raises `EvalError` (a ValueError) on bad
    input before any work. `restarts` > 1 re-runs randomised attacks on the examples not broken yet.
    `keep_adversarials`: each entry of "results" also holds "adversarials", the images scored at that eps (float32
    [N, 28, 28, 1]; x where not attacked; a NumPy array, to remove before writing JSON).
    """
    threat = ThreatModel.parse(norm)
    row = attack_table.get(attack)
    row.check_norm(threat)
    eps_values = parse_eps_list(eps_list, threat)
    resolved = row.resolve_params(params)
    if int(batch_size) < 1:
        raise EvalError(f"batch_size must be >= 1, got {batch_size}")
    if int(restarts) < 1:
        raise EvalError(f"restarts must be >= 1, got {restarts}")
    x = check_images(images)
    y = check_labels(labels, len(x))
    batch_size, restarts = int(batch_size), int(restarts)
    restarts_used = restarts if row.randomized else 1
    strategy = strategy or tf.distribute.get_strategy()

    keras.utils.set_random_seed(seed)
    start = time.time()
    n = len(x)
    model = split_model(model, strategy)  # each batch spread over the strategy's local replicas (if several)
    counter = CountingModel(model)  # its variables are made outside the strategy's scope (plain counters)
    with strategy.scope():
        classify = compiled(model, _labels)

        def predict(images_: np.ndarray) -> np.ndarray:
            return batched(classify, images_, batch_size) if len(images_) else np.zeros(0, int)

        clean_pred = predict(x)
        correct = clean_pred == y
        targets = np.flatnonzero(correct)
        probe = gradient_probe(model, x[:min(n, batch_size)], y[:min(n, batch_size)])

        runs = [None] if row.kind == "minimal" else eps_values
        num_batches = math.ceil(len(targets) / batch_size)
        label = f"{row.name} {threat.value}"
        bar = Progress(label, len(runs) * restarts_used * num_batches, enabled=progress)
        run_results = []
        for eps in runs:
            run_start = time.time()
            fwd0, bwd0 = counter.counts()
            adv = x.copy()
            broken = np.zeros(n, bool)
            out_of_bounds = 0
            for restart in range(restarts_used):
                todo = targets[~broken[targets]]
                skipped = num_batches - math.ceil(len(todo) / batch_size)
                for chunk in _batches(todo, batch_size):
                    raw = np.asarray(row.fn(counter, tf.constant(x[chunk]), tf.constant(y[chunk]), eps, threat,
                                            resolved, restart), np.float32)
                    if raw.shape != x[chunk].shape:
                        raise RuntimeError(f"attack {row.name} returned shape {raw.shape}, expected "
                                           f"{x[chunk].shape}")
                    raw = np.nan_to_num(raw, nan=0.0)
                    outside_box = (raw < -TOLERANCE).any(axis=(1, 2, 3)) | (raw > 1 + TOLERANCE).any(axis=(1, 2, 3))
                    if eps is not None:
                        over = threat.distance(raw, x[chunk]) > eps + TOLERANCE
                        out_of_bounds += int(np.sum(outside_box | over))
                        fixed = project(raw, x[chunk], threat, eps)
                    else:
                        out_of_bounds += int(np.sum(outside_box))
                        fixed = np.clip(raw, 0.0, 1.0)
                    success = predict(fixed) != y[chunk]
                    keep = success | ~broken[chunk]  # a failed restart does not overwrite an earlier success
                    adv[chunk[keep]] = fixed[keep]
                    broken[chunk[success]] = True
                    bar.update(1, f"eps {eps if eps is not None else 'min'}: broken {int(broken.sum())}/"
                                  f"{len(targets)}")
                bar.update(skipped)
            fwd1, bwd1 = counter.counts()
            run_results.append({"eps": eps, "adv": adv, "broken": broken, "seconds": time.time() - run_start,
                                "forward_passes": fwd1 - fwd0, "backward_passes": bwd1 - bwd0,
                                "out_of_bounds": out_of_bounds})
        bar.close(f"done in {time.time() - start:.1f}s")

    distance = threat.distance
    results = []
    for eps in eps_values:
        run = run_results[0] if row.kind == "minimal" else next(r for r in run_results if r["eps"] == eps)
        dist = distance(run["adv"], x)
        success = run["broken"] & (dist <= eps + TOLERANCE)
        attacked = correct
        results.append({
            "eps": eps,
            "robust_accuracy": float(np.mean(correct & ~success)) if n else 0.0,
            "attack_success_rate": float(success[attacked].mean()) if attacked.any() else None,
            "median_distance": _median(dist[success]),
            "mean_distance": float(dist[success].mean()) if success.any() else None,
            "success": success.tolist(),
            "distance": [float(d) if a else None for d, a in zip(dist, attacked)],
            **({} if row.kind == "minimal" else {k: run[k] for k in ("seconds", "forward_passes", "backward_passes",
                                                                       "out_of_bounds")}),
            **({"adversarials": run["adv"]} if keep_adversarials else {}),
        })
    forward, backward = counter.counts()
    zero_gradient = bool(probe["none"] or probe["all_zero"] or
                         (row.uses_gradient and backward > 0 and float(counter.max_abs_grad.numpy()) == 0.0))
    warnings = []
    if zero_gradient:
        warnings.append("zero_gradient: the model's input gradient is " +
                        ("missing (None, counted as zero)" if probe["none"] else "zero") + ": gradient masking. " +
                        ("This attack needs no gradient; compare with BPDA (--variant bi --bi_gradient "
                         "straight_through)." if not row.uses_gradient else
                         "This attack saw no signal: its robust accuracy is only an upper bound. Use a gradient-free "
                         "attack (spsa) or BPDA (--variant bi --bi_gradient straight_through)."))
    if restarts > 1 and not row.randomized:
        warnings.append(f"{row.name} is deterministic: restarts={restarts} ignored (1 run)")
    out_of_bounds = sum(r["out_of_bounds"] for r in run_results)
    if out_of_bounds:
        warnings.append(f"the attack returned {out_of_bounds} example(s) outside [0, 1] or beyond eps + "
                        f"{TOLERANCE}; they were projected back before scoring")
    minimal_run = run_results[0] if row.kind == "minimal" else None
    if minimal_run is not None:
        min_dist = distance(minimal_run["adv"], x)
        found = minimal_run["broken"]
    return {
        "schema": SCHEMA,
        "attack": {"name": row.name, "family": row.family, "kind": row.kind, "source": row.source,
                   "params": resolved, "restarts": restarts, "restarts_used": restarts_used, "seed": seed,
                   "batch_size": batch_size, "loss": row.loss_of(resolved)},
        "threat_model": threat.value,
        "num_examples": n,
        "clean_accuracy": float(correct.mean()) if n else 0.0,
        "clean_correct": correct.tolist(),
        "eps": eps_values,
        "robust_accuracy": {f"{r['eps']:g}": r["robust_accuracy"] for r in results},
        "results": results,
        "minimal_distance": None if minimal_run is None else {
            "distance": [float(d) if (c and f) else None for d, c, f in zip(min_dist, correct, found)],
            "found": int(found.sum()),
            "median": _median(min_dist[found]),
            "note": "smallest adversarial distance found per attacked example (None: none found or not attacked)"},
        "forward_passes": forward,
        "backward_passes": backward,
        "gradient_probe": probe,
        "zero_gradient": zero_gradient,
        "out_of_bounds": out_of_bounds,
        "warnings": warnings,
        "replicas": len(model.devices) if isinstance(model, SplitOverReplicas) else 1,  # each batch split over
        "seconds": time.time() - start,
    }
