"""Robustness of an exported bundle, measured on the .tflite files themselves (LiteRT, through `dim_tf.lite`).

    python -m dim_tf.export.robustness --bundle bundles/bidim --model_dir runs/dim [--num_examples 500]
        [--replay pgd:linf:0.3,pgd:l2:1.5] [--decision_attack hop_skip_jump --decision_norm l2 --decision_eps 1.5,2]

1. Replay (transfer from Keras). Each `--replay` attack (name:norm:eps, a bounded attack of the eval table,
   `python -m dim_tf.eval --attack list`) runs through `dim_tf.eval.attack_run.run_attack` on the first
   `--num_examples` test images of the Keras model the bundle was exported from; for a binarized bundle (biDIM) on
   its BPDA variant (`--bi_gradient straight_through`: the exact binarization has no gradient). The same
   adversarials are then classified by the Keras model (the bundle's variant, exact forward pass), by the Keras
   model on the images rounded to uint8 pixels (what the int8 file receives), and by each .tflite file of the
   bundle: accuracy of each, per-sample label agreement with Keras, and how many Keras-fooling examples also fool
   the file.
2. Decision-based attack on the interpreter. `--decision_attack` (a gradient-free attack of the table, by default
   foolbox's HopSkipJump) runs on the first `--decision_examples` test images against model.tflite itself - the
   LiteRT interpreter wrapped as a TensorFlow function (`LiteModel`: no gradient; the int8 graph sees the images
   rounded to uint8) - and, with the same settings and seed, against the Keras model: robust accuracy at each
   `--decision_eps` and the median distance of the adversarials found.

One JSON (default BUNDLE/robustness.json, written atomically; `--adversarials FILE.npz` also saves the replayed
images). Bad flags, a bundle that does not come from `--model_dir` (model.keras sha256) or an attack that does not
fit: exit code 2 with one line, before any attack runs.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

from dim_tf import console, lite
from dim_tf.shown_paths import shown_path, shown_source
from dim_tf.eval.paper_numbers import THRESHOLDS

SCHEMA = "dim_tf.export.robustness/1"
DEFAULT_REPLAY = f"pgd:linf:{THRESHOLDS['linf']:g},pgd:l2:{THRESHOLDS['l2']:g}"  # PGD at the paper's thresholds
DEFAULT_DECISION = "hop_skip_jump"
# HopSkipJump at a budget that runs in minutes here, ~1,100 queries per example (the table's defaults: 10 steps of up
# to 10,000 queries per boundary-normal estimate; foolbox's: 64 steps).
DEFAULT_DECISION_PARAMS = "steps=8,initial_gradient_eval_steps=50,max_gradient_eval_steps=200"
REPORT_FILE = "robustness.json"


def parse_replay(text: str) -> list[tuple]:
    """'pgd:linf:0.3,pgd:l2:1.5' -> [(row, ThreatModel, eps), ...], or `EvalError` naming the bad item."""
    from dim_tf.eval import attacks
    from dim_tf.eval.threat import EvalError, ThreatModel

    specs = []
    for item in (text or "").split(","):
        parts = item.strip().split(":")
        if len(parts) != 3 or not all(parts):
            raise EvalError(f"--replay item {item!r}: expected attack:norm:eps, e.g. pgd:linf:0.3")
        row, norm = attacks.get(parts[0]), ThreatModel.parse(parts[1])
        row.check_norm(norm)
        if row.kind != "bounded":
            raise EvalError(f"--replay {item!r}: {row.name} is a minimal-distance attack; replay needs an attack "
                            "bounded by eps (e.g. pgd, bim, mim, fgsm)")
        specs.append((row, norm, norm.check_eps(parts[2])))
    return specs


class LiteModel:
    """A bundle's .tflite model as a TensorFlow callable for the eval attacks: images [N, 28, 28, 1] float32 in
    [0, 1] -> scores [N, K] float32 computed by the LiteRT interpreter (`dim_tf.lite.Bundle.predict`; the int8
    file gets the images rounded to uint8). It has no gradient: only gradient-free attacks can use it.

    A TensorFlow function rather than foolbox's `NumPyModel` (which would fit foolbox alone: it hands the attack's
    tensors to a NumPy function and converts back), so that the attack runs through the eval table and
    `dim_tf.eval.attack_run.run_attack` exactly as on the Keras model (same adapter, pass counting, scoring)."""

    def __init__(self, bundle: lite.Bundle):
        self.bundle = bundle
        self.num_classes = len(bundle.names)

    def _scores(self, x: np.ndarray) -> np.ndarray:
        # Attacks may step a float32 rounding outside the box; the model's input range is [0, 1].
        return self.bundle.predict(np.clip(x, 0.0, 1.0)).scores.astype(np.float32)

    def __call__(self, x):
        import tensorflow as tf

        x = tf.convert_to_tensor(x, tf.float32)
        scores = tf.numpy_function(self._scores, [x], tf.float32, stateful=True)
        scores.set_shape([x.shape[0], self.num_classes])
        return scores


def replay_labels(images: np.ndarray, keras_labels, bundles: dict[str, lite.Bundle]) -> dict[str, np.ndarray]:
    """Labels [N] of images [N, 28, 28, 1] float32 in [0, 1] from `keras` (`keras_labels`, images -> labels),
    `keras_uint8` (the same on the images rounded to uint8 pixels, what the int8 file receives) and each bundle
    file by its key (through `dim_tf.lite`, which rounds to uint8 for the int8 file)."""
    labels = {"keras": keras_labels(images), "keras_uint8": keras_labels(np.round(images * 255.0) / 255.0)}
    labels.update({which: b.predict(images).labels for which, b in bundles.items()})
    return labels


def _agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(a == b))


def _attack_summary(result: dict) -> dict:
    """The parts of a `run_attack` result worth keeping next to the replay (no per-sample lists)."""
    keep = ("attack", "threat_model", "clean_accuracy", "robust_accuracy", "forward_passes", "backward_passes",
            "gradient_probe", "zero_gradient", "warnings", "seconds")
    out = {k: result[k] for k in keep}
    out["median_distance"] = {f"{r['eps']:g}": r["median_distance"] for r in result["results"]}
    if result["minimal_distance"] is not None:
        out["minimal_distance"] = {k: result["minimal_distance"][k] for k in ("found", "median")}
    return out


def _load(bundle_path: str, model_dir: str, bi_gradient: str, threads: int | None):
    """(Keras reference model, Keras model to craft on, its name, {which: Bundle}, bundle meta, manifest)."""
    from dim_tf import model_dir as md, variants
    from dim_tf.eval.threat import EvalError

    meta = lite.read_meta(bundle_path)
    bundles = {which: lite.load_bundle(bundle_path, which, num_threads=threads)
               for which in lite.MODELS if meta["models"].get(which)}
    recorded = (meta.get("source") or {}).get("model_keras_sha256")
    keras_file = os.path.join(model_dir, md.MODEL_FILE)
    if os.path.isfile(keras_file) and recorded and lite.sha256(keras_file) != recorded:
        raise EvalError(f"{keras_file} is not the model {bundle_path} was exported from (its sha256 differs from "
                        f"bundle.json's source.model_keras_sha256); pass the --model_dir the bundle came from "
                        f"({meta['source'].get('model_dir')})")
    model, manifest = md.load(model_dir)
    variant = meta.get("variant", "default")
    reference, _ = variants.choose(model, manifest, variant, "exact", EvalError)
    crafting, crafting_name = variants.choose(model, manifest, variant, bi_gradient, EvalError)
    return reference, crafting, crafting_name, bundles, meta, manifest


def robustness(bundle: str, model_dir: str, *, num_examples: int = 500, replay: str = DEFAULT_REPLAY,
               bi_gradient: str = "straight_through", decision_attack: str = DEFAULT_DECISION,
               decision_norm: str = "l2", decision_eps: str = "1.5,2", decision_examples: int = 100,
               decision_params: str | None = DEFAULT_DECISION_PARAMS, batch_size: int = 250, seed: int = 0,
               threads: int | None = 1, data_dir: str | None = None, progress: bool = True,
               log=print) -> tuple[dict, dict[str, np.ndarray]]:
    """Runs both parts (see the module docstring); returns (the JSON-ready result, {replay name: adversarial
    images float32 [num_examples, 28, 28, 1]}). Raises `EvalError` (a ValueError) on bad settings before any
    attack runs; `BundleError` / `ModelDirError` for a bad bundle or model folder."""
    from dim_tf import data, model_dir as md, predict, variants
    from dim_tf.eval import attacks
    from dim_tf.eval.attack_run import run_attack
    from dim_tf.eval.settings import check_num_examples, parse_params
    from dim_tf.eval.threat import EvalError, ThreatModel, parse_eps_list

    # Every setting is checked before the model and data are loaded.
    specs = parse_replay(replay)
    variants.check("default", bi_gradient, EvalError)
    for flag, value in (("num_examples", num_examples), ("decision_examples", decision_examples)):
        check_num_examples(value, flag)
    if batch_size < 1:
        raise EvalError(f"--batch_size must be >= 1, got {batch_size}")
    row = attacks.get(decision_attack)
    norm = ThreatModel.parse(decision_norm)
    row.check_norm(norm)
    if row.uses_gradient:
        raise EvalError(f"--decision_attack {row.name} needs gradients, which the interpreter does not have; pick "
                        "a gradient-free attack (`python -m dim_tf.eval --attack list`)")
    eps_list = parse_eps_list(decision_eps, norm)
    params = row.resolve_params(parse_params(decision_params))

    start = time.time()
    reference, crafting, crafting_name, bundles, meta, manifest = _load(bundle, model_dir, bi_gradient, threads)
    dataset = data.load(manifest.get("dataset", "mnist"), data.data_dir_for(data_dir, manifest))
    test = dataset.test.take(num_examples)
    x, y = test.images, test.labels
    file_of = {which: b.filename for which, b in bundles.items()}
    log(f"{meta.get('model_name')} bundle {bundle} ({', '.join(file_of.values())}) vs Keras {model_dir}; "
        f"{len(x)} test images from {dataset.source or 'tensorflow-datasets'}")

    def keras_labels(images: np.ndarray) -> np.ndarray:
        return predict.labels(reference, images, batch_size, check=False)

    def compare(labels: dict[str, np.ndarray]) -> dict:
        wrong = {k: v != y for k, v in labels.items()}
        return {"accuracy": {k: float(np.mean(~w)) for k, w in wrong.items()},
                "agreement_with_keras": {k: _agreement(v, labels["keras"]) for k, v in labels.items() if k != "keras"},
                "agreement_with_keras_uint8": {w: _agreement(labels[w], labels["keras_uint8"]) for w in bundles},
                "wrong": {"keras": int(wrong["keras"].sum()),
                          **{f"keras_and_{w}": int((wrong["keras"] & wrong[w]).sum()) for w in bundles},
                          **{f"{w}_only": int((wrong[w] & ~wrong["keras"]).sum()) for w in bundles}},
                "predictions": {k: v.tolist() for k, v in labels.items()}}

    clean_labels = replay_labels(x, keras_labels, bundles)
    result = {
        "schema": SCHEMA,
        "bundle": {"path": shown_path(bundle), "model_name": meta.get("model_name"),
                   "variant": meta.get("variant"), "quantize": meta.get("quantize"), "files": file_of,
                   "sha256": {f: meta["files"][f]["sha256"] for f in file_of.values()}, "threads": threads},
        "model": {"dir": shown_path(model_dir), "name": manifest.get("model"),
                  "reference": meta.get("model_name"), "crafted_on": crafting_name},
        "data": {"dataset": manifest.get("dataset", "mnist"), "source": shown_source(dataset.source), "split": "test",
                 "first": 0, "num_examples": len(x)},
        "labels": y.tolist(),
        "names": {"keras": "the Keras model (bundle variant, exact forward pass) on the float images",
                  "keras_uint8": "the Keras model on the images rounded to uint8 pixels (the int8 file's input)",
                  **{which: f"{file_of[which]} through dim_tf.lite (LiteRT)" for which in bundles}},
        "clean": compare(clean_labels),
        "replay": [],
    }
    # 1. Replay: adversarials crafted on Keras, classified by every model.
    adversarials = {}
    for attack_row, attack_norm, eps in specs:
        name = f"{attack_row.name}-{attack_norm.value}-{eps:g}"
        res = run_attack(crafting, x, y, attack_row, attack_norm, [eps], batch_size=batch_size, seed=seed,
                         progress=progress, keep_adversarials=True)
        adv = res["results"][0].pop("adversarials")
        labels = replay_labels(adv, keras_labels, bundles)
        entry = {"name": name, "attack": attack_row.name, "norm": attack_norm.value, "eps": eps,
                 "crafted_on": crafting_name, "crafting": _attack_summary(res), **compare(labels)}
        if abs(entry["accuracy"]["keras"] - res["results"][0]["robust_accuracy"]) > 1e-9:  # same forward pass
            entry["crafting"]["warnings"].append(
                f"the Keras reference classifies the adversarials with accuracy {entry['accuracy']['keras']:.4f}, "
                f"the attacked model with {res['results'][0]['robust_accuracy']:.4f}")
        result["replay"].append(entry)
        adversarials[name] = adv
        acc, agree = entry["accuracy"], entry["agreement_with_keras"]
        log(f"replay {name} (crafted on {crafting_name}, {res['seconds']:.0f}s): accuracy keras {acc['keras']:.4f} "
            f"(uint8 images {acc['keras_uint8']:.4f}), "
            + ", ".join(f"{file_of[w]} {acc[w]:.4f} (agreement {agree[w]:.4f})" for w in bundles)
            + ("; ZERO GRADIENT (gradient masking)" if res["zero_gradient"] else ""))

    # 2. The decision-based attack on the interpreter, and on Keras with the same settings and seed.
    dtest = dataset.test.take(decision_examples)
    decision = {"attack": row.name, "norm": norm.value, "eps": eps_list, "params": params, "seed": seed,
                "num_examples": len(dtest), "labels": dtest.labels.tolist(), "models": {}}
    for which, target in (("quantized", LiteModel(bundles["quantized"])), ("keras", reference)):
        res = run_attack(target, dtest.images, dtest.labels, row, norm, eps_list, batch_size=batch_size,
                         seed=seed, params=params, progress=progress)
        summary = _attack_summary(res)
        del summary["attack"]  # its settings are `decision`'s, the same for both models
        summary["model"] = file_of["quantized"] if which == "quantized" else meta.get("model_name")
        summary["distance"] = (res["minimal_distance"] or {}).get("distance")
        summary["clean_correct"] = res["clean_correct"]
        decision["models"][which] = summary
        median = (summary.get("minimal_distance") or {}).get("median")
        log(f"{row.name} {norm.value} on {summary['model']}: clean {res['clean_accuracy']:.4f}, robust "
            + ", ".join(f"eps {k}: {v:.4f}" for k, v in res["robust_accuracy"].items())
            + f"; median distance {'-' if median is None else f'{median:.3f}'}; {res['forward_passes']} queries, "
              f"{res['seconds']:.0f}s")
    result["decision"] = decision
    result["seconds"] = time.time() - start
    result["versions"] = md.library_versions()
    return result, adversarials


def define_flags() -> None:
    from absl import flags

    from dim_tf.data import DATA_DIR_ENV

    flags.DEFINE_string("bundle", None, "Bundle folder written by python -m dim_tf.export.")
    flags.DEFINE_string("model_dir", None, "The trained model folder the bundle was exported from.")
    flags.DEFINE_integer("num_examples", 500, "Replay on the first N test images.")
    flags.DEFINE_string("replay", DEFAULT_REPLAY, "Attacks crafted on Keras and replayed on the .tflite files: "
                        "comma list of attack:norm:eps (bounded attacks of the eval table).")
    flags.DEFINE_string("bi_gradient", "straight_through", "Backward pass of the binarization when crafting on a "
                        "binarized bundle's Keras model: straight_through or sigmoid (BPDA), exact (no gradient: "
                        "gradient masking).")
    flags.DEFINE_string("decision_attack", DEFAULT_DECISION, "Gradient-free attack run on the int8 interpreter "
                        "and on Keras (hop_skip_jump, boundary, spsa, ...).")
    flags.DEFINE_string("decision_norm", "l2", "Its threat model.")
    flags.DEFINE_string("decision_eps", "1.5,2", "Eps list at which its robust accuracy is reported.")
    flags.DEFINE_integer("decision_examples", 100, "Run it on the first N test images.")
    flags.DEFINE_string("decision_params", DEFAULT_DECISION_PARAMS, "Its parameters (key=value,...; the same for "
                        "both models; empty: the table's defaults).")
    flags.DEFINE_integer("batch_size", 250, "Examples per attack batch.")
    flags.DEFINE_integer("seed", 0, "Random seed (random starts, the decision attack's draws).")
    flags.DEFINE_integer("threads", 1, "LiteRT interpreter threads.")
    flags.DEFINE_string("data_dir", None, f"Folder with the LeCun IDX files; else ${DATA_DIR_ENV}, else the model's "
                        "training data folder, else tensorflow-datasets.")
    flags.DEFINE_string("output", None, f"Result JSON (default BUNDLE/{REPORT_FILE}).")
    flags.DEFINE_string("adversarials", None, "Also save the replayed adversarials here (.npz: one float32 array "
                        "[N, 28, 28, 1] per replay attack, named as in the JSON, and `labels`), e.g. to replay them "
                        "on a device.")
    flags.DEFINE_boolean("progress", True, "Progress bars on stderr.")
    flags.mark_flags_as_required(["bundle", "model_dir"])


def main(argv) -> int:
    from absl import flags

    from dim_tf.eval import results

    f = flags.FLAGS
    if len(argv) > 1:
        print(f"error: unexpected arguments {argv[1:]}; every setting is a --flag", file=sys.stderr)
        return 2
    output = f.output or os.path.join(f.bundle, REPORT_FILE)
    try:
        lite.read_meta(f.bundle)  # before TensorFlow loads: a wrong bundle fails at once
        for path in (output, f.adversarials):
            if path:
                results.check_writable(path)
        result, adversarials = robustness(f.bundle, f.model_dir, num_examples=f.num_examples, replay=f.replay,
                               bi_gradient=f.bi_gradient, decision_attack=f.decision_attack,
                               decision_norm=f.decision_norm, decision_eps=f.decision_eps,
                               decision_examples=f.decision_examples, decision_params=f.decision_params,
                               batch_size=f.batch_size, seed=f.seed, threads=f.threads, data_dir=f.data_dir,
                               progress=f.progress)
    except (ValueError, ImportError) as e:  # EvalError, BundleError, ModelDirError, DataError, a missing runtime
        return console.refuse(e)
    from dim_tf import model_dir as md

    result["command"] = results.command(sys.argv, "python -m dim_tf.export.robustness")
    result["written"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    md.write_json(output, result)
    print(f"wrote {output} ({result['seconds']:.0f}s)")
    if f.adversarials:
        with md.atomic_path(f.adversarials, ".npz") as tmp:
            np.savez(tmp, labels=np.asarray(result["labels"]), **adversarials)
        print(f"wrote {f.adversarials}")
    return 0


if __name__ == "__main__":
    from absl import logging


    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.set_verbosity(logging.WARNING)
    define_flags()
    console.run(main)
