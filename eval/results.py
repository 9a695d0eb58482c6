"""Result files of the evaluation: where a result goes, what is added to it (model, data, versions, command; paths
as `dim_tf.shown_paths.shown_path` shows them: never absolute), and the numbers at the paper's thresholds that
stored results already hold.

The schema of one attack's result is `SCHEMA` (written by `dim_tf.eval.attack_run.run_attack`; eval/README.md
lists its keys); the suites write `dim_tf.eval.suite/1` (paper) and `dim_tf.eval.adaptive/1` reports; the adaptive
suite keeps each attack's result in this schema with a `suite` entry, the paper suite keeps cells
(`dim_tf.eval.cells`).
"""

from __future__ import annotations

import glob
import json
import os
import time

from dim_tf.eval.threat import EvalError, ThreatModel
from dim_tf.shown_paths import shown_path, shown_source

SCHEMA = "dim_tf.eval.result/1"
PROGRAM = "python -m dim_tf.eval"


def _shown_argument(arg: str) -> str:
    """A command-line argument with every absolute path in it (`/a/b`, `--flag=/a/b`, `--models=/a,/b`) made
    relative to the current folder."""
    flag, eq, value = arg.partition("=") if arg.startswith("-") else ("", "", arg)
    if arg.startswith("-") and not eq:
        return arg
    return flag + eq + ",".join(shown_path(p) if os.path.isabs(p) else p for p in value.split(","))


def command(argv, program: str = PROGRAM) -> str:
    """The command line a result records: the program and the arguments after argv[0], absolute paths made relative
    to the folder it ran in."""
    return " ".join([program, *(_shown_argument(a) for a in (argv or [])[1:])])


def default_output(model_dir: str, variant_name: str, attack: str, norm: str) -> str:
    return os.path.join(model_dir, "eval", f"{variant_name}-{attack}-{norm}.json")


def check_output(path: str) -> None:
    """Refuses a result path that cannot be written, creating nothing (before any work)."""
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
    """`check_output`, then creates the folder and writes a probe file there (removed again)."""
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


def annotate(result: dict, *, model_dir: str, manifest: dict, variant: str, variant_name: str, bi_gradient: str,
             dataset, num_examples: int, strategy: str, argv) -> dict:
    """Adds the model, data, versions and command to a `run_attack` result (in place; also returned)."""
    from dim_tf import model_dir as md

    result.update({
        "model": {"dir": shown_path(model_dir), "name": manifest.get("model", "?"), "variant": variant,
                  "variant_name": variant_name, "bi_gradient": bi_gradient if variant == "bi" else None,
                  "manifest_test_accuracy": manifest.get("test_accuracy"), "seed": manifest.get("seed")},
        "data": {"dataset": manifest.get("dataset", "mnist"), "split": "test",
                 "source": shown_source(dataset.source),
                 "first": 0, "num_examples": num_examples},
        "strategy": strategy,
        "versions": md.library_versions(),
        "command": command(argv),
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


def write_report(path: str, report: dict, render) -> str:
    """Writes a suite's `report` as JSON at `path` and beside it (same name, .md) the markdown `render` makes of the
    JSON as written: its keys come back sorted, so rendering a committed JSON again gives its .md line for line.
    Returns the markdown's path."""
    from dim_tf import model_dir as md

    md.write_json(path, report)
    with open(path) as f:
        written = json.load(f)
    markdown = os.path.splitext(path)[0] + ".md"
    with md.atomic_path(markdown, ".md") as tmp, open(tmp, "w") as f:
        f.write(render(written))
    return markdown


def by_threat_model(norms: dict) -> list:
    """(norm, value) pairs of a report's per-norm dict in ThreatModel order (L-inf first), not the JSON's sorted one."""
    order = [t.value for t in ThreatModel]
    return sorted(norms.items(), key=lambda item: order.index(item[0]))


def read_report(path: str, schema: str) -> dict | None:
    """The JSON report at `path` when it is one of `schema`; None when it is missing, unreadable or another kind."""
    try:
        with open(path) as f:
            report = json.load(f)
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return report if isinstance(report, dict) and report.get("schema") == schema else None


def protocol_numbers(model_dir: str, variant: str, exclude: str) -> list[dict]:
    """Accuracies at the paper's thresholds for this model dir and variant found in existing JSONs: `--suite paper`
    summaries (suite.json) and single-attack results (`python -m dim_tf.eval --attack ...`; a suite's per-attack
    JSONs are skipped), under MODEL_DIR/eval/ and the model dir's sibling eval/ folder (e.g. runs/eval/),
    excluding `exclude` (the asking suite's output)."""
    from dim_tf.eval.paper_numbers import THRESHOLDS

    model_dir = os.path.abspath(model_dir)
    roots = [os.path.join(model_dir, "eval"), os.path.join(os.path.dirname(model_dir), "eval")]
    found, seen = [], set()
    for root in roots:
        for path in sorted(glob.glob(os.path.join(root, "**", "*.json"), recursive=True)):
            path = os.path.abspath(path)
            if path in seen or path.startswith(os.path.abspath(exclude) + os.sep):
                continue
            seen.add(path)
            try:
                with open(path) as f:
                    data = json.load(f)
            except (OSError, json.JSONDecodeError, UnicodeDecodeError):
                continue
            if not isinstance(data, dict):
                continue
            if data.get("schema") == SCHEMA and "suite" not in data:
                found += _from_single_attack(data, shown_path(path), model_dir, variant, THRESHOLDS)
            elif data.get("suite") == "paper" and isinstance(data.get("columns"), list):
                found += _from_paper_suite(data, shown_path(path), model_dir, variant, THRESHOLDS)
    return found


def _same_model_dir(recorded, model_dir: str) -> bool:
    """Whether a result's recorded model dir (absolute in older results, relative to the folder the command ran in
    since) is `model_dir` (absolute): the same path from here, or the same folder name (the results searched lie in
    the model dir's own eval/ or beside it, where a folder name names one model)."""
    if not isinstance(recorded, str):
        return False
    return os.path.abspath(recorded) == model_dir or os.path.basename(os.path.normpath(recorded)) == \
        os.path.basename(model_dir)


def _from_single_attack(data: dict, path: str, model_dir: str, variant: str, thresholds: dict) -> list[dict]:
    model = data.get("model") or {}
    if not _same_model_dir(model.get("dir"), model_dir) or model.get("variant") != variant:
        return []
    norm = data.get("threat_model")
    threshold = thresholds.get(norm) if norm in ("linf", "l2") else None
    acc = (data.get("robust_accuracy") or {}).get(f"{threshold:g}") if threshold else None
    if acc is None:
        return []
    return [{"source": "single attack", "file": path, "attack": data["attack"]["name"], "norm": norm,
             "eps": threshold, "accuracy": acc, "bi_gradient": model.get("bi_gradient"),
             "variant_name": model.get("variant_name"), "num_examples": data.get("num_examples"),
             "zero_gradient": data.get("zero_gradient")}]


def _from_paper_suite(data: dict, path: str, model_dir: str, variant: str, thresholds: dict) -> list[dict]:
    found = []
    for col in data["columns"]:
        if not _same_model_dir(col.get("model_dir"), model_dir) or col.get("variant") != variant:
            continue
        common = {"source": "paper suite", "file": path, "bi_gradient": "exact" if variant == "bi" else None,
                  "variant_name": col.get("variant_name"), "num_examples": data.get("num_examples")}
        for key, att in (col.get("attacks") or {}).items():
            norm, _, attack = key.partition(":")
            if norm in ("linf", "l2"):
                found.append({"source": "paper suite", "file": path, "attack": attack, "norm": norm,
                              "eps": thresholds[norm], "accuracy": att.get("accuracy"), **common,
                              "zero_gradient": att.get("zero_gradient")})
        for norm, agg in (col.get("all") or {}).items():
            if norm in ("linf", "l2"):
                found.append({"source": "paper suite", "file": path, "attack": "all (worst case)", "norm": norm,
                              "eps": thresholds[norm], "accuracy": agg.get("accuracy"),
                              "median_distance": agg.get("median_distance"), **common, "zero_gradient": None})
    return found
