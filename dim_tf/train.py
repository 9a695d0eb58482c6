"""Trains a model: `python -m dim_tf.train --model dim --model_dir runs/dim`.

Models: dim (denoiser, then the ten internal models on its output), im, single_im, dn_single_im (ablations),
cnn, madry (PGD adversarial training), abs (Schott et al.'s ten class-conditional VAEs). biDIM, biCNN and biABS
need no training of their own: they are inference variants (binarization at 0.5) of dim, cnn and abs, and their
accuracy is reported in the manifest.
A re-run on the same --model_dir resumes from the last epoch checkpoint; `--model_dir DIR` alone resumes with the
settings stored there.
"""

from __future__ import annotations

import dataclasses
import sys
import time

from absl import flags

from dim_tf import console
from dim_tf.distribute import STRATEGIES

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Registers the command-line flags (only when run as a program)."""
    from dim_tf import data, registry
    from dim_tf.training import adversarial

    d = registry.TrainConfig()
    flags.DEFINE_enum("model", d.model, [*registry.MODELS, *registry.PRESETS],
                      "Model to train, or a preset (dim_robust: DIM adversarially trained, see "
                      "docs/robust-training.md; dim_paper: the paper's DIM, its reconstruction loss only, 20 epochs, "
                      "about 25 minutes on 2 cores, see docs/training.md). biDIM/biCNN are inference variants of "
                      "dim/cnn (no separate training).")
    flags.DEFINE_string("model_dir", None, "Output folder: checkpoints, TensorBoard logs, model.keras, manifest.json.")
    flags.DEFINE_enum("dataset", d.dataset, list(data.DATASETS), "Dataset.")
    flags.DEFINE_string("data_dir", None, f"Folder with the four LeCun IDX files (.gz or plain); else "
                        f"${data.DATA_DIR_ENV}, else tensorflow-datasets.")
    flags.DEFINE_integer("epochs", d.epochs, "Epochs of the main stage (internal models, or the classifier).")
    flags.DEFINE_integer("denoiser_epochs", d.denoiser_epochs, "Epochs of the denoiser stage (models with one).")
    flags.DEFINE_integer("batch_size", d.batch_size, "Global batch size (split over replicas).")
    flags.DEFINE_float("learning_rate", d.learning_rate, "Adam peak learning rate (cosine decay to 0).")
    flags.DEFINE_integer("train_examples", None, "Train on the first N training examples only (smoke runs).")
    flags.DEFINE_integer("seed", d.seed, "Random seed (weights, shuffling, noise).")
    flags.DEFINE_float("denoiser_noise", d.denoiser_noise, "Std of the Gaussian noise the denoiser learns to remove.")
    flags.DEFINE_float("internal_noise", d.internal_noise, "Std of the Gaussian noise on the internal models' input.")
    flags.DEFINE_float("own_class_weight", d.own_class_weight, "Loss weight of an internal model's own class.")
    flags.DEFINE_float("score_weight", d.score_weight, "Weight of the cross-entropy on DIM's scores (0: paper's pure "
                       "reconstruction loss).")
    flags.DEFINE_float("score_temperature", d.score_temperature, "Scores are multiplied by this in that cross-entropy.")
    flags.DEFINE_integer("noise_warmup_steps", d.noise_warmup_steps,
                         "Steps over which the training noise ramps up from 0 (per stage; avoids an all-black collapse).")
    flags.DEFINE_float("binarized_fraction", d.binarized_fraction, "Fraction of each batch binarized at 0.5 (the DIM "
                       "family: before the denoiser and before the internal models; cnn: the input), training the "
                       "weights biDIM/biCNN share. Default: 0.25 for the DIM family, 0 for cnn.")
    flags.DEFINE_enum("adversarial", d.adversarial, list(adversarial.METHODS), "Adversarial training: the L-inf "
                      "attack each batch is replaced by (pgd, or fgsm_rs: FGSM from a random start). Default: pgd for "
                      "madry, none otherwise.")
    flags.DEFINE_float("adv_eps", d.adv_eps, "L-inf radius of the training attack, in (0, 1].")
    flags.DEFINE_integer("adv_steps", d.adv_steps, "PGD steps of the training attack (pgd only).")
    flags.DEFINE_float("adv_step_size", d.adv_step_size, "Step of the training attack (default: pgd 2.5 eps / steps, "
                       "fgsm_rs 1.25 eps).")
    flags.DEFINE_integer("adv_warmup_steps", d.adv_warmup_steps, "Steps over which the training eps ramps up from 0.")
    flags.DEFINE_enum("adv_target", d.adv_target, ["clean", "adversarial"], "DIM family: the internal models "
                      "reconstruct D(x) of the clean image (clean) or D(x_adv) (adversarial) from D(x_adv).")
    flags.DEFINE_float("adv_denoiser_weight", d.adv_denoiser_weight, "DIM family with a denoiser: 0 keeps D as its "
                       "own stage trained it; above 0 the adversarial stage trains D too, end to end, with this weight "
                       "on mean (D(x_adv) - x)^2.")
    flags.DEFINE_integer("adv_monitor_examples", d.adv_monitor_examples, "Validation images of the per-epoch PGD "
                         "probe that detects catastrophic overfitting (0: off).")
    flags.DEFINE_integer("adv_monitor_steps", d.adv_monitor_steps, "PGD steps of that probe.")
    flags.DEFINE_float("adv_collapse_drop", d.adv_collapse_drop, "Stop (keeping the previous epoch's weights) when the "
                       "probe's accuracy falls this far below its best.")
    flags.DEFINE_integer("abs_samples", d.abs_samples, "abs: prior samples per class in inference (default 8000).")
    flags.DEFINE_integer("abs_steps", d.abs_steps, "abs: Adam steps on the latents in the inference (default 50).")
    flags.DEFINE_float("abs_augment", d.abs_augment, "abs: probability of each random zoom, shear and skew of a "
                       "training image (the original ABS: 0.1; 0: none).")
    flags.DEFINE_integer("abs_calibration_examples", d.abs_calibration_examples, "abs: validation images the class "
                         "scales of the ELBOs are fitted on after training (the original's fine-scaling; 0: none, "
                         "the default: on held-out validation images they lowered the accuracy).")
    flags.DEFINE_enum("strategy", "default", list(STRATEGIES), "tf.distribute strategy (multi_worker reads TF_CONFIG).")
    flags.DEFINE_integer("cpu_devices", 1, "Split the CPU into this many logical devices (for --strategy mirrored).")
    flags.mark_flag_as_required("model_dir")


def config_from_flags():
    from dim_tf import registry

    fields = {f.name for f in dataclasses.fields(registry.TrainConfig)} - {"model", "preset"}
    return registry.configure(FLAGS.model, {name: FLAGS[name].value for name in fields},
                              {name for name in fields if FLAGS[name].present})


def train(cfg, model_dir: str, data_dir: str | None, strategy, log=print) -> dict:
    """Trains `cfg.model` into `model_dir` (resuming), writes model.keras and manifest.json; returns the manifest."""
    import keras
    import numpy as np

    from dim_tf import data, model_dir as md, predict, registry
    from dim_tf.fingerprint import weights_fingerprint
    from dim_tf.training.loop import run_stage

    md.prepare(model_dir, cfg)  # writes nothing: a start that fails on its settings or data leaves no trace
    keras.utils.set_random_seed(cfg.seed)
    dataset = data.load(cfg.dataset, data_dir)
    train_split = dataset.train.take(cfg.train_examples)
    md.record_config(model_dir, cfg)
    log(f"{cfg.model} on {cfg.dataset} ({dataset.source}): {len(train_split)} training examples, "
        f"{strategy.num_replicas_in_sync} replica(s)")
    with strategy.scope():
        model = registry.build(cfg)
    stage_results = {}
    for stage in registry.stages(cfg, model, dataset.validation):
        stage_results[stage.name] = run_stage(stage, strategy, train_split, cfg.batch_size, cfg.seed, model_dir, log)
    calibration = registry.calibrate_abs(cfg, model, dataset.validation, log)
    md.save_model(model, model_dir)
    variants = {cfg.model: model}
    bi = registry.bi_variant(model)
    if bi is not None:
        variants[registry.BI_VARIANTS[cfg.model]] = bi
    test_scores = {name: predict.scores(m, dataset.test.images) for name, m in variants.items()}

    def accuracies(divisor=1.0):  # divisor: per-class factors to take out of the logits first
        return {name: float(np.mean((s / divisor).argmax(axis=1) == dataset.test.labels))
                for name, s in test_scores.items()}

    accuracy = accuracies()
    extra = {}
    if calibration:  # the same test pass with the class scales undone
        extra = {"calibration": calibration,
                 "test_accuracy_uncalibrated": accuracies(np.asarray(calibration["class_scales"]))}
    manifest = {**extra, "model": cfg.model, "dataset": cfg.dataset, "data_source": dataset.source, "seed": cfg.seed,
                "config": dataclasses.asdict(cfg), "model_config": model.get_config(),
                "parameters": int(model.count_params()), "weights_fingerprint": weights_fingerprint(model),
                "stages": stage_results,
                "training_seconds": sum(s["seconds"] for s in stage_results.values()),
                "test_accuracy": accuracy, "replicas": strategy.num_replicas_in_sync,
                "versions": md.library_versions(), "written": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    md.write_json(f"{model_dir}/{md.MANIFEST}", manifest)
    log("test accuracy: " + ", ".join(f"{k} {v:.4f}" for k, v in accuracy.items()))
    return manifest


def settings(model_dir: str, cfg, given):
    """The run's settings: `cfg` (from the flags), except that every setting not `given` on the command line comes
    from `model_dir/config.json` when the folder holds a run, so `--model_dir DIR` alone resumes it as started."""
    from dim_tf import model_dir as md

    stored = md.stored_config(model_dir) or {}
    return dataclasses.replace(cfg, **{f.name: stored[f.name] for f in dataclasses.fields(cfg)
                                       if f.name in stored and f.name not in given})


def interrupted(model_dir: str) -> str:
    """The one line a Ctrl-C prints: what is saved and how to go on."""
    from dim_tf import model_dir as md

    done = md.finished_epochs(model_dir)
    if not done:
        return "interrupted before the first epoch finished (nothing saved); re-run the same command to start again"
    stage, epoch = list(done.items())[-1]
    return (f"interrupted after epoch {epoch} of the {stage} stage (saved in {model_dir}/checkpoints); re-run the "
            "same command to resume")


def main(argv) -> int:
    del argv
    from dim_tf import distribute

    distribute.split_cpu(FLAGS.cpu_devices)
    try:
        cfg = config_from_flags()
        cfg = settings(FLAGS.model_dir, cfg, {f.name for f in dataclasses.fields(cfg) if f.name in FLAGS and FLAGS[f.name].present})
        train(cfg, FLAGS.model_dir, FLAGS.data_dir, distribute.strategy_from_flag(FLAGS.strategy))
    except ValueError as e:  # DataError, ModelDirError, bad flags: one clear line, no traceback
        return console.refuse(e)
    except KeyboardInterrupt:
        print(interrupted(FLAGS.model_dir), file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    define_flags()
    console.run(main)
