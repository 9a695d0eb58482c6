"""AutoAttack's APGD-CE, APGD-T and Square through ART (adversarial-robustness-toolbox, pinned in setup.py's
`autoattack` extra): the model wrapped as ART's `TensorFlowV2Classifier`, and the attacks with the parameters of the
standard version of AutoAttack (Croce & Hein 2020): APGD 100 iterations from one random start with initial step
2 eps, APGD-T on the DLR loss toward one target class per call, Square with p_init 0.8 and one restart.

ART is imported here only (`require_art` checks it is installed before any work). Each function takes NumPy images
[B, 28, 28, 1] in [0, 1] and int labels, and returns ART's adversarials unchanged (the caller projects them into
the ball and verifies them on the exact model).
"""

from __future__ import annotations

import functools
import importlib.util

import numpy as np

from dim_tf.eval.threat import EvalError, ThreatModel

PACKAGE = "adversarial-robustness-toolbox"  # its distribution name: the key of its version in reports
ART_VERSION = "1.20.1"
INSTALL = 'pip install -e ".[autoattack]"'
NUM_CLASSES = 10


def require_art() -> None:
    """`EvalError` naming the extra to install when ART is missing (checked before the model or data is loaded)."""
    if importlib.util.find_spec("art") is None:
        raise EvalError(f"--suite autoattack needs ART ({PACKAGE}=={ART_VERSION}), which is "
                        f"not installed: {INSTALL}")


def _art_norm(norm: ThreatModel):
    return {ThreatModel.LINF: np.inf, ThreatModel.L2: 2}[norm]


def _onehot(labels: np.ndarray) -> np.ndarray:
    return np.eye(NUM_CLASSES, dtype=np.float32)[np.asarray(labels, int)]


def classifier(model, logit_scale: float = 1.0, loss=None, remember: bool = False):
    """`model` (images -> scores) as ART's `TensorFlowV2Classifier` on [0, 1] inputs, its scores multiplied by
    `logit_scale` (DIM's scores are not calibrated logits: the cross-entropy attacks see them at the training
    temperature; DLR, FAB and Square are scale-free), with `loss` (default: cross-entropy on logits) as the loss ART
    differentiates. ART calls the model with a `training` keyword; the model runs as one TensorFlow graph (ART
    calls it eagerly, layer by layer, otherwise: several times slower on 2 cores). `remember`: the
    `_remembering_classifier` below (for Square)."""
    import keras
    import tensorflow as tf
    from art.estimators.classification import TensorFlowV2Classifier

    graph = tf.function(lambda x: logit_scale * model(x), reduce_retracing=True)

    def logits(x, training=False):
        del training  # the models are evaluated at test time only
        return graph(x)

    kind = _remembering_classifier() if remember else TensorFlowV2Classifier
    return kind(model=logits, nb_classes=NUM_CLASSES, input_shape=(28, 28, 1),
                loss_object=loss or keras.losses.CategoricalCrossentropy(from_logits=True), clip_values=(0.0, 1.0))


@functools.lru_cache(maxsize=None)
def _remembering_classifier():
    """A `TensorFlowV2Classifier` whose `predict` remembers the scores of the images of its last two calls. ART's
    Square scores the current iterates twice more per iteration than the paper's (all of them to see which are
    still robust, then the robust ones again for their loss) before scoring the new candidates: remembered, each
    iteration costs one forward pass of the new candidates, as in the paper. Same outputs, a third of the work."""
    from art.estimators.classification import TensorFlowV2Classifier

    class RememberingClassifier(TensorFlowV2Classifier):
        _recent: tuple = ({}, {})

        def predict(self, x: np.ndarray, batch_size: int = 128, training_mode: bool = False, **kwargs):
            if not len(x):
                return np.zeros((0, NUM_CLASSES), np.float32)
            keys = [row.tobytes() for row in np.ascontiguousarray(x)]
            known = {**self._recent[0], **self._recent[1]}
            missing = [i for i, key in enumerate(keys) if key not in known]
            if missing:
                fresh = super().predict(x[missing], batch_size, training_mode, **kwargs)
                known.update(zip((keys[i] for i in missing), fresh))
            self._recent = (self._recent[1], {key: known[key] for key in keys})
            return np.stack([known[key] for key in keys])

    return RememberingClassifier


class DifferenceLogitsRatio:
    """ART 1.20.1's DLR loss for TensorFlow, -(z_y - z_i) / (z_1 - z_3) with y the one-hot label's class (the target
    class for APGD-T, whose gradient ART descends), z_i the largest other logit and z_1 >= z_2 >= z_3 the sorted
    logits, vectorised: ART's own loops over the batch in Python with eager slicing (66 ms per call on 30 images
    here, two calls per iteration, 900 iterations per image in APGD-T). The denominator gets the reference
    implementation's 1e-12, so that tied logits give no NaN. ART sets `reduction` (none, sum, mean) around its calls;
    the suite passes it as the estimator's loss (APGD's loss_type=None)."""

    def __init__(self):
        self.reduction = "mean"

    def __call__(self, y_true, y_pred):
        import tensorflow as tf

        y_pred = tf.convert_to_tensor(y_pred)
        label = tf.argmax(tf.convert_to_tensor(y_true), axis=1, output_type=tf.int32)
        ranked = tf.sort(y_pred, axis=1, direction="DESCENDING")
        z_y = tf.gather(y_pred, label, axis=1, batch_dims=1)
        top = tf.argmax(y_pred, axis=1, output_type=tf.int32)
        z_i = tf.where(top == label, ranked[:, 1], ranked[:, 0])
        dlr = -(z_y - z_i) / (ranked[:, 0] - ranked[:, 2] + 1e-12)
        if self.reduction == "none":  # ART sets the strings of tf.keras.losses.Reduction
            return dlr
        return tf.reduce_sum(dlr) if self.reduction == "sum" else tf.reduce_mean(dlr)


def apgd(estimator, x: np.ndarray, labels: np.ndarray, norm: ThreatModel, eps: float, steps: int, batch_size: int,
         targeted: bool) -> np.ndarray:
    """APGD-CE (untargeted, `labels` the true classes; ART's cross-entropy on the estimator's logits) or APGD-T
    (targeted, `labels` the target classes; `estimator` must carry `DifferenceLogitsRatio` as its loss)."""
    from art.attacks.evasion import AutoProjectedGradientDescent

    attack = AutoProjectedGradientDescent(
        estimator, norm=_art_norm(norm), eps=eps, eps_step=2 * eps, max_iter=int(steps), targeted=targeted,
        nb_random_init=1, batch_size=int(batch_size), loss_type=None if targeted else "cross_entropy", verbose=False)
    return attack.generate(np.asarray(x, np.float32), y=_onehot(labels))


# The shim: ART 1.20.1's SquareAttack, L2 branch, sets the new window's perturbation to
#   delta_new /= np.sqrt(np.sum(delta_new**2, ...)) * np.sqrt(budget)
# i.e. divides by the window's budget where the paper and the authors' code (and eval/attacks/score_based.py)
# multiply: unit norm times sqrt(budget). Dividing gives the window a mass of 1/sqrt(budget), which after the
# rescaling to norm eps wipes out the perturbation built so far, and a zero budget (perturbation at full norm, empty
# windows) makes NaN images that a ReLU network can score as finite and accept. `_square_class` rebuilds
# `generate` from ART's own source with that one expression corrected, and refuses any other ART source.
SQUARE_BUG = "delta_new /= np.sqrt(np.sum(delta_new**2, axis=(1, 2), keepdims=True)) * np.sqrt("
SQUARE_FIX = "delta_new = delta_new / np.sqrt(np.sum(delta_new**2, axis=(1, 2), keepdims=True)) * np.sqrt("


def _square_class():
    import inspect
    import textwrap

    from art.attacks.evasion import square_attack

    source = textwrap.dedent(inspect.getsource(square_attack.SquareAttack.generate))
    if source.count(SQUARE_BUG) != 1:
        raise RuntimeError(f"ART's SquareAttack is not the {ART_VERSION} source the L2 shim patches; install "
                           f"{PACKAGE}=={ART_VERSION} ({INSTALL})")
    namespace = dict(vars(square_attack))
    exec(compile(source.replace(SQUARE_BUG, SQUARE_FIX), square_attack.__file__, "exec"), namespace)  # noqa: S102
    return type("SquareAttackL2Fixed", (square_attack.SquareAttack,), {"generate": namespace["generate"]})


def square(estimator, x: np.ndarray, labels: np.ndarray, norm: ThreatModel, eps: float, queries: int,
           batch_size: int) -> np.ndarray:
    """Square (score-based, no gradient) with `queries` iterations; L2 with the window fix above."""
    attack = _square_class()(estimator, norm=_art_norm(norm), eps=eps, max_iter=int(queries), p_init=0.8,
                             nb_restarts=1, batch_size=int(batch_size), verbose=False)
    return attack.generate(np.asarray(x, np.float32), y=_onehot(labels))
