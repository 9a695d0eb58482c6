"""Threat models: the norm that bounds a perturbation, its sensible eps range on MNIST, and distances.

NumPy only (no TensorFlow), so that flags can be checked before anything heavy is imported.
"""

from __future__ import annotations

import enum
import math

import numpy as np

# MNIST: 28 x 28 x 1 pixels in [0, 1].
NUM_PIXELS = 28 * 28
# An attack's raw output may exceed eps by float32 rounding; beyond this it counts as out of bounds, and an
# adversarial counts as within eps when its distance is <= eps + TOLERANCE.
TOLERANCE = 1e-4


class EvalError(ValueError):
    """Bad evaluation input (attack, norm, eps, examples, model); the message names the fix."""


class ThreatModel(enum.Enum):
    """A perturbation bound ||x_adv - x||_p <= eps, with x_adv in [0, 1]."""

    LINF = "linf"
    L2 = "l2"
    L1 = "l1"
    L0 = "l0"

    @classmethod
    def parse(cls, value: "str | ThreatModel") -> "ThreatModel":
        if isinstance(value, ThreatModel):
            return value
        try:
            return cls(str(value).lower())
        except ValueError:
            raise EvalError(f"unknown norm {value!r}; choose one of {', '.join(t.value for t in cls)}") from None

    @property
    def ord(self) -> float:
        """The order as NumPy and CleverHans spell it (np.inf, 2, 1, 0)."""
        return {"linf": np.inf, "l2": 2, "l1": 1, "l0": 0}[self.value]

    @property
    def max_eps(self) -> float:
        """The largest eps that still means something on MNIST: beyond it every image is reachable."""
        return {"linf": 1.0, "l2": math.sqrt(NUM_PIXELS), "l1": float(NUM_PIXELS), "l0": float(NUM_PIXELS)}[
            self.value]

    @property
    def default_eps(self) -> float:
        """The usual MNIST radius of the threat model."""
        return {"linf": 0.3, "l2": 2.0, "l1": 10.0, "l0": 12.0}[self.value]

    def distance(self, x_adv, x) -> np.ndarray:
        """Per-example ||x_adv - x|| in this norm, float64 [N] (L0: number of changed pixels)."""
        d = (np.asarray(x_adv, np.float64) - np.asarray(x, np.float64)).reshape(len(x), -1)
        if self is ThreatModel.LINF:
            return np.abs(d).max(axis=1) if d.shape[1] else np.zeros(len(x))
        if self is ThreatModel.L2:
            return np.sqrt((d * d).sum(axis=1))
        if self is ThreatModel.L1:
            return np.abs(d).sum(axis=1)
        return (d != 0).sum(axis=1).astype(np.float64)

    def check_eps(self, eps: float) -> float:
        """`eps` as a float, or `EvalError` if it lies outside (0, max_eps]."""
        try:
            value = float(eps)
        except (TypeError, ValueError):
            raise EvalError(f"eps {eps!r} is not a number") from None
        if not (0.0 < value <= self.max_eps + 1e-9):
            raise EvalError(f"eps {eps!r} is outside the sensible range of {self.value}: (0, {self.max_eps:g}] "
                            f"(MNIST images are 28x28 in [0, 1]); e.g. {self.value} eps {self.default_eps:g}")
        if self is ThreatModel.L0 and value != int(value):
            raise EvalError(f"l0 eps {eps!r} counts changed pixels: give a whole number in 1..{NUM_PIXELS} "
                            f"(e.g. {self.default_eps:g})")
        return value


def parse_eps_list(text: "str | float | list | tuple | None", norm: ThreatModel) -> list[float]:
    """'0.1,0.3' / 0.3 / [0.1, 0.3] -> sorted unique checked floats; None -> [the norm's default eps]."""
    if text is None or (isinstance(text, str) and not text.strip()):
        return [norm.default_eps]
    if isinstance(text, str):
        items = [t.strip() for t in text.split(",")]
        if any(not t for t in items):
            raise EvalError(f"--eps {text!r}: empty item in the comma list")
    elif isinstance(text, (list, tuple, np.ndarray)):
        items = list(text)
    else:
        items = [text]
    if not items:
        raise EvalError("eps list is empty")
    return sorted({norm.check_eps(item) for item in items})


def project(x_adv, x, norm: ThreatModel, eps: float) -> np.ndarray:
    """x_adv moved back into [0, 1] and the eps-ball around x (LINF: clip; L2/L1: scale the perturbation
    towards x, which keeps the box since x is in it). L0 keeps the eps largest changes."""
    x = np.asarray(x, np.float32)
    x_adv = np.clip(np.asarray(x_adv, np.float32), 0.0, 1.0)
    d = x_adv - x
    if norm is ThreatModel.LINF:
        d = np.clip(d, -eps, eps)
    elif norm is ThreatModel.L0:
        flat = d.reshape(len(d), -1).copy()
        k = int(eps)
        if k < flat.shape[1]:
            order = np.argsort(-np.abs(flat), axis=1)[:, k:]
            np.put_along_axis(flat, order, 0.0, axis=1)
        d = flat.reshape(d.shape)
    else:
        dist = norm.distance(x + d, x)
        # float32 rounding can land a hair outside; aim slightly inside.
        scale = np.minimum(1.0, eps * (1 - 1e-6) / np.maximum(dist, 1e-12)).astype(np.float32)
        d = d * scale.reshape(-1, *([1] * (d.ndim - 1)))
    return np.clip(x + d, 0.0, 1.0)
