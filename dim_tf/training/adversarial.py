"""Adversarial training: the L-inf attack that makes each batch's training examples (PGD, or FGSM from a random
start), the per-example binarization that trains the weights a binarized variant shares, and the per-epoch
robustness probe that catches catastrophic overfitting."""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np
import tensorflow as tf

from dim_tf.models.binarize import Binarize

METHODS = ("none", "pgd", "fgsm_rs")
# Straight-through (BPDA) binarization: the forward pass biDIM/biCNN compute, the identity's gradient, so the
# training attack sees through the threshold as the adaptive suite's attacks do.
_STRAIGHT_THROUGH = Binarize(0.5, "straight_through")


def default_step_size(method: str, eps: float, steps: int) -> float:
    """FGSM-RS: 1.25 eps (Wong et al. 2020's choice for MNIST); PGD: 2.5 eps / steps (Madry et al.'s rule: the
    steps together travel 2.5 times the radius)."""
    return 1.25 * eps if method == "fgsm_rs" else 2.5 * eps / steps


@dataclasses.dataclass(frozen=True)
class LinfAttack:
    """An L-inf attack on a per-example loss: `method` pgd (`steps` signed-gradient steps) or fgsm_rs (one step),
    both from a uniform random start in the eps ball; eps may be a tensor (a warm-up ramp)."""

    method: str
    eps: float
    steps: int
    step_size: float

    def __call__(self, loss_fn: Callable, x, y, eps=None):
        """x_adv in [0, 1] within eps of x (L-inf) that raises loss_fn(x_adv, y) [B]; no gradient flows out."""
        eps = self.eps if eps is None else eps
        step_size = self.step_size * (eps / self.eps)  # a ramped eps shrinks the step with it
        x = tf.stop_gradient(x)
        x_adv = tf.clip_by_value(x + tf.random.uniform(tf.shape(x), -1.0, 1.0) * eps, 0.0, 1.0)
        for _ in tf.range(1 if self.method == "fgsm_rs" else self.steps):
            with tf.GradientTape() as tape:
                tape.watch(x_adv)
                loss = tf.reduce_sum(loss_fn(x_adv, y))
            x_adv = x_adv + step_size * tf.sign(tape.gradient(loss, x_adv))
            x_adv = tf.clip_by_value(tf.clip_by_value(x_adv, x - eps, x + eps), 0.0, 1.0)
        return tf.stop_gradient(x_adv)


def partial_binarizer(x, fraction: float):
    """A callable binarizing (straight-through) a random `fraction` of the batch x, each example chosen with that
    probability and the same ones at every call; the identity when `fraction` is 0."""
    if fraction <= 0:
        return lambda v: v
    chosen = tf.random.uniform(tf.shape(x)[:1]) < fraction

    def binarize(v):
        return tf.where(chosen[:, None, None, None], _STRAIGHT_THROUGH(v), v)
    return binarize


def cross_entropy(logits_fn: Callable, scale: float = 1.0) -> Callable:
    """loss_fn(x, y) = softmax cross-entropy of scale * logits_fn(x): what the training attack ascends."""
    def loss_fn(x, y):
        return tf.nn.sparse_softmax_cross_entropy_with_logits(y, scale * logits_fn(x))
    return loss_fn


def pgd_accuracy(logits_fn: Callable, images: np.ndarray, labels: np.ndarray, eps: float, steps: int,
                 scale: float = 1.0, batch_size: int = 250, seed: int = 0) -> float:
    """Accuracy of `logits_fn` under PGD-`steps` (cross-entropy of scale * logits, step 2.5 eps / steps, random
    start) at L-inf eps on fixed images: the robustness probe run after every epoch of adversarial training.
    Deterministic for a given seed and weights."""
    attack = LinfAttack("pgd", eps, steps, default_step_size("pgd", eps, steps))
    loss_fn = cross_entropy(logits_fn, scale)

    @tf.function(reduce_retracing=True)
    def robust(x, y):
        x_adv = attack(loss_fn, x, y)
        return tf.equal(tf.argmax(logits_fn(x_adv), axis=1, output_type=tf.int32), y)

    tf.random.set_seed(seed)
    correct = [robust(tf.constant(images[i:i + batch_size]), tf.constant(labels[i:i + batch_size], tf.int32))
               for i in range(0, len(images), batch_size)]
    return float(np.mean(np.concatenate([c.numpy() for c in correct])))


@dataclasses.dataclass(frozen=True)
class CollapseCheck:
    """Catastrophic overfitting: single-step adversarial training can lose its robustness within one epoch
    (Wong et al. 2020: PGD accuracy falls to ~0 while FGSM accuracy rises). The stage stops, back at the
    weights of the epoch before, when one of `metrics` falls more than `max_drop` below its best so far."""

    metrics: tuple[str, ...]
    max_drop: float = 0.2

    def collapsed(self, history: list[dict]) -> str | None:
        """The first metric of the last epoch in `history` that collapsed, None if none did."""
        for metric in self.metrics:
            values = [h[metric] for h in history if metric in h]
            if len(values) >= 2 and max(values[:-1]) - values[-1] > self.max_drop:
                return metric
        return None
