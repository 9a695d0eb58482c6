"""foolbox's additive random-noise attacks (kind "bounded", run once per eps): up to `repeats` draws of Gaussian or
uniform noise scaled to norm eps, added to x and clipped to [0, 1]; the first draw that fools the model is kept. A
sanity baseline (the paper counts them among its 42 attacks): no gradient, no scores, and a model trained on noise,
as DIM is, should resist them. foolbox 3.3.4 code, run unchanged through `dim_tf.eval.attacks._foolbox`.

`clipping_aware` (L2 only): rescale the noise so that the perturbation left after clipping to [0, 1] has norm eps
(Rauber & Bethge 2020); without it, clipping throws away much of the budget on MNIST's black background. At L-inf
clipping leaves the norm at eps wherever a pixel has room, so foolbox has only the plain version.
"""

from __future__ import annotations

from dim_tf.eval.attacks import _foolbox as fbx
from dim_tf.eval.attacks.base import Attack, positive
from dim_tf.eval.foolbox_compat import foolbox as fb
from dim_tf.eval.threat import ThreatModel

LINF, L2 = ThreatModel.LINF, ThreatModel.L2

# (noise, norm, clipping_aware) -> foolbox class
CLASSES = {
    ("gaussian", L2, False): fb.attacks.L2RepeatedAdditiveGaussianNoiseAttack,
    ("gaussian", L2, True): fb.attacks.L2ClippingAwareRepeatedAdditiveGaussianNoiseAttack,
    ("uniform", L2, False): fb.attacks.L2RepeatedAdditiveUniformNoiseAttack,
    ("uniform", L2, True): fb.attacks.L2ClippingAwareRepeatedAdditiveUniformNoiseAttack,
    ("uniform", LINF, False): fb.attacks.LinfRepeatedAdditiveUniformNoiseAttack,
    ("uniform", LINF, True): fb.attacks.LinfRepeatedAdditiveUniformNoiseAttack,
}


def _noise_attack(noise: str):
    def attack(model_fn, x, y, eps, norm, params, restart=0):
        cls = CLASSES[noise, norm, params["clipping_aware"]]
        return fbx.run(cls(repeats=params["repeats"]), model_fn, x, y, epsilon=eps)

    attack.__doc__ = f"Up to `repeats` draws of {noise} noise of norm eps; the first that fools the model."
    return attack


def _source(classes: str) -> str:
    return f"{fbx.SOURCE} {classes} (unchanged; clipping_aware at L2: the L2ClippingAware... variant)"


ROWS = (
    Attack("gaussian_noise", "noise", (L2,), _noise_attack("gaussian"), {"repeats": 100, "clipping_aware": True},
           randomized=True, uses_gradient=False,
           source=_source("L2RepeatedAdditiveGaussianNoiseAttack"),
           description="Additive Gaussian noise of L2 norm eps: the first of `repeats` draws that fools the model",
           check=lambda p: positive(p, "repeats")),
    Attack("uniform_noise", "noise", (L2, LINF), _noise_attack("uniform"), {"repeats": 100, "clipping_aware": True},
           randomized=True, uses_gradient=False,
           source=_source("L2RepeatedAdditiveUniformNoiseAttack / LinfRepeatedAdditiveUniformNoiseAttack"),
           description="Additive uniform noise of L2 or L-inf norm eps: the first of `repeats` draws that fools "
                       "the model (clipping_aware: L2 only)", check=lambda p: positive(p, "repeats")),
)
