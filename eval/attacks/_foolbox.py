"""The one adapter between the attack table and foolbox 3.3.4 (imported through `dim_tf.eval.foolbox_compat`).

An attack function gets `run_attack`'s `model_fn` (images [B, 28, 28, 1] float32 in [0, 1] -> logits [B, 10]; the
`CountingModel`, which counts every pass foolbox makes and turns a missing gradient into zeros), `x` [B, 28,
28, 1] and the true labels `y` [B] (TF tensors or NumPy). `run` hands them to a foolbox attack's `run` as eagerpy
tensors (TensorFlow for gradient attacks, NumPy for the others; untargeted `Misclassification`, bounds (0, 1)) and
returns NumPy [B, 28, 28, 1] float32.

Boundary, HopSkipJump, Pointwise and Brendel-Bethge start from an adversarial point per example, found by an
initial attack (foolbox's default: blended uniform noise). On a robust model that init can fail for some examples
(foolbox then stops with an assertion or a ValueError for the whole batch); `run_from_starts` gives such an example
the nearest image of its batch that the model puts in another class (a valid, if distant, start), and returns an
example with no start at all unchanged (nothing found).
"""

from __future__ import annotations

import warnings
from typing import Callable

import numpy as np
import tensorflow as tf

from dim_tf.eval.compiled import compiled
from dim_tf.eval.foolbox_compat import eagerpy as ep
from dim_tf.eval.foolbox_compat import foolbox as fb
from dim_tf.eval.threat import ThreatModel

BOUNDS = (0.0, 1.0)
SOURCE = "foolbox 3.3.4"

def model(model_fn: Callable) -> fb.models.TensorFlowModel:
    """`model_fn` as a foolbox model with bounds (0, 1) (its calls compiled by tf.function, once per model_fn)."""
    device = "/GPU:0" if tf.config.list_physical_devices("GPU") else "/CPU:0"
    return fb.models.TensorFlowModel(compiled(model_fn), bounds=BOUNDS, device=device)


def _tensor(a, dtype) -> ep.Tensor:
    return ep.astensor(tf.convert_to_tensor(np.asarray(a, dtype)))


def numpy_model(model_fn: Callable) -> fb.models.NumPyModel:
    """`model_fn` as a foolbox model on NumPy arrays (cast to float32; bounds (0, 1)), for attacks that need no
    gradient."""
    function = compiled(model_fn)
    return fb.models.NumPyModel(lambda a: function(tf.constant(a, tf.float32)).numpy(), bounds=BOUNDS,
                                data_format="channels_last")


# Attacks that need the model's gradient run on eagerpy's TensorFlow tensors; all others on its NumPy tensors (the
# model still runs in TensorFlow): their many small tensor ops per model call cost ~3x less time in NumPy than as
# eager TensorFlow ops (Boundary: 6 instead of 17 ms a step on 40 examples), and PointwiseAttack indexes with Python
# lists, which eagerpy 0.30.0's TensorFlow index_update does not take ("'list' object has no attribute 'dtype'").
GRADIENT_BASED = (fb.attacks.DDNAttack, fb.attacks.deepfool.DeepFoolAttack,
                  fb.attacks.brendel_bethge.BrendelBethgeAttack)


def run(attack, model_fn: Callable, x, y, epsilon: float | None = None, **kwargs) -> np.ndarray:
    """`attack.run(model, x, Misclassification(y), **kwargs)` (kwargs e.g. `starting_points=` [B, 28, 28, 1] NumPy)
    -> [B, 28, 28, 1] float32 NumPy; an example whose output is not finite comes back as x (nothing found).
    With `epsilon` (a fixed-eps attack): `attack(..., epsilons=epsilon)`'s output clipped to the eps ball, as foolbox
    scores it (its `run` may overshoot: LinfAdditiveUniformNoise scales the noise by max(p), not max|p|)."""
    x = np.asarray(x, np.float32)
    if isinstance(attack, GRADIENT_BASED):
        fmodel, tensor = model(model_fn), _tensor
    else:
        fmodel, tensor = numpy_model(model_fn), lambda a, dtype: ep.astensor(np.asarray(a, dtype))
    if "starting_points" in kwargs:
        kwargs["starting_points"] = tensor(kwargs["starting_points"], np.float32)
    inputs, criterion = tensor(x, np.float32), fb.criteria.Misclassification(tensor(y, np.int64))
    if epsilon is None:
        out = attack.run(fmodel, inputs, criterion, **kwargs)
    else:
        _, out, _ = attack(fmodel, inputs, criterion, epsilons=epsilon, **kwargs)
    out = np.array(out.numpy(), np.float32)
    bad = ~np.isfinite(out).reshape(len(out), -1).all(axis=1)
    out[bad] = x[bad]
    return out


def is_adversarial(model_fn: Callable, images, y) -> np.ndarray:
    """[B] bool: the model's class for `images` differs from `y`."""
    return model(model_fn)(_tensor(images, np.float32)).argmax(axis=-1).numpy() != np.asarray(y)


def starting_points(init_attack, model_fn: Callable, x, y, norm: ThreatModel) -> tuple[np.ndarray, np.ndarray]:
    """Adversarial starts for `x`: `init_attack`'s output where it is adversarial, else the nearest image of the batch
    (in `norm`) that the model does not put in the example's class. Returns (starts [B, 28, 28, 1], found [B] bool);
    found is False where neither exists (a batch of one class)."""
    x, y = np.asarray(x, np.float32), np.asarray(y)
    with warnings.catch_warnings():  # "failed to draw sufficient random inputs": handled below
        warnings.filterwarnings("ignore", message=".*failed to draw sufficient")
        starts = run(init_attack, model_fn, x, y)
    found = is_adversarial(model_fn, starts, y)
    if not found.all():
        pred = model(model_fn)(_tensor(x, np.float32)).argmax(axis=-1).numpy()
        for i in np.flatnonzero(~found):
            others = np.flatnonzero(pred != y[i])
            if len(others):
                nearest = others[np.argmin(norm.distance(x[others], np.broadcast_to(x[i], x[others].shape)))]
                starts[i], found[i] = x[nearest], True
    return starts, found


def run_from_starts(attack, init_attack, model_fn: Callable, x, y, norm: ThreatModel) -> tuple[np.ndarray, np.ndarray]:
    """`attack` (a foolbox attack taking `starting_points`) from `starting_points` on the examples that have one.
    Returns (adversarials [B, 28, 28, 1], found [B] bool); an example without a start comes back as x."""
    x, y = np.asarray(x, np.float32), np.asarray(y)
    starts, found = starting_points(init_attack, model_fn, x, y, norm)
    out = x.copy()
    if found.any():
        out[found] = run(attack, model_fn, x[found], y[found], starting_points=starts[found])
    return out, found


def blended_noise(norm: ThreatModel, directions: int, steps: int) -> fb.attacks.LinearSearchBlendedUniformNoiseAttack:
    """foolbox's default init for Boundary, HopSkipJump and Brendel-Bethge: blends x with uniform noise (the first
    of `directions` draws that is adversarial) along `steps` points of the line."""
    distance = {ThreatModel.L0: fb.distances.l0, ThreatModel.L1: fb.distances.l1, ThreatModel.L2: fb.distances.l2,
                ThreatModel.LINF: fb.distances.linf}[norm]
    return fb.attacks.LinearSearchBlendedUniformNoiseAttack(distance=distance, directions=directions, steps=steps)
