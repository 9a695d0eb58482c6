"""A trained model's folder: `config.json` (written first), checkpoints/, logs/, `model.keras` and `manifest.json`
(written last). Every file is written atomically (temporary file, then rename)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import platform
import tempfile

import keras

MANIFEST = "manifest.json"
CONFIG = "config.json"
MODEL_FILE = "model.keras"


class ModelDirError(ValueError):
    """A model folder that is missing, unwritable, incomplete, corrupt or holds another run."""


@contextlib.contextmanager
def atomic_path(path: str, suffix: str = ""):
    """Yields a temporary path beside `path`; renames it onto `path` only if the block succeeds."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=folder)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the permissions of an ordinary one
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_json(path: str, obj) -> None:
    """Writes `obj` as indented JSON, atomically."""
    with atomic_path(path, ".json") as tmp, open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")


def library_versions() -> dict:
    """Versions of Python and the libraries that shape results."""
    import numpy
    import tensorflow

    versions = {"python": platform.python_version(), "tensorflow": tensorflow.__version__,
                "keras": keras.__version__, "numpy": numpy.__version__}
    for name in ("cleverhans", "foolbox", "tensorflow_datasets", "ai_edge_litert"):
        try:
            from importlib.metadata import version

            versions[name] = version(name.replace("_", "-"))
        except Exception:
            pass
    return versions


def prepare(model_dir: str, config) -> None:
    """Creates `model_dir` (checking it is writable) and records `config`; a re-run must match the stored one."""
    try:
        os.makedirs(model_dir, exist_ok=True)
        with tempfile.TemporaryFile(dir=model_dir):
            pass
    except OSError as e:
        raise ModelDirError(f"--model_dir {model_dir!r} is not writable ({e.strerror}); pick another folder") from e
    wanted = dataclasses.asdict(config)
    path = os.path.join(model_dir, CONFIG)
    if os.path.exists(path):
        with open(path) as f:  # a setting added after the run began counts as its default
            stored = {**dataclasses.asdict(type(config)()), **json.load(f)}
        differs = {k: (stored.get(k), v) for k, v in wanted.items() if k != "epochs" and stored.get(k) != v}
        if differs:
            raise ModelDirError(f"{model_dir} holds a run with other settings {differs} (stored, asked); "
                                "use a new --model_dir or the stored settings")
    write_json(path, wanted)


def save_model(model: keras.Model, model_dir: str) -> str:
    """Saves `model` as model_dir/model.keras, atomically; returns the path."""
    path = os.path.join(model_dir, MODEL_FILE)
    with atomic_path(path, ".keras") as tmp:
        model.save(tmp)
    return path


def load(model_dir: str) -> tuple[keras.Model, dict]:
    """Loads (model, manifest) from a finished training run, with safe_mode on."""
    import dim_tf.models  # noqa: F401  (registers the custom classes)

    manifest_path = os.path.join(model_dir, MANIFEST)
    model_path = os.path.join(model_dir, MODEL_FILE)
    if not os.path.isdir(model_dir):
        raise ModelDirError(f"model dir {model_dir!r} does not exist")
    if not os.path.exists(manifest_path):
        raise ModelDirError(f"{model_dir} has no {MANIFEST}: training did not finish there; "
                            f"run `python -m dim_tf.train --model_dir {model_dir}` to finish it")
    with open(manifest_path) as f:
        try:
            manifest = json.load(f)
        except json.JSONDecodeError as e:
            raise ModelDirError(f"{manifest_path} is corrupt ({e}); re-run training in that folder") from e
    try:
        model = keras.saving.load_model(model_path, safe_mode=True)
    except Exception as e:
        raise ModelDirError(f"{model_path} is missing or corrupt ({type(e).__name__}: {e}); "
                            "re-run training in that folder") from e
    return model, manifest
