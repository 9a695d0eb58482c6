"""CleverHans 4.0.0's TF2 attacks, made to work on Keras 3 / TensorFlow 2.16+ / NumPy 2.

CleverHans 4.0.0 (2021) predates Keras 3 and NumPy 2. Measured with Keras 3.15, TensorFlow 2.21, NumPy 2.4:

| attack                          | as shipped                                   | here                                      |
| ------------------------------- | -------------------------------------------- | ----------------------------------------- |
| fast_gradient_method            | works                                        | re-exported unchanged                     |
| projected_gradient_descent      | works (linf, l2; refuses l1)                 | re-exported unchanged                     |
| momentum_iterative_method       | works                                        | re-exported unchanged                     |
| basic_iterative_method,         | crash when `sanity_checks=True` (their       | called with `sanity_checks=False`; the    |
| madry_et_al                     | default): `np.all` of a ragged list of       | input range is checked by the benchmark   |
|                                 | tensors and bools is a ValueError in NumPy 2 | (`dim_tf.validation.check_images`)        |
| carlini_wagner_l2               | crashes (`optimizer.variables` is a property | own corrected `CarliniWagnerL2` below     |
|                                 | in Keras 3); the one-line fix zeroes Keras   |                                           |
|                                 | 3's learning-rate variable too, so Adam      |                                           |
|                                 | never moves and the input comes back; the    |                                           |
|                                 | per-example constant has the image's shape   |                                           |
|                                 | and broadcasts to [B, 28, 28, B]; a second   |                                           |
|                                 | batch meets an optimizer built for another   |                                           |
|                                 | variable; passing `y` silently makes the     |                                           |
|                                 | attack targeted                              |                                           |
| spsa                            | crashes: `SPSAAdam(lr=...)` (Keras 3's Adam  | own corrected, batched `spsa` below       |
|                                 | has no `lr`; it also reads `self.lr`); and   |                                           |
|                                 | it takes one example at a time               |                                           |
| sparse_l1_descent               | absent from the TF2 API of 4.0.0             | `dim_tf.eval.attacks.gradient` has one    |

The corrected versions keep CleverHans' algorithms and defaults unless a comment says otherwise; Adam is written
out (a few lines of tensor algebra) instead of borrowing a Keras optimizer, whose state is tied to one variable.
Every function takes `model_fn` (images -> logits) like CleverHans; none of them needs `model_fn`'s gradient to
exist (a None gradient counts as zero).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from cleverhans.tf2.attacks.basic_iterative_method import basic_iterative_method as _basic_iterative_method
from cleverhans.tf2.attacks.fast_gradient_method import fast_gradient_method  # noqa: F401  (works unchanged)
from cleverhans.tf2.attacks.madry_et_al import madry_et_al as _madry_et_al
from cleverhans.tf2.attacks.momentum_iterative_method import momentum_iterative_method  # noqa: F401  (unchanged)
from cleverhans.tf2.attacks.projected_gradient_descent import projected_gradient_descent  # noqa: F401  (unchanged)

__all__ = ["CarliniWagnerL2", "basic_iterative_method", "carlini_wagner_l2", "fast_gradient_method", "madry_et_al",
           "momentum_iterative_method", "projected_gradient_descent", "spsa"]


def basic_iterative_method(model_fn, x, eps, eps_iter, nb_iter, norm, clip_min=None, clip_max=None, y=None,
                           targeted=False):
    """CleverHans' BIM with its crashing sanity checks off (see the module docstring)."""
    return _basic_iterative_method(model_fn, x, eps, eps_iter, nb_iter, norm, clip_min=clip_min, clip_max=clip_max,
                                   y=y, targeted=targeted, sanity_checks=False)


def madry_et_al(model_fn, x, eps, eps_iter, nb_iter, norm, clip_min=None, clip_max=None, y=None, targeted=False,
                rand_minmax=None):
    """CleverHans' madry_et_al (PGD from a random start) with its crashing sanity checks off.

    CleverHans defaults `rand_minmax` to 0.3 whatever eps is; here it defaults to eps.
    """
    return _madry_et_al(model_fn, x, eps, eps_iter, nb_iter, norm, clip_min=clip_min, clip_max=clip_max, y=y,
                        targeted=targeted, rand_minmax=eps if rand_minmax is None else rand_minmax,
                        sanity_checks=False)


def _adam(grad, m, v, t, learning_rate, beta_1=0.9, beta_2=0.999, epsilon=1e-7):
    """One Adam update direction (with bias correction); `t` is the step count after this step, per example or
    scalar. Keras' defaults for the betas and epsilon (SPSAAdam inherited them)."""
    m = beta_1 * m + (1.0 - beta_1) * grad
    v = beta_2 * v + (1.0 - beta_2) * tf.square(grad)
    m_hat = m / (1.0 - tf.pow(beta_1, t))
    v_hat = v / (1.0 - tf.pow(beta_2, t))
    return learning_rate * m_hat / (tf.sqrt(v_hat) + epsilon), m, v


def _per_example(t, like):
    """[B] -> [B, 1, 1, 1] (the rank of `like`)."""
    return tf.reshape(t, [-1] + [1] * (len(like.shape) - 1))


# ----------------------------------------------------------------------------------------------------------------
# Carlini-Wagner L2
# ----------------------------------------------------------------------------------------------------------------

def carlini_wagner_l2(model_fn, x, **kwargs):
    """Function interface, as in CleverHans: `CarliniWagnerL2(model_fn, **kwargs).attack(x)` (NumPy out)."""
    return CarliniWagnerL2(model_fn, **kwargs).attack(x)


class CarliniWagnerL2:
    """Carlini & Wagner's L2 attack (https://arxiv.org/abs/1608.04644), CleverHans' version corrected.

    Minimises ||x' - x||_2^2 + c * max(Z(x')_y - max_{j != y} Z(x')_j + kappa, 0) over x' = tanh-box(w) with Adam,
    binary-searching the constant c per example; returns, per example, the smallest-L2 x' that was adversarial
    (x itself where none was found). Differences from CleverHans 4.0.0 (all bugs there, see the module docstring):
    a fresh Adam state per binary-search step (CleverHans' reset also zeroed the learning rate); c is one number
    per example; `targeted` is an explicit flag (CleverHans made any given `y` a target); `confidence` is added to
    the true class's logit only (as in the paper; CleverHans added it to every logit, a no-op); the binary search
    follows the paper (success in *this* step lowers the upper bound).
    """

    def __init__(self, model_fn, y=None, targeted=False, batch_size=128, clip_min=0.0, clip_max=1.0,
                 binary_search_steps=5, max_iterations=1_000, abort_early=True, confidence=0.0, initial_const=1e-2,
                 learning_rate=5e-3):
        if targeted and y is None:
            raise ValueError("a targeted attack needs the target labels y")
        self.model_fn, self.y, self.targeted = model_fn, y, bool(targeted)
        self.batch_size = int(batch_size)
        self.clip_min, self.clip_max = float(clip_min), float(clip_max)
        self.binary_search_steps, self.max_iterations = int(binary_search_steps), int(max_iterations)
        self.abort_early, self.confidence = bool(abort_early), float(confidence)
        self.initial_const, self.learning_rate = float(initial_const), float(learning_rate)
        self._step = tf.function(self._adam_step, reduce_retracing=True)

    def attack(self, x) -> np.ndarray:
        """Adversarial examples for `x` (NumPy or tensor, in [clip_min, clip_max]); NumPy out."""
        x = np.asarray(x, np.float32)
        if x.size and (x.min() < self.clip_min or x.max() > self.clip_max):
            raise ValueError(f"input outside [{self.clip_min}, {self.clip_max}]")
        if self.y is None:
            from dim_tf.predict import batched

            labels = batched(self.model_fn, x, self.batch_size).argmax(1) if len(x) else np.zeros(0, int)
        else:
            labels = np.asarray(self.y)
            labels = labels.argmax(1) if labels.ndim == 2 else labels
        out = np.zeros_like(x)
        for i in range(0, len(x), self.batch_size):
            out[i:i + self.batch_size] = self._attack(x[i:i + self.batch_size], labels[i:i + self.batch_size])
        return out

    def _to_box(self, w):
        return (tf.tanh(w) + 1.0) / 2.0 * (self.clip_max - self.clip_min) + self.clip_min

    def _adam_step(self, w0, x, y_onehot, modifier, m, v, t, const):
        with tf.GradientTape() as tape:
            tape.watch(modifier)
            x_new = self._to_box(w0 + modifier)
            logits = self.model_fn(x_new)
            l2 = tf.reduce_sum(tf.square(x_new - x), axis=list(range(1, len(x.shape))))
            real = tf.reduce_sum(y_onehot * logits, 1)
            other = tf.reduce_max((1.0 - y_onehot) * logits - y_onehot * 10_000.0, 1)
            margin = other - real + self.confidence if self.targeted else real - other + self.confidence
            loss = tf.reduce_sum(l2) + tf.reduce_sum(const * tf.maximum(margin, 0.0))
        grad = tape.gradient(loss, modifier)
        grad = tf.zeros_like(modifier) if grad is None else grad
        update, m, v = _adam(grad, m, v, t, self.learning_rate)
        return modifier - update, m, v, x_new, loss, logits, l2

    def _attack(self, x: np.ndarray, labels: np.ndarray) -> np.ndarray:
        n = len(x)
        x_t = tf.constant(x)
        y_onehot = tf.one_hot(labels, int(self.model_fn(x_t[:1]).shape[-1]), dtype=tf.float32)
        scaled = np.clip((x - self.clip_min) / (self.clip_max - self.clip_min), 0.0, 1.0)
        w0 = tf.constant(np.arctanh((scaled * 2.0 - 1.0) * 0.999999), tf.float32)
        lower, upper = np.zeros(n), np.full(n, 1e10)
        const = np.full(n, self.initial_const)
        best_l2, best = np.full(n, np.inf), x.copy()
        for outer in range(self.binary_search_steps):
            if self.binary_search_steps >= 10 and outer == self.binary_search_steps - 1:
                const = np.where(upper < 1e9, upper, const)  # the last step repeats the best constant found
            modifier = tf.zeros_like(w0)
            m, v = tf.zeros_like(w0), tf.zeros_like(w0)
            step_success = np.zeros(n, bool)
            prev = np.inf
            const_t = tf.constant(const, tf.float32)
            for it in range(self.max_iterations):
                modifier, m, v, x_new, loss, logits, l2 = self._step(
                    w0, x_t, y_onehot, modifier, m, v, tf.constant(it + 1, tf.float32), const_t)
                logits, l2 = logits.numpy(), l2.numpy()
                # x_new was evaluated before this step's update: logits and l2 belong to it.
                shifted = logits + (-self.confidence if self.targeted else self.confidence) * y_onehot.numpy()
                pred = shifted.argmax(1)
                ok = pred == labels if self.targeted else pred != labels
                step_success |= ok
                better = ok & (l2 < best_l2)
                if better.any():
                    best_l2[better] = l2[better]
                    best[better] = x_new.numpy()[better]
                # Give up this constant once the loss stops falling (checked every tenth of the iterations).
                if self.abort_early and it % ((self.max_iterations // 10) or 1) == 0:
                    if float(loss) > prev * 0.9999:
                        break
                    prev = float(loss)
            upper = np.where(step_success, np.minimum(upper, const), upper)
            lower = np.where(step_success, lower, np.maximum(lower, const))
            const = np.where(upper < 1e9, (lower + upper) / 2.0, const * 10.0)
        return best


# ----------------------------------------------------------------------------------------------------------------
# SPSA
# ----------------------------------------------------------------------------------------------------------------

def margin_logit_loss(logits, labels, num_classes):
    """max_{j != y} Z_j - Z_y (CleverHans' `margin_logit_loss`, its mask constant): > 0 when misclassified."""
    from dim_tf.predict import margin

    del num_classes  # the logits' last axis
    return margin(logits, labels, mask=99999.0)


def spsa(model_fn, x, y, eps, nb_iter, clip_min=0.0, clip_max=1.0, targeted=False, early_stop_loss_threshold=0.0,
         learning_rate=0.01, delta=0.01, spsa_samples=128, spsa_iters=1, max_model_batch=8192, is_debug=False):
    """SPSA (Uesato et al. 2018, https://arxiv.org/abs/1802.05666), CleverHans' algorithm on a whole batch.

    Minimises the (signed) margin logit loss over an L-inf perturbation with Adam steps on an SPSA gradient estimate
    (`spsa_samples` mirrored +-delta Rademacher probes per estimate, `spsa_iters` estimates averaged), projecting onto
    the eps-box and [clip_min, clip_max] after every step, starting from a uniform random point in the box.
    Differences from CleverHans 4.0.0: any batch size (each example has its own probes and Adam state; CleverHans
    refused batches of more than one); no Keras optimizer (its `SPSAAdam(lr=...)` crashes on Keras 3); the early
    stop is per example and defaults to 0.0 (stop an example once it is misclassified: CleverHans' default None
    could wander off a found adversarial); several estimates are averaged (CleverHans summed them).
    `y` holds the true labels (the target labels when targeted). Returns NumPy.
    """
    x = np.asarray(x, np.float32)
    y = np.asarray(y).astype(np.int32)
    if len(y) != len(x):
        raise ValueError("x and y must have the same length")
    if spsa_samples % 2:
        raise ValueError("spsa_samples must be even (the probes are mirrored)")
    if len(x) == 0:
        return x.copy()
    half = spsa_samples // 2
    sign = 1.0 if targeted else -1.0  # minimise: targeted -> margin to the target; untargeted -> -margin
    num_classes = int(model_fn(tf.constant(x[:1])).shape[-1])
    image_shape = list(x.shape[1:])

    def loss_of(images, labels):
        return sign * margin_logit_loss(model_fn(images), labels, num_classes)

    spec = tf.TensorSpec([None, *image_shape], tf.float32)

    @tf.function(input_signature=[spec, tf.TensorSpec([None], tf.int32), spec])
    def estimate(xb, yb, pert):
        b = tf.shape(xb)[0]
        total = tf.zeros_like(xb)
        for _ in range(spsa_iters):
            probe = delta * tf.sign(tf.random.uniform(tf.concat([[b, half], image_shape], 0), -1.0, 1.0))
            probe = tf.concat([probe, -probe], axis=1)  # [b, S, H, W, C]
            points = tf.reshape((xb + pert)[:, None] + probe, [-1, *image_shape])
            losses = tf.reshape(loss_of(points, tf.repeat(yb, spsa_samples)), [b, spsa_samples, 1, 1, 1])
            total += tf.reduce_mean(losses * probe, axis=1) / delta
        return total / spsa_iters

    @tf.function(input_signature=[spec, tf.TensorSpec([None], tf.int32)])
    def loss_at(xb, yb):
        return loss_of(xb, yb)

    def project(pert, xb):
        pert = np.clip(pert, -eps, eps)
        return np.clip(xb + pert, clip_min, clip_max) - xb

    pert = project(tf.random.uniform(x.shape, -eps, eps).numpy(), x)
    m, v = np.zeros_like(x), np.zeros_like(x)
    t = np.zeros(len(x), np.float32)
    active = np.ones(len(x), bool)
    chunk = max(1, int(max_model_batch) // (spsa_samples))
    for it in range(int(nb_iter)):
        idx = np.flatnonzero(active)
        if not len(idx):
            break
        for start in range(0, len(idx), chunk):
            sel = idx[start:start + chunk]
            xb, yb = x[sel], y[sel]
            grad = estimate(tf.constant(xb), tf.constant(yb), tf.constant(pert[sel]))
            t[sel] += 1.0
            update, m_new, v_new = _adam(grad, tf.constant(m[sel]), tf.constant(v[sel]),
                                         _per_example(tf.constant(t[sel]), grad), learning_rate)
            m[sel], v[sel] = m_new.numpy(), v_new.numpy()
            pert[sel] = project(pert[sel] - update.numpy(), xb)
            if early_stop_loss_threshold is not None or is_debug:
                loss = loss_at(tf.constant(xb + pert[sel]), tf.constant(yb)).numpy()
                if is_debug:
                    print(f"spsa step {it}: mean loss {loss.mean():.4f}")
                if early_stop_loss_threshold is not None:
                    active[sel[loss < early_stop_loss_threshold]] = False
    return np.clip(x + pert, clip_min, clip_max)
