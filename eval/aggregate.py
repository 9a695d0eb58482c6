"""Per-sample worst case over attacks: the paper's "All" rows, its minimal-accuracy row, accuracy-vs-eps curves.

An `Outcome` is one attack's (or the worst case's) verdict on N examples at a norm's threshold:
- `broken[i]`: an adversarial within the threshold (+ `threat.TOLERANCE`) was found for the correctly classified
  example i;
- `distance[i]`: the smallest adversarial distance found for i by that attack, at any size (a minimal attack
  reports it beyond the threshold too; a bounded attack only where it succeeded, at its eps); 0 where the clean
  image is already misclassified; inf where no adversarial was found.
Accuracy = correct and not broken, over all N (`run_attack`'s robust accuracy).

Worst case (paper section 4): broken if any attack broke it; distance = the minimum over the attacks. Its median is
the median over all N samples, inf counted as inf (so it is inf when at least half are never broken; numpy's median
of an even count averages the two middle values). Every distance is that of a real adversarial example, so the
median is an upper bound on the median of the true minimal distances; bounded attacks (PGD, BIM, FGSM/FGM) ran only
at the threshold, so their successes count at their actual perturbation size (<= the threshold), never smaller.
The curves use the same distances: accuracy(eps) = share of samples whose distance exceeds eps (+ tolerance), exact
at the threshold, and beyond it from the minimal attacks only.

NumPy only (no TensorFlow): results are read from `run_attack`'s JSON dicts.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np

from dim_tf.eval.threat import TOLERANCE, EvalError


@dataclasses.dataclass(frozen=True)
class Outcome:
    """correct [N] bool (clean classification), broken [N] bool, distance [N] float64 (see the module doc);
    masked: the attack saw a zero gradient (gradient masking: its accuracy is only an upper bound)."""

    correct: np.ndarray
    broken: np.ndarray
    distance: np.ndarray
    masked: bool = False

    @property
    def accuracy(self) -> float:
        return float(np.mean(self.correct & ~self.broken)) if len(self.correct) else 0.0

    @property
    def median_distance(self) -> float:
        return float(np.median(self.distance)) if len(self.distance) else math.inf

    def first(self, n: int) -> "Outcome":
        """The outcome on the first n samples (all of them if there are fewer)."""
        return Outcome(self.correct[:n], self.broken[:n], self.distance[:n], self.masked)


def from_result(result: dict, threshold: float, masked: bool = False) -> Outcome:
    """The `Outcome` at `threshold` of a result (`dim_tf.eval.attack_run.run_attack`'s dict or its JSON)."""
    correct = np.asarray(result["clean_correct"], bool)
    entry = next((r for r in result["results"] if math.isclose(r["eps"], threshold, rel_tol=1e-9)), None)
    if entry is None:
        have = ", ".join(f"{r['eps']:g}" for r in result["results"])
        raise EvalError(f"result of {result['attack']['name']} {result['threat_model']} has no eps {threshold:g} "
                        f"(it has {have})")
    broken = np.asarray(entry["success"], bool)
    minimal = result.get("minimal_distance")
    raw = minimal["distance"] if minimal else [d if s else None for d, s in zip(entry["distance"], broken)]
    distance = np.array([math.inf if d is None else float(d) for d in raw], np.float64)
    distance[~correct] = 0.0
    if len(broken) != len(correct) or len(distance) != len(correct):
        raise EvalError(f"result of {result['attack']['name']} has arrays of different lengths")
    return Outcome(correct, broken & correct, distance, masked)


def worst_case(outcomes: Sequence[Outcome]) -> Outcome:
    """Per sample: broken by any, smallest distance over all; masked if any input was."""
    if not outcomes:
        raise EvalError("worst case over no attacks")
    correct = outcomes[0].correct
    for o in outcomes[1:]:
        if o.correct.shape != correct.shape or not np.array_equal(o.correct, correct):
            raise EvalError("the attacks' results disagree on which clean images are classified right: they come "
                            "from different models or examples; re-run them together")
    broken = np.logical_or.reduce([o.broken for o in outcomes])
    distance = np.minimum.reduce([o.distance for o in outcomes])
    return Outcome(correct, broken, distance, any(o.masked for o in outcomes))


def minimal_accuracy(outcomes: Sequence[Outcome]) -> tuple[float, int, bool]:
    """(lowest accuracy over the attacks, index of that attack, masked): masked if any attack was (a masked
    attack's true accuracy may be lower than the minimum shown)."""
    if not outcomes:
        raise EvalError("minimal accuracy over no attacks")
    accuracies = [o.accuracy for o in outcomes]
    worst = int(np.argmin(accuracies))
    return accuracies[worst], worst, any(o.masked for o in outcomes)


def accuracy_curve(distance: np.ndarray, eps: np.ndarray) -> np.ndarray:
    """Accuracy at each eps: the share of samples whose smallest adversarial distance exceeds eps (+ tolerance).
    distance [N] as in `Outcome`, eps [M] -> [M] in [0, 1]."""
    distance = np.asarray(distance, np.float64)
    eps = np.asarray(eps, np.float64)
    if not len(distance):
        return np.zeros(len(eps))
    return (distance[None, :] > eps[:, None] + TOLERANCE).mean(axis=1)


def finite_or_none(value: float) -> float | None:
    """JSON has no infinity: inf -> None."""
    return None if math.isinf(value) else float(value)


def to_json(outcome: Outcome) -> dict:
    """accuracy, median distance (None: infinite) and the per-sample distances (None: never broken)."""
    return {"accuracy": outcome.accuracy, "median_distance": finite_or_none(outcome.median_distance),
            "broken": int(outcome.broken.sum()), "masked": outcome.masked,
            "distance": [finite_or_none(d) for d in outcome.distance]}
