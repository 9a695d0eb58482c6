"""Per-example training losses of each stage. Each objective maps a batch (x [B, 28, 28, 1] in [0, 1], y [B])
and the optimizer's step counter to a [B] loss, inside a replica context."""

from __future__ import annotations

import dataclasses

import keras
import tensorflow as tf

from dim_tf.models.dim import dim_scores
from dim_tf.training import adversarial, augment


def linear_ramp(step, warmup_steps: int):
    """A float32 factor rising linearly from 0 at step 0 to 1 at `warmup_steps`, then staying at 1."""
    return tf.minimum(1.0, tf.cast(step, tf.float32) / float(max(warmup_steps, 1)))


def ramped_noise(x, std: float, step, warmup_steps: int):
    """x + N(0, s^2), clipped to [0, 1], with s rising linearly from 0 to `std` over `warmup_steps`.

    The ramp matters: at full noise from step 0 a conv autoencoder collapses to an all-black output (measured:
    loss stuck at E[x^2] = 0.109 for std 0.3 and 0.4 with relu, elu or leaky relu), with the ramp it does not.
    """
    if std <= 0:
        return x
    noise = tf.random.normal(tf.shape(x)) * std * linear_ramp(step, warmup_steps)
    return tf.clip_by_value(x + noise, 0.0, 1.0)


@dataclasses.dataclass
class DenoiserObjective:
    """L_D = mean over pixels of (x - D(b(x) + n))^2, b binarizing a random `binarized_fraction` of the batch."""

    denoiser: keras.Model
    noise_std: float
    warmup_steps: int
    binarized_fraction: float = 0.0

    def __call__(self, x, y, step):
        x_in = adversarial.partial_binarizer(x, self.binarized_fraction)(x)
        noisy = ramped_noise(x_in, self.noise_std, step, self.warmup_steps)
        return tf.reduce_mean(tf.square(self.denoiser(noisy) - x), axis=(1, 2, 3))


def internal_targets(d, y, num_classes: int):
    """Indicator targets: [B, K, H, W, C] with d where k == y, black elsewhere."""
    onehot = tf.one_hot(y, num_classes, dtype=d.dtype)
    return d[:, None] * onehot[:, :, None, None, None]


@dataclasses.dataclass
class InternalObjective:
    """Reconstruction plus a score term, with d = preprocess(x) (D(x); x itself when preprocess is None: the IM
    ablations' raw images, or D(x) cached before the stage, `Stage.inputs`):

      sum_i w_i * mean_pixels (F_i(d + n) - d * 1[y = i])^2 / sum_i w_i
      + score_weight * cross_entropy(softmax(score_temperature * P(d + n)), y)

    A random `binarized_fraction` of the d are binarized at 0.5, as biDIM feeds them.
    w_i = own_class_weight for i = y, 1 otherwise (with K = 10 and weight 9 the own class counts as much as the
    nine black targets; with weight 1 the autoencoders collapse to black for every input). P_i are DIM's scores
    ||F_i||_1 / ||d||_1, the model's logits: the score term trains them to rank the true class first (measured,
    20k images, 3 epochs: reconstruction alone 67% validation accuracy, with the score term 93-96%).
    """

    internal: keras.Model
    preprocess: object  # callable x -> d, or None for the identity
    noise_std: float
    own_class_weight: float
    warmup_steps: int
    score_weight: float = 0.2
    score_temperature: float = 30.0
    binarized_fraction: float = 0.0

    def __call__(self, x, y, step):
        d = x if self.preprocess is None else tf.stop_gradient(self.preprocess(x))
        d = adversarial.partial_binarizer(d, self.binarized_fraction)(d)
        return self.losses(d, d, y, step)

    def losses(self, d, target, y, step):
        """[B] losses of the F_i reading d (plus the ramped noise), reconstructing `target` for the own class;
        the scores are those of d."""
        k = self.internal.num_classes
        recon = self.internal(ramped_noise(d, self.noise_std, step, self.warmup_steps))
        per_class = tf.reduce_mean(tf.square(recon - internal_targets(target, y, k)), axis=(2, 3, 4))
        weights = 1.0 + (self.own_class_weight - 1.0) * tf.one_hot(y, k)
        loss = tf.reduce_sum(per_class * weights, axis=1) / (self.own_class_weight + k - 1.0)
        if self.score_weight > 0:
            scores = dim_scores(d, recon)
            loss += self.score_weight * tf.nn.sparse_softmax_cross_entropy_with_logits(
                y, self.score_temperature * scores)
        return loss


@dataclasses.dataclass
class ClassifierObjective:
    """Softmax cross-entropy on the logits; with an `attack`, on the attack's examples instead of the clean ones
    (Madry et al.'s adversarial training; FGSM-RS is Wong et al.'s fast variant). A random `binarized_fraction`
    of each batch is binarized at 0.5 (straight-through for the attack), so the weights also serve biCNN.

    eps ramps linearly from 0 over `warmup_steps`: at eps 0.3 from the first step a short CPU schedule of Madry's
    network stays at chance (measured: loss ln 10 = 2.30 after 62 steps of batch 128).
    """

    classifier: keras.Model
    attack: adversarial.LinfAttack | None = None
    warmup_steps: int = 0
    binarized_fraction: float = 0.0

    def __call__(self, x, y, step):
        binarize = adversarial.partial_binarizer(x, self.binarized_fraction)
        if self.attack is not None:
            logits_fn = lambda v: self.classifier(binarize(v))  # noqa: E731 (inference mode, as Madry's)
            eps = self.attack.eps * linear_ramp(step, self.warmup_steps)
            x = self.attack(adversarial.cross_entropy(logits_fn), x, y, eps)
        logits = self.classifier(binarize(x), training=True)
        return tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits)


@dataclasses.dataclass
class AdversarialInternalObjective:
    """The internal models' loss (`InternalObjective.losses`) on adversarial inputs: the attack ascends the
    cross-entropy of score_temperature x DIM's scores through the whole model (D and the ten F_i; for the
    binarized share of the batch through both binarizations, straight-through), the F_i then read
    D(x_adv) (with biDIM's binarizations where chosen) and are scored on it, reconstructing
    `target` = "clean": D(x) of the clean image (learn to undo the perturbation), or "adversarial": D(x_adv).

    With `denoiser_weight` 0, D stays as its own stage trained it. Above 0, D trains here too, end to end: the
    score and reconstruction terms' gradients flow through D(x_adv) into D, and D also learns to map the
    adversarial input back to the clean image, `denoiser_weight` x mean_pixels (D(b(x_adv)) - x)^2 (the stage then
    updates the whole model's variables: `trains`)."""

    model: keras.Model  # dim_tf.models.DIM
    internal_objective: "InternalObjective"
    attack: adversarial.LinfAttack
    warmup_steps: int
    binarized_fraction: float
    target: str = "clean"
    denoiser_weight: float = 0.0

    @property
    def trains(self) -> keras.Model:
        """The model whose trainable variables this objective updates: the internal models, or with D the DIM."""
        return self.model if self.denoiser_weight > 0 else self.model.internal

    def __call__(self, x, y, step):
        binarize = adversarial.partial_binarizer(x, self.binarized_fraction)
        scale = self.internal_objective.score_temperature
        eps = self.attack.eps * linear_ramp(step, self.warmup_steps)
        x_adv = self.attack(adversarial.cross_entropy(lambda v: self.model(v, binarize=binarize), scale), x, y, eps)
        d_adv = self.model.denoise(x_adv, binarize)
        if self.denoiser_weight == 0:
            d_adv = tf.stop_gradient(d_adv)
        d_target = (tf.stop_gradient(d_adv) if self.target == "adversarial"
                    else tf.stop_gradient(self.model.denoise(x, binarize)))
        loss = self.internal_objective.losses(d_adv, d_target, y, step)
        if self.denoiser_weight > 0:
            restored = self.model.denoiser(binarize(x_adv))
            loss += self.denoiser_weight * tf.reduce_mean(tf.square(restored - x), axis=(1, 2, 3))
        return loss


def vae_losses(model: keras.Model, xs: list, beta: float) -> list:
    """ABS's VAEs' per-example negative ELBOs, K tensors [n_k], for K lists of images xs [n_k, 28, 28, 1] (VAE k
    on xs[k]): sum over pixels (x - G_k(z))^2 + beta * KL(q_k(z|x) || N(0, I)), with one reparameterised sample
    z = mean + exp(log variance / 2) * N(0, I). Batch normalisation in training mode."""
    means, log_vars = model.encode(xs, training=True)
    zs = [m + tf.exp(0.5 * v) * tf.random.normal(tf.shape(m)) for m, v in zip(means, log_vars)]
    recons = model.decode(zs, training=True)
    return [tf.reduce_sum(tf.square(r - x), axis=(1, 2, 3))
            + beta * 0.5 * tf.reduce_sum(tf.exp(v) + tf.square(m) - 1.0 - v, axis=1)
            for x, r, m, v in zip(xs, recons, means, log_vars)]


@dataclasses.dataclass
class ABSObjective:
    """ABS training: VAE k learns only from the batch's images of class k (`vae_losses`), and every class weighs
    the same: an example of a class with n_k of the batch's B examples is weighted B / (K n_k), so the batch loss
    is the mean over classes of each VAE's mean loss (what class-balanced batches give). A class absent from the
    batch runs its VAE on the batch's first image with weight 0 (batch normalisation needs one example)."""

    model: keras.Model  # dim_tf.models.ABS
    beta: float = 1.0
    augment: float = 0.0  # probability of each random distortion (`augment.random_distortion`); 0: off

    def __call__(self, x, y, step):
        x = augment.random_distortion(x, self.augment)
        batch = tf.shape(y)[0]
        classes = self.model.num_classes
        indices, weights = [], []
        for k in range(classes):
            index = tf.where(tf.equal(y, k))[:, 0]
            count = tf.size(index)
            indices.append(tf.cond(count > 0, lambda: index, lambda: tf.zeros([1], tf.int64)))
            weights.append(tf.cast(batch, tf.float32) * tf.cast(count > 0, tf.float32)
                           / (classes * tf.cast(tf.maximum(count, 1), tf.float32)))
        losses = vae_losses(self.model, [tf.gather(x, index) for index in indices], self.beta)
        shape = tf.shape(y, out_type=tf.int64)
        return tf.add_n([tf.scatter_nd(index[:, None], loss * weight, shape)
                         for index, loss, weight in zip(indices, losses, weights)])
