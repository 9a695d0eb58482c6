"""The cell files: `CELLS_DIR/<weights fingerprint>/<variant>.<attack>.<norm>.<settings hash>.json`.

A file holds, for the first n test images in order (`aggregate.Outcome`): `correct` (the clean image is classified
right) and `broken` (an adversarial within the threshold was found) as strings of 0/1, and `distance` (the smallest
adversarial distance found, 0 where the clean image is misclassified, null where none was found) rounded to
`DIGITS` significant digits; then `settings` (what the hash is of), `info` (model, column, model dir: not part of
the key) and `chunks` (each range of images computed in one go: first, count, seed, seconds, passes, command).

The key is the fingerprint of the trained weights (`dim_tf.fingerprint`), never the model file's bytes, and a hash
of the attack settings; the number of images is not part of it: a cell grows.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os

import numpy as np

from dim_tf.eval import aggregate
from dim_tf.eval.threat import EvalError

SCHEMA = "dim_tf.eval.cell/1"
# Distances are stored to 5 significant digits: at the thresholds (L-inf 0.3, L2 1.5, L1 8) the rounding error is
# at most 5e-5, half the tolerance within which an adversarial counts (threat.TOLERANCE, 1e-4); L0 counts pixels.
# A 1,000-image cell is then about 9 kB instead of the ~120 kB result JSON of a run.
DIGITS = 5


@dataclasses.dataclass(frozen=True)
class CellId:
    """Which cell: the model's weights, the variant, the attack row and the hash of the attack settings."""

    fingerprint: str
    variant: str
    attack: str
    norm: str
    settings_hash: str

    @property
    def file(self) -> str:
        """The cell's path inside the store."""
        return os.path.join(self.fingerprint, f"{self.variant}.{self.attack}.{self.norm}.{self.settings_hash}.json")


@dataclasses.dataclass(frozen=True)
class Cell:
    """A cell's content: the outcome on its first n images, the settings, what it was computed on, its chunks."""

    id: CellId
    settings: dict
    info: dict
    outcome: aggregate.Outcome
    chunks: tuple[dict, ...] = ()

    @property
    def n(self) -> int:
        return len(self.outcome.correct)

    @property
    def seconds(self) -> float:
        return float(sum(c["seconds"] for c in self.chunks))


def settings_hash(settings: dict) -> str:
    """The first 10 hex digits of the sha256 of the settings as canonical JSON."""
    text = json.dumps(settings, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def model_settings(model) -> dict:
    """What shapes a model's outputs besides its weights: the plain values of its Keras config (ABS: prior samples,
    Adam steps, class scales; DIM: the binarization), without its name (Keras numbers names per process)."""
    config = model.get_config() if hasattr(model, "get_config") else {}
    plain = (str, int, float, bool, type(None))
    return {k: v for k, v in sorted(config.items()) if k not in ("name", "trainable") and (
        isinstance(v, plain) or isinstance(v, (list, tuple)) and all(isinstance(i, plain) for i in v))}


def _bits(values: np.ndarray) -> str:
    return "".join("1" if v else "0" for v in values)


def _unbits(text: str) -> np.ndarray:
    return np.frombuffer(text.encode(), np.uint8) == ord("1")


def _rounded(value: float) -> float | None:
    return None if math.isinf(value) else float(f"{value:.{DIGITS}g}")


def to_json(cell: Cell) -> dict:
    o = cell.outcome
    return {"schema": SCHEMA, "id": dataclasses.asdict(cell.id), "settings": cell.settings, "info": cell.info,
            "n": cell.n, "masked": o.masked, "correct": _bits(o.correct), "broken": _bits(o.broken),
            "distance": [_rounded(d) for d in o.distance], "chunks": list(cell.chunks)}


def from_json(data: dict) -> Cell:
    correct, broken = _unbits(data["correct"]), _unbits(data["broken"])
    distance = np.array([math.inf if d is None else float(d) for d in data["distance"]], np.float64)
    if not len(correct) == len(broken) == len(distance) == data["n"]:
        raise ValueError("arrays of different lengths")
    return Cell(CellId(**data["id"]), data["settings"], data["info"],
                aggregate.Outcome(correct, broken, distance, bool(data["masked"])), tuple(data["chunks"]))


def read(cells_dir: str, cell_id: CellId) -> Cell | None:
    """The stored cell, or None when there is none. `EvalError` for a file that is corrupt or holds other
    settings than its name says."""
    path = os.path.join(cells_dir, cell_id.file)
    try:
        with open(path) as f:
            data = json.load(f)
        cell = from_json(data)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise EvalError(f"cell {path} is unreadable ({e}); delete it to recompute that cell") from e
    if cell.id != cell_id or settings_hash(cell.settings) != cell_id.settings_hash:
        raise EvalError(f"cell {path} holds another cell than its name says; delete it to recompute that cell")
    return cell


def write(cells_dir: str, cell: Cell) -> str:
    """Writes the cell atomically, one top-level key per line (arrays on one line); returns its path."""
    from dim_tf import model_dir as md

    path = os.path.join(cells_dir, cell.id.file)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    body = ",\n".join(f" {json.dumps(k)}: {json.dumps(v, sort_keys=True, separators=(',', ':'), allow_nan=False)}"
                      for k, v in to_json(cell).items())
    with md.atomic_path(path, ".json") as tmp, open(tmp, "w") as f:
        f.write("{\n" + body + "\n}\n")
    return path


def extended(cell: Cell | None, cell_id: CellId, settings: dict, info: dict, outcome: aggregate.Outcome,
             chunk: dict) -> Cell:
    """`cell` (None: a new one) with `outcome`, the results on the images right after its last one, appended (its
    distances rounded as the file stores them, so a run's tables equal those rendered later from the file)."""
    outcome = dataclasses.replace(outcome, distance=np.array(
        [math.inf if r is None else r for r in map(_rounded, outcome.distance)], np.float64))
    if cell is None:
        return Cell(cell_id, settings, info, outcome, (chunk,))
    o = cell.outcome
    merged = aggregate.Outcome(np.concatenate([o.correct, outcome.correct]), np.concatenate([o.broken, outcome.broken]),
                               np.concatenate([o.distance, outcome.distance]), o.masked or outcome.masked)
    return Cell(cell_id, settings, {**cell.info, **info}, merged, (*cell.chunks, chunk))


def scan(cells_dir: str) -> list[dict]:
    """Every cell's id, settings, model name, images and seconds (for cost estimates); unreadable files are
    skipped."""
    found = []
    if not os.path.isdir(cells_dir):
        return found
    for fingerprint in sorted(os.listdir(cells_dir)):
        folder = os.path.join(cells_dir, fingerprint)
        if not os.path.isdir(folder):
            continue
        for name in sorted(os.listdir(folder)):
            try:
                with open(os.path.join(folder, name)) as f:
                    data = json.load(f)
                found.append({**data["id"], "settings": data["settings"], "model": data["info"].get("model"),
                              "model_dir": data["info"].get("model_dir"),
                              "images": sum(c["count"] for c in data["chunks"]),
                              "seconds": sum(c["seconds"] for c in data["chunks"])})
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                continue
    return found
