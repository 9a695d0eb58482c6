"""The trainable models by name: how to build each, its training stages, and its binarized variant."""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import tensorflow as tf

from dim_tf import data, predict
from dim_tf.models import ABS, CNN, DIM, BinarizedInput, Denoiser, InternalModels, MadryCNN
from dim_tf.training import adversarial, augment, calibrate, objectives
from dim_tf.training.loop import Stage

# name -> (has a denoiser, shares one encoder across the internal models); None for the CNN baselines.
DIM_FAMILY = {"dim": (True, False), "im": (False, False), "single_im": (False, True), "dn_single_im": (True, True)}
MODELS = (*DIM_FAMILY, "cnn", "madry", "abs")
# One-command recipes: `python -m dim_tf.train --model NAME` trains PRESETS[NAME][0] with these settings (flags
# given on the command line win); the manifest records the preset's name. Why each value: docs/robust-training.md.
PRESETS = {
    # D trained too (--adv_denoiser_weight 1): on the first 500 test images the adaptive worst case at L-inf 0.3 rose
    # from 27.1% to 77.0% (DIM) and from 66.0% to 88.8% (biDIM) against D frozen after its noise stage, for 18
    # instead of 14 minutes of training (docs/robust-training.md, "The denoiser trained adversarially").
    "dim_robust": ("dim", {"adversarial": "pgd", "adv_steps": 5, "adv_warmup_steps": 500, "epochs": 4,
                           "adv_denoiser_weight": 1.0}),
    # The paper's DIM: its balanced reconstruction loss alone (no score term, no binarized batches, no adversarial
    # training). 20 epochs of the internal models: the default run's 12 took 834 s of its 890 s in the training
    # loops (about 70 s each) on an idle 2-core machine, so 4 denoiser epochs (~56 s) + 20 x ~70 s + ~50 s of
    # loading and scoring is ~25 minutes, inside 30 with room for a busier machine (docs/training.md).
    "dim_paper": ("dim", {"score_weight": 0.0, "binarized_fraction": 0.0, "adversarial": "none", "epochs": 20}),
}
BI_VARIANTS = {"dim": "bidim", "im": "bi_im", "single_im": "bi_single_im", "dn_single_im": "bi_dn_single_im",
               "cnn": "bicnn", "abs": "biabs"}


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Every choice that shapes a trained model; recorded in the manifest."""

    model: str = "dim"
    dataset: str = "mnist"
    seed: int = 0
    batch_size: int = 128
    epochs: int = 12
    denoiser_epochs: int = 4
    learning_rate: float = 1e-3
    train_examples: int | None = None
    denoiser_noise: float = 0.4
    internal_noise: float = 0.1
    own_class_weight: float = 9.0
    score_weight: float = 0.2
    score_temperature: float = 30.0
    binarized_fraction: float | None = None  # None: 0.25 for the DIM family, 0 for the CNNs (see `bi_fraction`)
    noise_warmup_steps: int = 1000
    adversarial: str | None = None  # none, pgd, fgsm_rs; None: pgd for madry, none for the rest (see `attack`)
    adv_eps: float = 0.3
    adv_steps: int = 40
    adv_step_size: float | None = None  # None: adversarial.default_step_size
    adv_warmup_steps: int = 150
    adv_target: str = "clean"  # DIM family: what the internal models reconstruct from D(x_adv)
    adv_denoiser_weight: float = 0.0  # DIM family with D: > 0 trains D too, end to end (objectives, "denoiser_weight")
    adv_monitor_examples: int = 500  # validation images of the per-epoch PGD probe (collapse detector)
    adv_monitor_steps: int = 10
    adv_collapse_drop: float = 0.2
    abs_samples: int | None = None  # None: ABS's default (8000); None keeps older run folders resumable
    abs_steps: int | None = None  # None: ABS's default (50)
    abs_augment: float = 0.0  # probability of each random distortion of the VAEs' training images (original: 0.1)
    abs_calibration_examples: int = 0  # validation images the ABS class scales are fitted on (0: all scales 1)
    preset: str | None = None  # the PRESETS entry these settings came from, if any

    def __post_init__(self):
        if self.model not in MODELS:
            raise ValueError(f"unknown model {self.model!r}; choose one of {', '.join(MODELS)} "
                             "(biDIM and biCNN are inference variants of dim and cnn: no separate training)")
        augment.check_probability(self.abs_augment)
        if self.preset is not None and self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; choose one of {', '.join(PRESETS)}")
        for name in ("epochs", "denoiser_epochs", "batch_size", "train_examples", "adv_steps", "adv_monitor_steps"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"--{name} must be >= 1, got {value}")
        if self.adversarial is not None and self.adversarial not in adversarial.METHODS:
            raise ValueError(f"unknown --adversarial {self.adversarial!r}; choose one of {', '.join(adversarial.METHODS)}")
        if self.model == "abs" and self.attack_method != "none":
            raise ValueError("--adversarial is not supported for abs (its inference is 50 Adam steps per class: "
                             "an attack per training batch would cost hours); train it with --adversarial none")
        if self.model == "madry" and self.attack_method == "none":
            raise ValueError("madry is Madry et al.'s network trained adversarially; for plain training use --model cnn")
        if not 0 < self.adv_eps <= 1:
            raise ValueError(f"--adv_eps must lie in (0, 1] (an L-inf radius on [0, 1] pixels), got {self.adv_eps}")
        if self.adv_step_size is not None and not 0 < self.adv_step_size <= 1:
            raise ValueError(f"--adv_step_size must lie in (0, 1], got {self.adv_step_size}")
        if self.adv_target not in ("clean", "adversarial"):
            raise ValueError(f"--adv_target must be clean or adversarial, got {self.adv_target!r}")
        if self.adv_denoiser_weight < 0:
            raise ValueError(f"--adv_denoiser_weight must be >= 0, got {self.adv_denoiser_weight}")
        has_denoiser = DIM_FAMILY.get(self.model, (False,))[0]
        if self.adv_denoiser_weight > 0 and (self.attack_method == "none" or not has_denoiser):
            raise ValueError("--adv_denoiser_weight trains the denoiser adversarially: it needs --adversarial pgd or "
                             f"fgsm_rs and a model with a denoiser (dim, dn_single_im), got --model {self.model} "
                             f"--adversarial {self.attack_method}")
        if self.adv_monitor_examples < 0 or not 0 < self.adv_collapse_drop <= 1:
            raise ValueError("--adv_monitor_examples must be >= 0 and --adv_collapse_drop in (0, 1]")
        if self.binarized_fraction is not None and not 0 <= self.binarized_fraction <= 1:
            raise ValueError(f"--binarized_fraction must lie in [0, 1], got {self.binarized_fraction}")
        if self.model in ("madry", "abs") and self.bi_fraction > 0:
            raise ValueError(f"--binarized_fraction applies to the DIM family and cnn, not to {self.model}")
        if self.abs_calibration_examples < 0:
            raise ValueError(f"--abs_calibration_examples must be >= 0, got {self.abs_calibration_examples}")

    @property
    def attack_method(self) -> str:
        """The training attack: --adversarial, else pgd for madry and none for every other model."""
        return self.adversarial or ("pgd" if self.model == "madry" else "none")

    @property
    def bi_fraction(self) -> float:
        """The share of each training batch binarized at 0.5: --binarized_fraction, else 0.25 for the DIM family
        (its weights serve biDIM too) and 0 for the others."""
        if self.binarized_fraction is not None:
            return self.binarized_fraction
        return 0.25 if self.model in DIM_FAMILY else 0.0

    def attack(self) -> adversarial.LinfAttack | None:
        """The training attack's settings, None without adversarial training."""
        method = self.attack_method
        if method == "none":
            return None
        step = self.adv_step_size or adversarial.default_step_size(method, self.adv_eps, self.adv_steps)
        return adversarial.LinfAttack(method, self.adv_eps, self.adv_steps, step)


def configure(model: str, settings: dict, given: set) -> TrainConfig:
    """The TrainConfig for `--model model` (a model or a preset) with `settings` (every other field); a preset's
    values replace those of `settings` not in `given` (the flags set on the command line)."""
    base, recipe = PRESETS.get(model, (model, {}))
    values = {**settings, **{k: v for k, v in recipe.items() if k not in given}}
    return TrainConfig(**{**values, "model": base, "preset": model if model in PRESETS else None})


def build(cfg: TrainConfig) -> keras.Model:
    """A freshly initialised model for `cfg.model`, built on a zero batch (call inside the strategy scope)."""
    if cfg.model in DIM_FAMILY:
        has_denoiser, shared = DIM_FAMILY[cfg.model]
        model = DIM(InternalModels(shared_encoder=shared), Denoiser() if has_denoiser else None)
    elif cfg.model == "cnn":
        model = CNN()
    elif cfg.model == "abs":
        model = ABS(**{name: value for name, value in (("num_samples", cfg.abs_samples), ("steps", cfg.abs_steps))
                       if value is not None})
        model.build((None, *data.IMAGE_SHAPE))  # builds the VAEs only: a call would run the whole inference
        return model
    else:
        model = MadryCNN()
    model(keras.ops.zeros((1, *data.IMAGE_SHAPE)))
    return model


def bi_variant(model: keras.Model, gradient: str = "exact", temperature: float = 0.1) -> keras.Model | None:
    """biDIM (both binarizations) for the DIM family, biCNN and biABS (the input binarized) for the CNN and ABS,
    None for models without one."""
    if isinstance(model, DIM):
        return model.variant(True, gradient, temperature)
    if isinstance(model, (CNN, ABS)):
        return BinarizedInput(model, gradient, temperature)
    return None


def with_inference(model: keras.Model, abs_samples: int | None = None, abs_steps: int | None = None) -> keras.Model:
    """ABS with other inference settings (prior samples N, Adam steps K; None keeps the model's), sharing its
    weights; any model as it is when both are None. ValueError for settings given to a model that is not ABS."""
    if abs_samples is None and abs_steps is None:
        return model
    if not isinstance(model, ABS):
        raise ValueError(f"abs_samples/abs_steps apply to ABS models only, not to {type(model).__name__}")
    return model.configured(abs_samples, abs_steps)


def calibrate_abs(cfg: TrainConfig, model: keras.Model, validation: data.Split, log=print) -> dict:
    """Fits a trained ABS's class scales (`dim_tf.training.calibrate`) on the first `cfg.abs_calibration_examples`
    validation images, each seen as it is and binarized (the scales serve ABS and biABS), and sets them on `model`.
    Returns what the manifest records; {} for other models or when calibration is off."""
    n = min(cfg.abs_calibration_examples, len(validation))
    if not isinstance(model, ABS) or n == 0:
        return {}
    x, y = validation.images[:n], validation.labels[:n]
    logit_factors = model.logit_scale * np.asarray(model.class_scales)  # logits = -logit_factors * ELBO
    elbos = np.concatenate([-predict.scores(m, x) / logit_factors for m in (model, bi_variant(model))])
    labels = np.concatenate([y, y])
    scales = calibrate.fit_class_scales(elbos, labels, model.logit_scale)
    before = calibrate.cross_entropy(elbos, labels, model.logit_scale, np.ones_like(scales))[0]
    after = calibrate.cross_entropy(elbos, labels, model.logit_scale, scales)[0]
    model.class_scales = tuple(float(v) for v in scales)
    accuracy = {name: float(np.mean(np.argmin(elbos * s, axis=1) == labels)) for name, s in
                (("before", 1.0), ("after", scales))}
    log(f"ABS class scales fitted on {n} validation images (as they are and binarized): "
        + " ".join(f"{v:.3f}" for v in scales) + f"; accuracy there {accuracy['before']:.4f} -> {accuracy['after']:.4f}")
    return {"class_scales": list(model.class_scales), "validation_examples": n,
            "cross_entropy": {"before": before, "after": after}, "validation_accuracy": accuracy}


def logit_scale(model: str, score_temperature: float) -> float:
    """What a model's outputs are multiplied by before a cross-entropy attack: the DIM family's training
    temperature (its scores P_i are ratios near [0, 1], not calibrated logits, and a cross-entropy on them is
    nearly flat), 1 for the CNNs, whose outputs are logits."""
    return score_temperature if model in DIM_FAMILY else 1.0


def robustness_probe(cfg: TrainConfig, model: keras.Model, validation: data.Split):
    """(validate, collapse check) for adversarial training: PGD-`adv_monitor_steps` accuracy at the training eps
    on the first `adv_monitor_examples` validation images, of the model and (when training binarizes part of
    each batch) of its bi- variant through BPDA; (None, None) without adversarial training."""
    if cfg.attack() is None or cfg.adv_monitor_examples == 0:
        return None, None
    x, y = validation.images[:cfg.adv_monitor_examples], validation.labels[:cfg.adv_monitor_examples]
    scale = logit_scale(cfg.model, cfg.score_temperature)
    probes = {"val_pgd_accuracy": model}
    if cfg.bi_fraction > 0:
        probes["val_bi_pgd_accuracy"] = bi_variant(model, gradient="straight_through")

    def validate():
        return {name: adversarial.pgd_accuracy(m, x, y, cfg.adv_eps, cfg.adv_monitor_steps, scale, seed=cfg.seed)
                for name, m in probes.items()}

    return validate, adversarial.CollapseCheck(tuple(probes), cfg.adv_collapse_drop)


def stages(cfg: TrainConfig, model: keras.Model, validation: data.Split) -> list[Stage]:
    """The training stages of `model`, in order (the DIM family: denoiser first, then the internal models)."""
    warmup = cfg.noise_warmup_steps
    bi = bi_variant(model)
    probe, collapse = robustness_probe(cfg, model, validation)

    def val_accuracy():
        metrics = {"val_accuracy": predict.accuracy(model, validation.images, validation.labels)}
        if bi is not None:
            metrics["val_bi_accuracy"] = predict.accuracy(bi, validation.images, validation.labels)
        return {**metrics, **(probe() if probe else {})}

    if cfg.model == "abs":
        def val_encoder_accuracy():  # ABS's own inference is far too slow to run every epoch
            x, y = validation.images[:500], validation.labels[:500]
            return {"val_encoder_accuracy": float(np.mean(model.encoder_logits(x).numpy().argmax(1) == y))}

        objective = objectives.ABSObjective(model, augment=cfg.abs_augment)
        return [Stage("vaes", model, objective, cfg.epochs, cfg.learning_rate, val_encoder_accuracy)]
    if cfg.model in ("cnn", "madry"):
        objective = objectives.ClassifierObjective(model, cfg.attack(), cfg.adv_warmup_steps, cfg.bi_fraction)
        return [Stage("classifier", model, objective, cfg.epochs, cfg.learning_rate, val_accuracy, collapse)]
    result = []
    if model.denoiser is not None:
        denoiser = model.denoiser

        def val_mse():
            x = validation.images[:1000]
            return {"val_mse": float(keras.ops.mean((denoiser(x) - x) ** 2))}

        objective = objectives.DenoiserObjective(denoiser, cfg.denoiser_noise, warmup, cfg.bi_fraction)
        result.append(Stage("denoiser", denoiser, objective, cfg.denoiser_epochs, cfg.learning_rate, val_mse))
    # Plain training reads D(x) of the frozen denoiser, computed once before the stage instead of in every update
    # (the denoiser's forward was about 9 of an update's 62 ms; docs/robust-training.md, "Training speed").
    # Adversarial training attacks through D, so it needs the images themselves.
    attack = cfg.attack()
    cached = model.denoiser is not None and attack is None
    objective = objectives.InternalObjective(model.internal, None if cached else model.denoiser, cfg.internal_noise,
                                             cfg.own_class_weight, warmup, cfg.score_weight, cfg.score_temperature,
                                             cfg.bi_fraction)
    if attack is not None:
        objective = objectives.AdversarialInternalObjective(model, objective, attack, cfg.adv_warmup_steps,
                                                            cfg.bi_fraction, cfg.adv_target, cfg.adv_denoiser_weight)
    denoise = tf.function(model.denoiser) if cached else None
    inputs = (lambda images: predict.batched(denoise, images, cfg.batch_size)) if cached else None
    trains = objective.trains if attack is not None else model.internal
    result.append(Stage("internal", trains, objective, cfg.epochs, cfg.learning_rate, val_accuracy, collapse, inputs))
    return result
