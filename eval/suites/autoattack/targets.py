"""The model variant AutoAttack runs on (`Target`): the exact model every adversarial is verified on, the
differentiable model the gradient attacks use (the model itself, or for binarized variants the BPDA surrogate with
the same forward pass), the factor that turns its scores into logits, and its weights fingerprint. `check_gradient`
refuses, before any attack, a target whose gradient attacks would see no gradient."""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from dim_tf.eval.threat import EvalError


@dataclasses.dataclass(frozen=True)
class Target:
    model_dir: str
    manifest: dict
    variant: str  # default | bi
    name: str  # bidim, cnn, ...
    exact: object  # what is scored: the true 0.5 thresholds for bi variants
    differentiable: object  # what APGD and FAB differentiate (same forward pass as `exact`)
    surrogate: str | None  # the BPDA backward pass of a bi variant, None for the model as trained
    logit_scale: float  # scores x this = the logits the cross-entropy sees
    fingerprint: str  # dim_tf.fingerprint.weights_fingerprint of the trained model

    @property
    def folder(self) -> str:
        return os.path.basename(os.path.normpath(self.model_dir))


def logit_scale(manifest: dict) -> float:
    """`registry.logit_scale` of the model a manifest describes."""
    from dim_tf import registry

    config = manifest.get("config") or {}
    return registry.logit_scale(manifest.get("model"),
                                float(config.get("score_temperature", registry.TrainConfig.score_temperature)))


def make(model_dir: str, model, manifest: dict, variant: str, surrogate: str) -> Target:
    """The target for `variant` of a loaded model: bi variants are scored exactly and differentiated through
    `surrogate` (`straight_through` or `sigmoid`; `exact` leaves them without a gradient, which `check_gradient`
    refuses). Call inside the strategy scope."""
    from dim_tf import registry, variants
    from dim_tf.fingerprint import weights_fingerprint

    exact, name = variants.choose(model, manifest, variant, "exact", EvalError)
    differentiable = registry.bi_variant(model, surrogate) if variant == "bi" else exact
    return Target(model_dir, manifest, variant, name, exact, differentiable, surrogate if variant == "bi" else None,
                  logit_scale(manifest), weights_fingerprint(model))


def check_gradient(target: Target, images: np.ndarray, labels: np.ndarray) -> None:
    """`EvalError` when the loss gradient of the model the gradient attacks use is missing or all zero on `images`:
    APGD and FAB would see nothing and their accuracy would only measure gradient masking."""
    from dim_tf.eval.attack_run import gradient_probe

    probe = gradient_probe(target.differentiable, images, labels)
    if not (probe["none"] or probe["all_zero"]):
        return
    how = "missing" if probe["none"] else "zero"
    if target.variant == "bi":
        fix = ("its binarization's backward pass is exact; attack it through a BPDA surrogate (--bi_gradient "
               "straight_through, the suite's default, or sigmoid)")
    else:
        fix = ("the suite has no surrogate for a model as trained; attack a binarized model through --variant bi "
               "(BPDA), or use a gradient-free attack (--attack square)")
    raise EvalError(f"{target.name} ({target.folder}) has no input gradient (the loss gradient is {how} on the first "
                    f"{len(images)} test images): AutoAttack's APGD and FAB would see nothing; {fix}")
