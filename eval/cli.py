"""`python -m dim_tf.eval --model_dir DIR --attack pgd [--norm linf --eps 0.1,0.3 ...]`: one attack on one model
(variant), written as one JSON. `--attack list` prints the attack table.

Bad input (unknown attack, norm or variant, an eps outside its norm's range, a model dir without a manifest,
more examples than the test set holds, ...) is refused before any work starts: exit code 2, one line on stderr.
"""

from __future__ import annotations

import os
import sys
import time

from absl import flags

FLAGS = flags.FLAGS
VARIANTS = ("default", "bi")
BI_GRADIENTS = ("exact", "straight_through", "sigmoid")


def define_flags(flag_values=FLAGS) -> None:
    """Registers the command-line flags (only when run as a program)."""
    from dim_tf.data import DATA_DIR_ENV

    fv = flag_values
    flags.DEFINE_string("model_dir", None, "A finished training run (model.keras + manifest.json).", flag_values=fv)
    flags.DEFINE_string("attack", None, "Attack name from the table; `list` prints the table. With --suite: a "
                        "comma list restricting the suite to these attacks.", flag_values=fv)
    flags.DEFINE_string("suite", None, "Run a suite instead of one attack: paper (Tables 1 and 2) or adaptive "
                        "(attacks built for DIM/biDIM, with sanity checks).", flag_values=fv)
    flags.DEFINE_string("models", None, "--suite: comma list of model dirs (default: --model_dir).", flag_values=fv)
    flags.DEFINE_string("output_dir", None, "--suite: folder for the per-attack JSONs, the tables and the "
                        "pictures.", flag_values=fv)
    flags.DEFINE_string("undefended_dir", None, "--suite adaptive: an undefended CNN run (transfer source, the "
                        "no-defense check, the biCNN reference; default: a sibling cnn6/ or cnn/ of the model dir).",
                        flag_values=fv)
    flags.DEFINE_float("budget", 1.0, "--suite adaptive: scales every attack's steps, queries, rounds and restarts "
                       "(1 = the documented suite; < 1 for quick looks).", flag_values=fv)
    flags.DEFINE_string("variant", "default", "default: the model as trained; bi: its binarized variant "
                        "(biDIM, biCNN; none for madry).", flag_values=fv)
    flags.DEFINE_string("bi_gradient", "exact", "Backward pass of the binarization for --variant bi: exact (none: "
                        "gradient attacks see zero), straight_through or sigmoid (BPDA).", flag_values=fv)
    flags.DEFINE_string("norm", "linf", "Threat model: linf, l2, l1 or l0.", flag_values=fv)
    flags.DEFINE_string("eps", None, "Radius, or a comma list (default: linf 0.3, l2 2, l1 10, l0 12). Ranges: linf "
                        "(0, 1], l2 (0, 28], l1 (0, 784], l0 whole pixels 1..784.", flag_values=fv)
    flags.DEFINE_integer("num_examples", 1000, "Attack the first N test images.", flag_values=fv)
    flags.DEFINE_integer("batch_size", 250, "Examples per attack batch.", flag_values=fv)
    flags.DEFINE_integer("seed", 0, "Random seed (random starts, SPSA probes).", flag_values=fv)
    flags.DEFINE_integer("restarts", 1, "Runs of a randomised attack (each on the examples not broken yet).",
                         flag_values=fv)
    flags.DEFINE_string("params", None, "Attack parameters overriding the table's defaults: key=value,key=value "
                        "(e.g. steps=100,rel_stepsize=0.025); with --suite also attack.key=value for one attack.",
                        flag_values=fv)
    flags.DEFINE_string("output", None, "Result JSON (default: MODEL_DIR/eval/VARIANT-ATTACK-NORM.json).",
                        flag_values=fv)
    flags.DEFINE_string("data_dir", None, f"Folder with the four LeCun IDX files; else ${DATA_DIR_ENV}, else the "
                        "folder the model was trained from (manifest), else tensorflow-datasets.", flag_values=fv)
    flags.DEFINE_string("strategy", "default", "tf.distribute strategy the model is loaded and run under: default, "
                        "one_device, mirrored (each attack batch split over the local replicas), multi_worker.",
                        flag_values=fv)
    flags.DEFINE_integer("cpu_devices", 1, "Split the CPU into this many logical devices (for --strategy mirrored "
                         "on CPU).", flag_values=fv)
    flags.DEFINE_boolean("progress", True, "Progress bar on stderr.", flag_values=fv)
    flags.DEFINE_integer("abs_samples", None, "ABS models: prior samples per class of the inference (default: the "
                         "model's, 8000).", flag_values=fv)
    flags.DEFINE_integer("abs_steps", None, "ABS models: Adam steps on the latents (default: the model's, 50).",
                         flag_values=fv)


def parse_params(text: str | None) -> dict:
    """'steps=100,rel_stepsize=0.025' -> {'steps': '100', 'rel_stepsize': '0.025'} (typed by the attack row)."""
    from dim_tf.eval.threat import EvalError

    if not text:
        return {}
    out = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise EvalError(f"--params {text!r}: expected key=value items separated by commas")
        out[key.strip()] = value.strip()
    return out


def validate(opts) -> dict:
    """Checks every flag that needs neither the model nor the data; returns the parsed settings. `opts` has the
    flags' names as attributes. Raises `EvalError`."""
    from dim_tf.eval import attacks
    from dim_tf.eval.threat import EvalError, ThreatModel, parse_eps_list

    if not opts.attack:
        raise EvalError("--attack is required (`--attack list` prints the table)")
    if not opts.model_dir:
        raise EvalError("--model_dir is required")
    row = attacks.get(opts.attack)
    norm = ThreatModel.parse(opts.norm)
    if norm not in attacks.norms_covered():
        raise EvalError(f"no attack supports {norm.value} yet; covered: "
                        + ", ".join(sorted(n.value for n in attacks.norms_covered())))
    row.check_norm(norm)
    eps = parse_eps_list(opts.eps, norm)
    if opts.variant not in VARIANTS:
        raise EvalError(f"unknown variant {opts.variant!r}; choose one of {', '.join(VARIANTS)}")
    if opts.bi_gradient not in BI_GRADIENTS:
        raise EvalError(f"unknown --bi_gradient {opts.bi_gradient!r}; choose one of {', '.join(BI_GRADIENTS)}")
    check_run_flags(opts)
    params = row.resolve_params(parse_params(opts.params))
    if opts.output:
        check_output(opts.output)
    return {"row": row, "norm": norm, "eps": eps, "params": params}


def check_run_flags(opts) -> None:
    """Checks --num_examples, --batch_size, --restarts and --strategy (shared with the suites)."""
    from dim_tf import data
    from dim_tf.distribute import STRATEGIES
    from dim_tf.eval.threat import EvalError

    test_size = data._SPLIT_FILES["test"][2]
    if not 1 <= opts.num_examples <= test_size:
        raise EvalError(f"--num_examples {opts.num_examples}: the test set holds {test_size} images; pick "
                        f"1..{test_size}")
    if opts.batch_size < 1:
        raise EvalError(f"--batch_size must be >= 1, got {opts.batch_size}")
    if opts.restarts < 1:
        raise EvalError(f"--restarts must be >= 1, got {opts.restarts}")
    if opts.strategy not in STRATEGIES:
        raise EvalError(f"unknown strategy {opts.strategy!r}; choose one of {', '.join(STRATEGIES)}")


def default_output(model_dir: str, variant_name: str, attack: str, norm: str) -> str:
    return os.path.join(model_dir, "eval", f"{variant_name}-{attack}-{norm}.json")


def check_output(path: str) -> None:
    """Refuses a result path that cannot be written, creating nothing (before any work)."""
    from dim_tf.eval.threat import EvalError

    if os.path.isdir(path):
        raise EvalError(f"--output {path!r} is a folder; give the result's file name, e.g. "
                        f"{os.path.join(path, 'result.json')}")
    folder = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(folder):
        folder = os.path.dirname(folder)
    if not os.path.isdir(folder):
        raise EvalError(f"cannot write the result to {path!r} ({folder} is a file, not a folder); pick another "
                        "--output")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise EvalError(f"cannot write the result to {path!r} ({folder} is not writable); pick another --output")


def check_writable(path: str) -> None:
    from dim_tf.eval.threat import EvalError

    check_output(path)
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
        probe = os.path.join(folder, f".write-test-{os.getpid()}")
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as e:
        raise EvalError(f"cannot write the result to {path!r} ({e.strerror}); pick another --output") from e


def pick_data_dir(flag: str | None, manifest: dict) -> str | None:
    """--data_dir, else $DIM_TF_DATA_DIR, else the local folder the model was trained from (its manifest's
    data_source, if it still exists), else None (tensorflow-datasets)."""
    from dim_tf import data

    chosen = data.resolve_data_dir(flag)
    if chosen:
        return chosen
    source = manifest.get("data_source")
    if isinstance(source, str) and os.path.isdir(source):
        return source
    return None


def load_variant(model, manifest: dict, variant: str, bi_gradient: str):
    """(the model to attack, its variant name: `dim`, `bidim`, `bicnn-straight_through`, ...) for `variant`
    default|bi of a loaded `model`; `EvalError` if it has no binarized variant. Call inside the strategy scope."""
    from dim_tf import registry
    from dim_tf.eval.threat import EvalError

    name = manifest.get("model", "?")
    if variant != "bi":
        return model, name
    attacked = registry.bi_variant(model, gradient=bi_gradient)
    if attacked is None:
        raise EvalError(f"model {name!r} has no binarized variant (only "
                        f"{', '.join(registry.BI_VARIANTS)} do); use --variant default")
    variant_name = registry.BI_VARIANTS.get(name, "bi_" + name)
    return attacked, variant_name + ("" if bi_gradient == "exact" else "-" + bi_gradient)


def annotate(result: dict, *, model_dir: str, manifest: dict, variant: str, variant_name: str, bi_gradient: str,
             dataset, num_examples: int, strategy: str, argv) -> dict:
    """Adds the model, data, versions and command to a `benchmark` result (in place; also returned)."""
    from dim_tf import model_dir as md

    result.update({
        "model": {"dir": os.path.abspath(model_dir), "name": manifest.get("model", "?"), "variant": variant,
                  "variant_name": variant_name, "bi_gradient": bi_gradient if variant == "bi" else None,
                  "manifest_test_accuracy": manifest.get("test_accuracy"), "seed": manifest.get("seed")},
        "data": {"dataset": manifest.get("dataset", "mnist"), "source": dataset.source, "split": "test",
                 "first": 0, "num_examples": num_examples},
        "strategy": strategy,
        "versions": md.library_versions(),
        "command": " ".join(["python -m dim_tf.eval", *(argv or [])[1:]]),
        "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    })
    return result


def summary(result: dict, output: str) -> str:
    """One line: variant / attack norm: clean and robust accuracy, seconds, passes, masking, file."""
    robust = ", ".join(f"eps {k}: {v:.4f}" for k, v in result["robust_accuracy"].items())
    return (f"{result['model']['variant_name']} / {result['attack']['name']} {result['threat_model']}: clean "
            f"accuracy {result['clean_accuracy']:.4f}; robust accuracy {robust}; {result['seconds']:.1f}s; "
            f"{result['forward_passes']} forward / {result['backward_passes']} backward passes"
            + ("; ZERO GRADIENT (gradient masking)" if result["zero_gradient"] else "") + f" -> {output}")


def run(opts, argv=None, log=print) -> dict:
    """Validates, loads the model (variant) and data, runs the attack, writes the JSON; returns the result."""
    settings = validate(opts)
    from dim_tf import data, distribute, model_dir as md, registry
    from dim_tf.eval.runner import benchmark

    strategy = distribute.strategy_from_flag(opts.strategy)
    with strategy.scope():
        model, manifest = md.load(opts.model_dir)
        model = registry.with_inference(model, opts.abs_samples, opts.abs_steps)
        attacked, variant_name = load_variant(model, manifest, opts.variant, opts.bi_gradient)
    output = opts.output or default_output(opts.model_dir, variant_name, settings["row"].name,
                                           settings["norm"].value)
    check_writable(output)
    dataset = data.load(manifest.get("dataset", "mnist"), pick_data_dir(opts.data_dir, manifest))
    test = dataset.test.take(opts.num_examples)
    result = benchmark(attacked, test.images, test.labels, settings["row"], settings["norm"], settings["eps"],
                       batch_size=opts.batch_size, seed=opts.seed, restarts=opts.restarts, params=settings["params"],
                       progress=opts.progress, strategy=strategy)
    annotate(result, model_dir=opts.model_dir, manifest=manifest, variant=opts.variant, variant_name=variant_name,
             bi_gradient=opts.bi_gradient, dataset=dataset, num_examples=len(test), strategy=opts.strategy,
             argv=argv)
    md.write_json(output, result)
    log(summary(result, output))
    return result


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
    try:
        if FLAGS.suite:
            from dim_tf.eval import suites

            suites.get(FLAGS.suite).run(FLAGS, sys.argv, print)
        else:
            run(FLAGS, argv=sys.argv)
    except ValueError as e:  # EvalError, ModelDirError, DataError, InputError: one clear line, no traceback
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
