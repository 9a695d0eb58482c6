"""`CELLS_DIR/models.json`: which model dir's cells are which weights. It maps a model dir's name (the tables' columns
come from it: runs/cnn6 -> CNN, biCNN) to the fingerprint of the weights its cells were computed on, the model,
its columns and the command that trains it again.

A model dir given again with other weights is refused before any work (`check`): its columns would silently start
over on another model. Training is deterministic here, so rerunning the recorded command with the code that trained
the model (`trained_at_commit`, from its manifest) restores the fingerprint; later code may not (70ae462 changed
training's float arithmetic: every model trained before it got a new fingerprint when trained again after it).
"""

from __future__ import annotations

import dataclasses
import json
import os

from dim_tf.eval.threat import EvalError

INDEX = "models.json"
SCHEMA = "dim_tf.eval.cells.models/1"


def read(cells_dir: str) -> dict[str, dict]:
    """name -> {fingerprint, model, columns, training_command, ...}; {} when there is no index yet."""
    path = os.path.join(cells_dir, INDEX)
    try:
        with open(path) as f:
            return json.load(f)["models"]
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise EvalError(f"{path} is unreadable ({e}); restore it from git or delete it (the cells stay)") from e


def check(cells_dir: str, name: str, model_dir: str, fingerprint: str) -> None:
    """`EvalError` (one line) when the index records `name` with other weights than `fingerprint`."""
    recorded = read(cells_dir).get(name)
    if recorded is None or recorded["fingerprint"] == fingerprint:
        return
    retrain = recorded.get("training_command") or "the command that trained it"
    commit = recorded.get("trained_at_commit")
    code = f"at commit {commit} (a checkout of it)" if commit else "with the code that trained it"
    raise EvalError(
        f"model {name!r} changed: {model_dir} has weights fingerprint {fingerprint}, but "
        f"{os.path.join(cells_dir, INDEX)} records {name!r} (columns {', '.join(recorded.get('columns', []))}) with "
        f"{recorded['fingerprint']}; retrain it {code} with `{retrain}` (training is deterministic) to reuse its "
        f"cells, or evaluate the new model under another folder name")


def record(cells_dir: str, name: str, entry: dict) -> None:
    """Adds or updates `name` (its fingerprint must pass `check` first)."""
    from dim_tf import model_dir as md

    models = read(cells_dir)
    if models.get(name) == entry:
        return
    models[name] = entry
    os.makedirs(cells_dir, exist_ok=True)
    md.write_json(os.path.join(cells_dir, INDEX), {"schema": SCHEMA, "models": models})


def training_command(manifest: dict, model_dir: str) -> str | None:
    """`python -m dim_tf.train --model M --model_dir DIR` plus every setting of the manifest's config that differs
    from what that --model gives by itself (None for a manifest without a config)."""
    from dim_tf import registry

    config = manifest.get("config")
    if not isinstance(config, dict) or config.get("model") not in registry.MODELS:
        return None
    name = config.get("preset") or config["model"]
    fields = {f.name for f in dataclasses.fields(registry.TrainConfig)} - {"model", "preset"}
    plain = dataclasses.asdict(registry.configure(name, {}, set()))
    # a setting added after the run was trained is missing from its config: the run had its default
    config = {**dataclasses.asdict(registry.TrainConfig()), **config}
    args = [f"--{k} {config[k]}" for k in sorted(fields) if config[k] is not None and config[k] != plain[k]]
    return " ".join(["python -m dim_tf.train", f"--model {name}", f"--model_dir {model_dir}", *args])
