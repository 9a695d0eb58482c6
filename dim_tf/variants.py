"""Which form of a trained model is used, and its name: the model as trained (`default`) or its binarized variant
(`bi`: biDIM, biCNN, biABS, ...), with the backward pass of the binarization attacks differentiate (`exact`: none,
`straight_through` or `sigmoid`: BPDA surrogates). Evaluation, export and the web page all choose and name
variants here."""

from __future__ import annotations

from dim_tf import registry
from dim_tf.models.binarize import GRADIENTS

VARIANTS = ("default", "bi")

__all__ = ["GRADIENTS", "VARIANTS", "check", "choose", "name"]


def check(variant: str, bi_gradient: str = "exact", error: type[ValueError] = ValueError) -> None:
    """Refuses an unknown variant or gradient (as `error`, naming the flag)."""
    if variant not in VARIANTS:
        raise error(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    if bi_gradient not in GRADIENTS:
        raise error(f"unknown --bi_gradient {bi_gradient!r}; choose one of {', '.join(GRADIENTS)}")


def name(model_name: str, variant: str, bi_gradient: str = "exact") -> str:
    """`dim`, `bidim`, `bicnn-straight_through`, ...: the model's manifest name, its binarized variant's name
    (registry.BI_VARIANTS, else bi_NAME), and the gradient when it is not the exact one."""
    if variant != "bi":
        return model_name
    return registry.BI_VARIANTS.get(model_name, "bi_" + model_name) + ("" if bi_gradient == "exact" else
                                                                       "-" + bi_gradient)


def choose(model, manifest: dict, variant: str, bi_gradient: str = "exact",
           error: type[ValueError] = ValueError, hint: str = "; use --variant default"):
    """(the model to use, its name) for `variant` default|bi of a loaded `model` (its `manifest` names it); `error`
    (with `hint` appended) if it has no binarized variant. Call inside the strategy scope."""
    model_name = manifest.get("model", "?")
    if variant != "bi":
        return model, model_name
    chosen = registry.bi_variant(model, gradient=bi_gradient)
    if chosen is None:
        raise error(f"model {model_name!r} has no binarized variant (only {', '.join(registry.BI_VARIANTS)} do)"
                    + hint)
    return chosen, name(model_name, variant, bi_gradient)
