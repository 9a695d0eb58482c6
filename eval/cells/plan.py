"""Which cells are missing, what they will cost, and the time budget of a run.

The cost of a cell is the images it lacks times the seconds per image already measured: on the cell itself (its
earlier chunks), else on the same kind of model (manifest model name) and variant with the same attack settings
under another fingerprint, else unknown. Seconds were measured on whatever else the machine ran at the time, so
they are estimates.
"""

from __future__ import annotations

import dataclasses
import math
import time

from dim_tf.eval.cells.store import CellId, settings_hash


@dataclasses.dataclass(frozen=True)
class Todo:
    """A cell of the run: where it stands against the target number of images, and its seconds per image."""

    cell_id: CellId
    model_dir: str
    model: str
    column: str
    row: str
    have: int
    target: int
    rate: float | None = None  # seconds per image
    rate_from: str = "unknown"

    @property
    def missing(self) -> int:
        return max(self.target - self.have, 0)

    @property
    def cost(self) -> float | None:
        return None if self.rate is None else self.rate * self.missing


def cost_key(settings: dict) -> str:
    """The settings that set an attack's cost: all but the variant. biDIM runs DIM's networks plus two elementwise
    thresholds (biCNN: the CNN plus one), so a variant's seconds estimate the other's (an estimate only: seconds
    measured on a shared machine follow its load)."""
    return settings_hash({k: v for k, v in settings.items() if k not in ("variant", "bi_gradient")})


def rate_for(cell_id: CellId, settings: dict, model: str, scanned: list[dict]) -> tuple[float | None, str]:
    """(seconds per image, where it comes from) for a cell with these `settings` of a `model` (manifest name),
    from the store's cells (`store.scan`): the cell itself, else the other variant of the same weights, else the
    same kind of model under other weights (same settings but the variant), else (None, "unknown")."""
    key = cost_key(settings)
    same_cost = [c for c in scanned if cost_key(c["settings"]) == key]
    for source, chosen in (
            ("this cell", [c for c in same_cost if c["fingerprint"] == cell_id.fingerprint
                           and c["variant"] == cell_id.variant]),
            ("as the other variant of these weights", [c for c in same_cost if c["fingerprint"] == cell_id.fingerprint]),
            ("as on ", [c for c in same_cost if c["model"] == model])):
        images = sum(c["images"] for c in chosen)
        if images:
            if source.endswith(" "):
                source += ", ".join(sorted({str(c["model_dir"]) for c in chosen}))
            return sum(c["seconds"] for c in chosen) / images, source
    return None, "unknown"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def listing(todos: list[Todo], cells_dir: str) -> list[str]:
    """The lines the suite prints before any work: every cell short of its target, then the totals."""
    short = [t for t in todos if t.missing]
    target = max((t.target for t in todos), default=0)
    lines = [f"cells: {len(todos) - len(short)} of {len(todos)} complete at {target} images (store {cells_dir})"]
    if not short:
        return lines
    width = max(len(t.model_dir) for t in short)
    lines.append(f"  {'model dir':<{width}}  {'column':<16} {'row':<22} {'stored':>6} {'to run':>6}  estimate")
    for t in short:
        rate = "" if t.rate is None else f" ({t.rate:.3g} s/image, {t.rate_from})"
        lines.append(f"  {t.model_dir:<{width}}  {t.column:<16} {t.row:<22} {t.have:>6} {t.missing:>6}  "
                     f"{duration(t.cost)}{rate}")
    known = [t.cost for t in short if t.cost is not None]
    unknown = len(short) - len(known)
    cost = (f"estimated {duration(sum(known))} for {len(known)} of them" if known else "") + (
        ", " if known and unknown else "") + (f"{unknown} of unknown cost (no stored seconds yet)" if unknown else "")
    lines.append(f"missing: {len(short)} cells, {sum(t.missing for t in short):,} images to attack; {cost}")
    return lines


class Budget:
    """`--max_minutes`: work whose estimate would end past the budget is not started; work of unknown cost starts
    while any time is left (one chunk of it may run over). None: no limit."""

    def __init__(self, max_minutes: float | None, clock=time.monotonic):
        self.limit = math.inf if max_minutes is None else 60.0 * max_minutes
        self.clock, self.start = clock, clock()

    @property
    def left(self) -> float:
        return self.limit - (self.clock() - self.start)

    def allows(self, cost: float | None) -> bool:
        return self.left > 0 and (cost is None or cost <= self.left)
