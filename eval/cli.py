"""`python -m dim_tf.eval --model_dir DIR --attack pgd [--norm linf --eps 0.1,0.3 ...]`: one attack on one model
(variant), written as one JSON (`dim_tf.eval.single`); `--suite paper|adaptive` runs a suite
(`dim_tf.eval.suites`); `--attack list` prints the attack table.

This module only defines the flags, turns them into an `EvalSettings` (`dim_tf.eval.settings`, one field per flag)
and calls the library. Bad input (unknown attack, norm or variant, an eps outside its norm's range, a model dir
without a manifest, more examples than the test set holds, ...) is refused before any work starts: exit code 2,
one line on stderr.
"""

from __future__ import annotations

import dataclasses
import sys

from absl import flags

from dim_tf import console
from dim_tf.eval.settings import EvalSettings

FLAGS = flags.FLAGS
DEFAULTS = EvalSettings()


def define_flags(flag_values=FLAGS) -> None:
    """Registers the command-line flags (only when run as a program): one per `EvalSettings` field, with its name
    and default."""
    from dim_tf.data import DATA_DIR_ENV

    helps = {  # field -> (flag type, help)
        "model_dir": ("string", "A finished training run (model.keras + manifest.json)."),
        "attack": ("string", "Attack name from the table; `list` prints the table. With --suite: a comma list "
                   "restricting the suite to these attacks."),
        "suite": ("string", "Run a suite instead of one attack: paper (Tables 1 and 2), adaptive (attacks built "
                  "for DIM/biDIM, with sanity checks) or autoattack (AutoAttack through ART)."),
        "models": ("string", "--suite: comma list of model dirs (default: --model_dir)."),
        "output_dir": ("string", "--suite: folder for the per-attack JSONs, the tables and the pictures."),
        "undefended_dir": ("string", "--suite adaptive: an undefended CNN run (transfer source, the no-defense "
                           "check, the biCNN reference; default: a sibling cnn6/ or cnn/ of the model dir)."),
        "budget": ("float", "--suite adaptive: scales every attack's steps, queries, rounds and restarts (1 = the "
                   "documented suite; < 1 for quick looks)."),
        "cells_dir": ("string", "--suite paper: the cell store (per-sample results of each attack row, kept across "
                      "runs; the committed one is eval/results/cells). Default: OUTPUT_DIR/cells."),
        "max_minutes": ("float", "--suite paper: start no attack work estimated to end after this many minutes "
                        "(work of unknown cost starts while time is left); 0 lists the missing cells and renders the "
                        "tables from the stored ones. Default: no limit."),
        "variant": ("string", "default: the model as trained; bi: its binarized variant (biDIM, biCNN; none for "
                    "madry)."),
        "bi_gradient": ("string", "Backward pass of the binarization for --variant bi: exact (none: gradient "
                        "attacks see zero), straight_through or sigmoid (BPDA)."),
        "norm": ("string", "Threat model: linf (default), l2, l1 or l0 (--suite autoattack: linf, l2 or linf,l2; --suite "
                 "adaptive: the same, default linf,l2)."),
        "eps": ("string", "Radius, or a comma list (default: linf 0.3, l2 2, l1 10, l0 12). Ranges: linf (0, 1], "
                "l2 (0, 28], l1 (0, 784], l0 whole pixels 1..784."),
        "num_examples": ("integer", "Attack the first N test images."),
        "batch_size": ("integer", "Examples per attack batch."),
        "seed": ("integer", "Random seed (random starts, SPSA probes)."),
        "restarts": ("integer", "Runs of a randomised attack (each on the examples not broken yet)."),
        "params": ("string", "Attack parameters overriding the table's defaults: key=value,key=value (e.g. "
                   "steps=100,rel_stepsize=0.025); with --suite also attack.key=value for one attack."),
        "output": ("string", "Result JSON (default: MODEL_DIR/eval/VARIANT-ATTACK-NORM.json; --suite autoattack: "
                   "the report's, default MODEL_DIR/eval/autoattack/autoattack.json)."),
        "data_dir": ("string", f"Folder with the four LeCun IDX files; else ${DATA_DIR_ENV}, else the folder the "
                     "model was trained from (manifest), else tensorflow-datasets."),
        "strategy": ("string", "tf.distribute strategy the model is loaded and run under: default, one_device, "
                     "mirrored (each attack batch split over the local replicas), multi_worker."),
        "cpu_devices": ("integer", "Split the CPU into this many logical devices (for --strategy mirrored on CPU)."),
        "progress": ("boolean", "Progress bar on stderr."),
        "abs_samples": ("integer", "ABS models: prior samples per class of the inference (default: the model's, "
                        "8000)."),
        "abs_steps": ("integer", "ABS models: Adam steps on the latents (default: the model's, 50)."),
        "adaptive_report": ("string", "--suite autoattack: an adaptive.json of --suite adaptive to take the per-sample "
                            "worst case with, matched by this path (default: one found by the model's weights "
                            "fingerprint)."),
    }
    assert list(helps) == [f.name for f in dataclasses.fields(EvalSettings)], "a flag per EvalSettings field"
    for name, (kind, text) in helps.items():
        getattr(flags, f"DEFINE_{kind}")(name, getattr(DEFAULTS, name), text, flag_values=flag_values)


def settings_from(flag_values=FLAGS) -> EvalSettings:
    """The parsed flags as the library's settings object."""
    return EvalSettings(**{f.name: flag_values[f.name].value for f in dataclasses.fields(EvalSettings)})


def main(argv) -> int:
    if len(argv) > 1:
        print(f"error: unexpected arguments {argv[1:]}; every setting is a --flag", file=sys.stderr)
        return 2
    if FLAGS.cpu_devices != 1:
        from dim_tf import distribute

        try:
            if FLAGS.cpu_devices < 1:
                raise ValueError("must be >= 1")
            distribute.split_cpu(FLAGS.cpu_devices)  # before TensorFlow starts
        except (ValueError, RuntimeError) as e:
            print(f"error: --cpu_devices {FLAGS.cpu_devices}: {e}", file=sys.stderr)
            return 2
    if FLAGS.attack == "list":
        from dim_tf.eval import attacks

        print(attacks.table())
        return 0
    settings = settings_from(FLAGS)
    try:
        if settings.suite:
            from dim_tf.eval import suites

            suites.get(settings.suite).run(settings, sys.argv, print)
        else:
            from dim_tf.eval import single

            single.run(settings, argv=sys.argv)
    except ValueError as e:  # EvalError, ModelDirError, DataError, InputError: one clear line, no traceback
        return console.refuse(e)
    return 0
