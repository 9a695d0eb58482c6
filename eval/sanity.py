"""Sanity checks that expose gradient masking (Carlini et al. 2019, "On evaluating adversarial robustness"; Athalye
et al. 2018): each turns numbers an evaluation already has into PASS / FAIL (or SKIP when the input is missing).

| check | FAIL when |
| --- | --- |
| large_eps | accuracy at L-inf 0.5 exceeds LARGE_EPS_MAX_ACCURACY (0.5 can push every pixel to grey) |
| iterative_vs_single_step | the iterative attacks' accuracy exceeds the single-step one's, or the single step breaks more than TOLERANCE_POINTS of the examples the iterative ones missed |
| white_vs_black_box | black-box attacks (score-, decision-based, transfer) break more than TOLERANCE_POINTS of the examples every white-box attack missed |
| more_steps_and_restarts | doubling the strongest attack's steps and restarts lowers the accuracy by TOLERANCE_POINTS or more |
| zero_gradient | the scores' gradient (all ten) is exactly zero for any example (or missing) |
| without_defense | the attacks leave more than WITHOUT_DEFENSE_MAX_ACCURACY of an undefended model's examples unbroken at L-inf 0.3 |

A FAIL does not stop a run: it is printed and written in the report, and means the robust accuracy beside it is not
trustworthy (an upper bound at best). NumPy only, except `score_gradient_zero` (TensorFlow).
"""

from __future__ import annotations

import dataclasses

import numpy as np

TOLERANCE_POINTS = 1.0  # percentage points of all examples
LARGE_EPS_MAX_ACCURACY = 0.02
WITHOUT_DEFENSE_MAX_ACCURACY = 0.05


@dataclasses.dataclass(frozen=True)
class Check:
    """One sanity check's verdict: status "PASS", "FAIL" or "SKIP"; value and limit as text."""

    name: str
    subject: str  # the model (variant) and threat model it was run on
    status: str
    value: str
    limit: str
    note: str = ""

    def line(self) -> str:
        return f"{self.status:4} {self.name} [{self.subject}]: {self.value} (limit: {self.limit})" + (
            f"; {self.note}" if self.note else "")

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def _status(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def skipped(name: str, subject: str, why: str) -> Check:
    return Check(name, subject, "SKIP", "not run", "-", why)


def large_eps(subject: str, accuracy: float, eps: float = 0.5) -> Check:
    """Accuracy at a large L-inf eps (0.5) must be near 0."""
    return Check("large_eps", subject, _status(accuracy <= LARGE_EPS_MAX_ACCURACY),
                 f"accuracy {100 * accuracy:.1f}% at L-inf {eps:g}", f"<= {100 * LARGE_EPS_MAX_ACCURACY:g}%")


def iterative_vs_single_step(subject: str, iterative_broken: np.ndarray, single_broken: np.ndarray,
                             correct: np.ndarray) -> Check:
    """`iterative_broken`, `single_broken`, `correct`: [N] bool (broken within eps by the iterative white-box attacks /
    by the single-step one; clean classification)."""
    n = max(len(correct), 1)
    acc_iter = float(np.mean(correct & ~iterative_broken))
    acc_single = float(np.mean(correct & ~single_broken))
    only_single = int(np.sum(single_broken & ~iterative_broken))
    ok = acc_iter <= acc_single and 100.0 * only_single / n <= TOLERANCE_POINTS
    return Check("iterative_vs_single_step", subject, _status(ok),
                 f"iterative {100 * acc_iter:.1f}% vs single-step {100 * acc_single:.1f}%; {only_single} example(s) "
                 "broken only by the single step",
                 f"iterative <= single-step, single-step-only <= {TOLERANCE_POINTS:g} point")


def white_vs_black_box(subject: str, black_only: int, n: int, attacks: list[str]) -> Check:
    """`black_only`: examples broken by black-box attacks after every white-box attack failed on them."""
    if not attacks:
        return skipped("white_vs_black_box", subject, "no black-box attack ran")
    points = 100.0 * black_only / max(n, 1)
    return Check("white_vs_black_box", subject, _status(points <= TOLERANCE_POINTS),
                 f"{black_only} example(s) ({points:.1f} points) broken by black-box attacks ({', '.join(attacks)}) "
                 "and by no white-box one", f"<= {TOLERANCE_POINTS:g} point")


def more_steps_and_restarts(subject: str, newly_broken: int, n: int, what: str) -> Check:
    """`newly_broken`: examples the doubled attack broke that nothing before it had (out of n)."""
    points = 100.0 * newly_broken / max(n, 1)
    return Check("more_steps_and_restarts", subject, _status(points < TOLERANCE_POINTS),
                 f"{what}: {newly_broken} more example(s) broken ({points:.1f} points)",
                 f"< {TOLERANCE_POINTS:g} point")


def zero_gradient(subject: str, zero_fraction: float, missing: bool, what: str) -> Check:
    """`zero_fraction`: share of probed examples whose score gradient is all zero; `missing`: no gradient path."""
    value = ("no gradient path (None)" if missing else f"{100 * zero_fraction:.1f}% of examples") + f" ({what})"
    return Check("zero_gradient", subject, _status(not missing and zero_fraction == 0.0), value, "0%",
                 "gradient masking: gradient attacks on this model see nothing" if missing or zero_fraction else "")


def without_defense(subject: str, accuracy: float, eps: float = 0.3) -> Check:
    """The same attacks on an undefended model must break (nearly) everything."""
    return Check("without_defense", subject, _status(accuracy <= WITHOUT_DEFENSE_MAX_ACCURACY),
                 f"accuracy {100 * accuracy:.1f}% at L-inf {eps:g}", f"<= {100 * WITHOUT_DEFENSE_MAX_ACCURACY:g}%")


def score_gradient_zero(model, images: np.ndarray) -> tuple[float, bool]:
    """(share of `images` for which the gradient of every one of the ten scores is exactly zero, whether the
    gradient is missing altogether). Ten backward passes per image."""
    import tensorflow as tf

    x = tf.constant(np.asarray(images, np.float32))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        scores = tf.convert_to_tensor(model(x))
        per_class = [scores[:, k] for k in range(scores.shape[-1])]
    grads = [tape.gradient(s, x) for s in per_class]
    del tape
    if all(g is None for g in grads):
        return 1.0, True
    zero = np.ones(len(images), bool)
    for g in grads:
        if g is not None:
            zero &= np.all(g.numpy().reshape(len(images), -1) == 0.0, axis=1)
    return float(zero.mean()), False
