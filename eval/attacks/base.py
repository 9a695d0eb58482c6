"""One row of the attack table, and what every attack function promises."""

from __future__ import annotations

import dataclasses
from typing import Callable

from dim_tf.eval.threat import EvalError, ThreatModel

# How a refused parameter value is described, by the type of the parameter's default.
_KIND_WORDS = {bool: "true or false", int: "an integer", float: "a number"}

# Kinds of attack:
#   "bounded": fn(model_fn, x, y, eps, norm, params, restart) -> x_adv with ||x_adv - x|| <= eps, run once per eps.
#   "minimal": fn(model_fn, x, y, None, norm, params, restart) -> the smallest adversarial it found (x where none),
#              run once; an example counts as broken at eps when it is adversarial and within eps.
KINDS = ("bounded", "minimal")


@dataclasses.dataclass(frozen=True)
class Attack:
    """An attack: `fn(model_fn, x, y, eps, norm, params, restart)` with `model_fn` images -> logits (a callable
    usable inside `tf.function`), `x` float32 tensor [B, 28, 28, 1] in [0, 1], `y` int32 tensor [B] of true labels
    (untargeted), `eps` a float (None for "minimal" attacks), `norm` a `ThreatModel`, `params` this row's defaults
    updated by the caller, `restart` 0, 1, ... (randomised attacks draw a new start). Returns [B, 28, 28, 1] in
    [0, 1] (tensor or NumPy). `check(params)` refuses resolved parameters the attack cannot run with (an
    `EvalError`); `loss` names what the attack optimises, as the result JSON records it (a string, or a function
    of the resolved parameters; None for attacks that optimise no loss: decision-based, noise, transfer)."""

    name: str
    family: str
    norms: tuple[ThreatModel, ...]
    fn: Callable
    defaults: dict
    kind: str = "bounded"
    randomized: bool = False  # restarts draw new random starts (else a restart would repeat the same run)
    uses_gradient: bool = True
    source: str = ""  # where the algorithm's code comes from
    description: str = ""
    check: Callable[[dict], None] | None = None
    loss: str | Callable[[dict], str] | None = None
    words: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)  # parameter -> words it takes
    # besides a number (pixel_flip's candidates="all")

    def __post_init__(self):
        assert self.kind in KINDS, self.kind

    def check_norm(self, norm: ThreatModel) -> None:
        if norm not in self.norms:
            raise EvalError(f"attack {self.name!r} supports {', '.join(n.value for n in self.norms)}, "
                            f"not {norm.value}; `--attack list` shows which attacks cover {norm.value}")

    def resolve_params(self, overrides: dict | None) -> dict:
        """This row's defaults updated by `overrides` (unknown keys are an error; types follow the defaults)."""
        params = dict(self.defaults)
        for key, value in (overrides or {}).items():
            if key not in params:
                known = ", ".join(sorted(params)) or "none"
                raise EvalError(f"attack {self.name!r} has no parameter {key!r}; its parameters: {known}")
            default, words = params[key], self.words.get(key, ())
            if value in words:
                params[key] = value
                continue
            try:
                if isinstance(default, bool):
                    if isinstance(value, str):
                        if value.lower() not in ("true", "false", "1", "0"):
                            raise ValueError(value)
                        value = value.lower() in ("true", "1")
                    value = bool(value)
                elif isinstance(default, int):
                    if float(value) != int(float(value)):
                        raise ValueError(value)
                    value = int(float(value))
                elif isinstance(default, float):
                    value = float(value)
            except (TypeError, ValueError):
                kind = _KIND_WORDS[type(default)]
                raise EvalError(f"attack {self.name!r}: parameter {key}={value!r} must be {kind}"
                                f"{''.join(f' or {w!r}' for w in words)}") from None
            params[key] = value
        if self.check is not None:
            self.check(params)
        return params

    def loss_of(self, params: dict) -> str | None:
        """The loss the attack optimises with these (resolved) parameters."""
        return self.loss(params) if callable(self.loss) else self.loss


def positive(params: dict, *keys: str) -> None:
    for key in keys:
        if key in params and not params[key] > 0:
            raise EvalError(f"parameter {key} must be > 0, got {params[key]}")


def iterative(params: dict) -> None:
    positive(params, "steps", "rel_stepsize")
    if params.get("rel_stepsize", 0) > 1:
        raise EvalError(f"rel_stepsize {params['rel_stepsize']} > 1: a step larger than eps (CleverHans refuses it)")
