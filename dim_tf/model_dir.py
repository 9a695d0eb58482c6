"""A trained model's folder: `config.json` (written once the settings are valid and the data loaded),
checkpoints/, logs/, `model.keras` and `manifest.json` (written last). Every file is written atomically (temporary
file, then rename)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import platform
import re
import shutil
import tempfile

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


@contextlib.contextmanager
def atomic_folder(out: str, error: type = ModelDirError):
    """Yields a hidden, empty folder beside `out` (an absolute path) to fill. When the block succeeds the folder
    takes the place of `out` (a folder already there is swapped out, then removed: the caller decides beforehand
    whether it may be replaced); on an exception it and the parent folders made for it are removed, so nothing is
    left behind. `error` (a ValueError) is raised when nothing can be written beside `out`."""
    parent = os.path.dirname(out)
    created = []  # folders made above `out`, deepest first (removed again on failure)
    folder = parent
    while not os.path.exists(folder):
        created.append(folder)
        folder = os.path.dirname(folder)
    try:
        os.makedirs(parent, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.tmp-", dir=parent)
    except OSError as e:
        raise error(f"cannot write beside {out} ({e.strerror}); pick another --out") from e
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; the result gets an ordinary folder's permissions
        yield tmp
        if os.path.exists(out):
            old = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.old-", dir=parent)
            os.rename(out, os.path.join(old, "previous"))
            os.rename(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for folder in created:
            with contextlib.suppress(OSError):
                os.rmdir(folder)
        raise


def write_json(path: str, obj) -> None:
    """Writes `obj` as indented JSON, atomically."""
    with atomic_path(path, ".json") as tmp, open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")


def library_versions() -> dict:
    """Versions of Python and the libraries that shape results."""
    import keras
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
    commit = source_commit()
    if commit:
        versions["dim_tf_commit"] = commit
    versions["cpu"] = cpu_kind()
    return versions


def cpu_kind() -> str:
    """The processor's name and the widest vector instructions oneDNN may pick kernels for (avx512f, avx2, or
    neither). Why: the same command and commit trained bit-identical weights twice on one machine (a 1-epoch CNN,
    b3d40d34b7572a1b both times), but a fingerprint from another session (runs/cnn6, 36c924ffcd953ef4) did not
    come back even from its era's code, and nothing recorded the machine that made it."""
    fields = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = (part.strip() for part in line.partition(":"))
                fields.setdefault(key, value)
    except OSError:
        pass
    name = fields.get("model name") or platform.processor() or platform.machine()
    flags = fields.get("flags", "").split()
    isa = next((i for i in ("avx512f", "avx2") if i in flags), None)
    return f"{name} ({isa})" if isa else name


def source_commit() -> str | None:
    """The git commit of the dim_tf source that runs ("+changes" when its tracked files differ from it); None outside
    a git checkout. Why: a change of float arithmetic in training (70ae462: the internal models' layout and Adam's
    fused kernel) gives the same command other weights, so a weights fingerprint is reproduced only by the code that
    made it."""
    import functools
    import subprocess

    git = ["git", "-C", os.path.dirname(os.path.dirname(os.path.abspath(__file__)))]
    run = functools.partial(subprocess.run, capture_output=True, text=True, timeout=10, check=True)
    try:
        commit = run(git + ["rev-parse", "HEAD"]).stdout.strip()
        changed = run(git + ["status", "--porcelain", "--untracked-files=no", "--", "dim_tf", "eval", "export",
                             "setup.py"]).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+changes" if changed else "") if commit else None


def _check_writable(model_dir: str) -> None:
    """Raises `ModelDirError` unless `model_dir` is a writable folder or can be created as one (creates nothing)."""
    folder = os.path.abspath(model_dir)
    while not os.path.exists(folder):
        folder = os.path.dirname(folder)
    if not os.path.isdir(folder):
        raise ModelDirError(f"--model_dir {model_dir!r} is not writable ({folder} is a file, not a folder); "
                            "pick another folder")
    if folder != os.path.abspath(model_dir):
        if not os.access(folder, os.W_OK | os.X_OK):
            raise ModelDirError(f"--model_dir {model_dir!r} is not writable (cannot create it in {folder}); "
                                "pick another folder")
        return
    try:
        with tempfile.TemporaryFile(dir=model_dir):
            pass
    except OSError as e:
        raise ModelDirError(f"--model_dir {model_dir!r} is not writable ({e.strerror}); pick another folder") from e


def stored_config(model_dir: str) -> dict | None:
    """The settings recorded in `model_dir/config.json`, None when there are none."""
    path = os.path.join(model_dir, CONFIG)
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            stored = json.load(f)
    except (OSError, ValueError) as e:
        raise ModelDirError(f"{path} is unreadable or corrupt ({e}); delete it and re-run the command with the "
                            "run's settings") from e
    if not isinstance(stored, dict):
        raise ModelDirError(f"{path} holds no settings; delete it and re-run the command with the run's settings")
    return stored


def finished_epochs(model_dir: str) -> dict[str, int]:
    """Per training stage, in the order they were saved, the last epoch checkpointed in
    `model_dir/checkpoints/<stage>` (read without TensorFlow)."""
    root = os.path.join(model_dir, "checkpoints")
    found = []
    for stage in os.listdir(root) if os.path.isdir(root) else []:
        state = os.path.join(root, stage, "checkpoint")
        try:
            with open(state) as f:
                match = re.search(r'^model_checkpoint_path: "(?:.*/)?ckpt-(\d+)"', f.read(), re.M)
            saved = os.path.getmtime(state)
        except OSError:
            continue
        if match:
            found.append((saved, stage, int(match.group(1))))
    return {stage: epoch for _, stage, epoch in sorted(found)}


def has_progress(model_dir: str) -> bool:
    """Whether `model_dir` holds anything a re-run would reuse: an epoch checkpoint or a finished model."""
    return bool(finished_epochs(model_dir)) or any(
        os.path.exists(os.path.join(model_dir, name)) for name in (MODEL_FILE, MANIFEST))


def prepare(model_dir: str, config) -> None:
    """Checks that `model_dir` can take a run with `config`, before any work and without writing anything: the
    folder is writable (or can be created), and a run there that finished an epoch has the same settings (the
    stored settings of a run that never finished one lock nothing). `record_config` writes them."""
    _check_writable(model_dir)
    stored = stored_config(model_dir)
    if stored is None or not has_progress(model_dir):
        return
    stored = {**dataclasses.asdict(type(config)()), **stored}  # a setting added after the run began: its default
    wanted = dataclasses.asdict(config)
    differs = {k: (stored.get(k), v) for k, v in wanted.items() if k != "epochs" and stored.get(k) != v}
    if differs:
        raise ModelDirError(f"{model_dir} holds a run with other settings {differs} (stored, asked); re-run "
                            f"without those flags to resume it (`python -m dim_tf.train --model_dir {model_dir}`), "
                            "or use a new --model_dir")


def record_config(model_dir: str, config) -> None:
    """Creates `model_dir` and writes `config` as its config.json (call once the settings and data are known good)."""
    try:
        os.makedirs(model_dir, exist_ok=True)
    except OSError as e:
        raise ModelDirError(f"--model_dir {model_dir!r} is not writable ({e.strerror}); pick another folder") from e
    write_json(os.path.join(model_dir, CONFIG), dataclasses.asdict(config))


def save_model(model: keras.Model, model_dir: str) -> str:
    """Saves `model` as model_dir/model.keras, atomically; returns the path."""
    path = os.path.join(model_dir, MODEL_FILE)
    with atomic_path(path, ".keras") as tmp:
        model.save(tmp)
    return path


def model_kind(model: keras.Model) -> str:
    """The `dim_tf.train --model` name of a loaded model's architecture (its class name for other models)."""
    from dim_tf import models, registry

    if isinstance(model, models.DIM):
        layout = (model.denoiser is not None, bool(model.internal.shared_encoder))
        return next((name for name, v in registry.DIM_FAMILY.items() if v == layout), "DIM")
    return {models.CNN: "cnn", models.MadryCNN: "madry", models.ABS: "abs"}.get(type(model), type(model).__name__)


def load(model_dir: str) -> tuple[keras.Model, dict]:
    """Loads (model, manifest) from a finished training run, with safe_mode on. Refuses a manifest whose training
    ran no epoch, and a model.keras that is not the architecture its manifest names."""
    import zipfile

    import keras

    import dim_tf.models  # noqa: F401  (registers the custom classes)
    from dim_tf import registry

    manifest_path = os.path.join(model_dir, MANIFEST)
    model_path = os.path.join(model_dir, MODEL_FILE)
    if not os.path.exists(model_dir):
        raise ModelDirError(f"model dir {model_dir!r} does not exist")
    if not os.path.isdir(model_dir):
        raise ModelDirError(f"model dir {model_dir!r} is a file, not a folder; give the training run's folder")
    if not os.path.exists(manifest_path):
        if os.path.exists(os.path.join(model_dir, CONFIG)):
            raise ModelDirError(f"{model_dir} has no {MANIFEST}: training did not finish there; "
                                f"run `python -m dim_tf.train --model_dir {model_dir}` to finish it")
        raise ModelDirError(f"{model_dir} has no {MANIFEST}: no training run was started there; train one with "
                            f"`python -m dim_tf.train --model MODEL --model_dir {model_dir}`")
    with open(manifest_path) as f:
        try:
            manifest = json.load(f)
        except json.JSONDecodeError as e:
            raise ModelDirError(f"{manifest_path} is corrupt ({e}); re-run training in that folder") from e
    if not isinstance(manifest, dict):
        raise ModelDirError(f"{manifest_path} is corrupt (not a JSON object); re-run training in that folder")
    stages = manifest.get("stages")
    untrained = sorted(name for name, s in (stages or {}).items() if isinstance(s, dict) and s.get("epochs", 1) < 1)
    if untrained:
        raise ModelDirError(f"{model_dir} holds an untrained model (stage {', '.join(untrained)} ran 0 epochs); "
                            "train it with --epochs >= 1 (and --denoiser_epochs >= 1) in a new --model_dir")
    if not os.path.isfile(model_path):
        raise ModelDirError(f"{model_path} is missing; re-run training in that folder")
    if not zipfile.is_zipfile(model_path):
        raise ModelDirError(f"{model_path} is truncated or corrupt (not a .keras zip archive); re-run training "
                            "in that folder")
    try:
        model = keras.saving.load_model(model_path, safe_mode=True)
    except Exception as e:
        raise ModelDirError(f"{model_path} is corrupt ({type(e).__name__}: {e}); re-run training in that "
                            "folder") from e
    name = manifest.get("model")
    if name in registry.MODELS and model_kind(model) != name:
        raise ModelDirError(f"{model_path} holds a {model_kind(model)} model but {manifest_path} says {name!r}: "
                            f"the two files come from different runs; re-run `python -m dim_tf.train --model_dir "
                            f"{model_dir}` (it rebuilds both from the folder's checkpoints) or train in a new "
                            "--model_dir")
    return model, manifest
