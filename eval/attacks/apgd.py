"""APGD (Croce & Hein 2020, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks"): projected gradient ascent whose step size each example adapts on its own, written here
over the adaptive attacks' losses and gradient pass (`dim_tf.eval.attacks.adaptive`).

Table rows (signature `fn(model_fn, x, y, eps, norm, params, restart)`, L-inf and L2):
  apgd_dlr       untargeted APGD on the DLR loss (scale-invariant: DIM's scores need no temperature);
  apgd_targeted  APGD on the targeted DLR loss toward the `targets` wrong classes of highest clean score in turn
                 (AutoAttack's APGD-T), each example stopping at its first success.

Why beside the fixed-schedule PGD rows: on adversarially trained models, doubling margin PGD's steps and restarts
kept breaking 1-5 more points of the first 200 images (the `more_steps_and_restarts` FAILs of
`eval/results/adaptive1000_madry_pgd7.md`, `adaptive500_dim_robust.md`, `adaptive200_cnn_at.md`): PGD had not
converged. APGD halves an example's step only when its loss stops rising, and restarts it from its best point.

The schedule: step 2 eps; checkpoints at fractions 0, 0.22, then p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)
of the steps (in whole iterations, as AutoAttack's code counts them); at a checkpoint an example halves its step
and returns to its best iterate when its loss rose in at most RHO of the steps since the last checkpoint, or when
it neither halved last time nor improved its best since.
Momentum ALPHA mixes the projected step with the previous move (none on the first step and after a halving).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from dim_tf.eval.attacks.adaptive import (_loss_and_grad, _start, ascent_direction, check_steps_eot_targets,
                                          project, toward_each_class)
from dim_tf.eval.attacks.base import Attack
from dim_tf.eval.threat import ThreatModel

LINF, L2 = ThreatModel.LINF, ThreatModel.L2
RHO = 0.75  # share of rising steps below which the step halves (the paper's rho)
ALPHA = 0.75  # momentum: weight of the new projected step against the previous move


def checkpoints(steps: int) -> list[int]:
    """The iterations (1..steps) at which step sizes are reconsidered: the first after 22% of the steps, then
    windows 3% of the steps shorter each time, down to 6% (in whole iterations, at least 1)."""
    window = max(int(0.22 * steps), 1)
    shrink, shortest = max(int(0.03 * steps), 1), max(int(0.06 * steps), 1)
    marks = [window]
    while marks[-1] + max(window - shrink, shortest) <= steps:
        window = max(window - shrink, shortest)
        marks.append(marks[-1] + window)
    return marks


def apgd(model_fn, x, y, eps: float, norm: ThreatModel, steps: int, *, kind: str = "dlr", aux=None,
         start: np.ndarray | None = None, eot: int = 1) -> np.ndarray:
    """APGD ascent on loss `kind` ("dlr", "margin", or "targeted_dlr" with aux = target labels [B]) from `start`
    (default x). Returns, per example, the first adversarial iterate (by model_fn's prediction) or, when there is
    none, the iterate of largest loss. x float32 [B, 28, 28, 1] in [0, 1], y int [B]; NumPy out."""
    x = np.asarray(x, np.float32)
    y = np.asarray(y, np.int32)
    aux = y if aux is None else np.asarray(aux, np.int32)
    n = len(x)
    adv = x.copy() if start is None else np.asarray(start, np.float32).copy()
    out = adv.copy()
    active = np.ones(n, bool)

    def evaluate(images, idx):
        grad, scores, loss = (t.numpy() for t in _loss_and_grad(
            model_fn, tf.constant(images), tf.constant(y[idx]), tf.constant(aux[idx]), kind, int(eot), None))
        fooled = scores.argmax(1) != y[idx]
        out[idx[fooled]] = images[fooled]
        active[idx[fooled]] = False
        return grad, loss

    idx = np.arange(n)
    grad, loss = evaluate(adv, idx)
    best, best_loss, best_grad = adv.copy(), loss.copy(), grad.copy()
    prev = adv.copy()
    last_loss = loss.copy()
    eta = np.full(n, 2.0 * eps, np.float32)
    rises = np.zeros(n, int)
    halved_last = np.zeros(n, bool)
    best_at_last = best_loss.copy()
    marks = checkpoints(int(steps))
    last_mark = 0
    first = np.ones(n, bool)  # no momentum on the first step and after a return to the best iterate
    for k in range(1, int(steps) + 1):
        idx = np.flatnonzero(active)
        if not len(idx):
            break
        z = project(x[idx], adv[idx] + ascent_direction(grad[idx], norm, eta[idx]), eps, norm)
        a = np.where(first[idx], 1.0, ALPHA).astype(np.float32).reshape(-1, 1, 1, 1)
        moved = project(x[idx], adv[idx] + a * (z - adv[idx]) + (1 - a) * (adv[idx] - prev[idx]), eps, norm)
        prev[idx], adv[idx] = adv[idx], moved
        first[idx] = False
        g, f = evaluate(moved, idx)
        grad[idx] = g
        rises[idx] += f > last_loss[idx]
        last_loss[idx] = f
        better = f > best_loss[idx]
        best[idx[better]], best_loss[idx[better]], best_grad[idx[better]] = moved[better], f[better], g[better]
        if k in marks:
            stalled = rises <= RHO * (k - last_mark)
            stuck = ~halved_last & (best_loss <= best_at_last)
            halve = (stalled | stuck) & active
            eta[halve] /= 2.0
            adv[halve], prev[halve], grad[halve] = best[halve], best[halve], best_grad[halve]
            first[halve] = True
            halved_last, best_at_last, rises, last_mark = halve, best_loss.copy(), np.zeros(n, int), k
    out[active] = best[active]
    return out


def apgd_dlr(model_fn, x, y, eps, norm, params, restart=0):
    """Untargeted APGD on the DLR loss (see `apgd`) from a random point of the ball (every restart: as in
    AutoAttack, and unlike the PGD rows, whose restart 0 starts at x)."""
    x = np.asarray(x, np.float32)
    return apgd(model_fn, x, y, eps, norm, params["steps"], kind="dlr", start=_start(x, eps, norm, restart + 1),
                eot=params["eot"])


def apgd_targeted(model_fn, x, y, eps, norm, params, restart=0):
    """APGD on the targeted DLR loss toward the `targets` wrong classes of highest clean score in turn (see
    `adaptive.toward_each_class`), from a random point of the ball."""
    x = np.asarray(x, np.float32)
    y = np.asarray(y, np.int32)
    start = _start(x, eps, norm, restart + 1)
    return toward_each_class(model_fn, x, y, params["targets"], lambda todo, t: apgd(
        model_fn, x[todo], y[todo], eps, norm, params["steps"], kind="targeted_dlr", aux=t, start=start[todo],
        eot=params["eot"]))


ROWS = (
    Attack("apgd_dlr", "apgd", (LINF, L2), apgd_dlr, {"steps": 100, "eot": 1}, randomized=True, source="own",
           description="APGD (Croce & Hein 2020) on the DLR loss: per-example step halving at checkpoints, momentum",
           check=check_steps_eot_targets, loss="dlr"),
    Attack("apgd_targeted", "apgd", (LINF, L2), apgd_targeted, {"steps": 100, "eot": 1, "targets": 3},
           randomized=True, source="own",
           description="APGD on the targeted DLR loss toward the wrong classes of highest clean score (APGD-T)",
           check=check_steps_eot_targets, loss="targeted dlr"),
)
