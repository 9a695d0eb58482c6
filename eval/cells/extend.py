"""Attacking the images a cell lacks: images [n, target) of the test set, in chunks of one batch, the cell written
after each chunk (an interrupted run keeps what it finished).

A chunk starting at image i runs `run_attack` on images [i, i + count) with seed `settings.seed + i`, so each range
gets its own random draws and a cell is reproducible from its recorded chunks. Per-sample results do not depend on
the chunking except through those draws (randomised attacks) and the batch an image was attacked in.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from dim_tf.eval import aggregate
from dim_tf.eval.cells import plan, store


@dataclasses.dataclass(frozen=True)
class Job:
    """One cell to fill: its id and attack settings (`settings`: attack, norm, eps, params, restarts, seed), what
    the file records about the model (`info`), the model variant to attack, and the first N test images."""

    cell_id: store.CellId
    settings: dict
    info: dict
    model: object
    images: np.ndarray
    labels: np.ndarray


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """How to run the attacks (none of it changes the results): images per chunk and batch, progress, strategy,
    and the command line the chunks record."""

    batch_size: int = 250
    progress: bool = True
    strategy: object = None
    command: str = ""


def attack_chunk(job: Job, first: int, count: int, options: RunOptions) -> tuple[aggregate.Outcome, dict]:
    """The outcome on images [first, first + count) and the chunk's record."""
    from dim_tf import model_dir as md
    from dim_tf.eval import attack_run, attacks

    s = job.settings
    row = attacks.get(s["attack"])
    result = attack_run.run_attack(job.model, job.images[first:first + count], job.labels[first:first + count], row,
                                   s["norm"], [s["eps"]], batch_size=options.batch_size, seed=s["seed"] + first,
                                   restarts=s["restarts"], params=s["params"], progress=options.progress,
                                   strategy=options.strategy)
    masked = bool(result["zero_gradient"] and row.uses_gradient)
    chunk = {"first": first, "count": count, "seed": s["seed"] + first, "seconds": round(result["seconds"], 2),
             "forward_passes": result["forward_passes"], "backward_passes": result["backward_passes"],
             "out_of_bounds": result["out_of_bounds"], "zero_gradient": result["zero_gradient"],
             "warnings": result["warnings"], "command": options.command,
             "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "versions": md.library_versions()}
    return aggregate.from_result(result, s["eps"], masked), chunk


def fill(cells_dir: str, job: Job, cell: store.Cell | None, target: int, rate: float | None, budget: plan.Budget,
         options: RunOptions) -> tuple[store.Cell | None, int, float]:
    """Extends `cell` (None: not stored yet) to `target` images, a chunk at a time while `budget` allows the next
    chunk at `rate` seconds per image (the cell's own rate once it has one). Returns (cell, images computed,
    seconds)."""
    computed, seconds = 0, 0.0
    while (have := cell.n if cell else 0) < target:
        count = min(options.batch_size, target - have)
        if not budget.allows(None if rate is None else rate * count):
            break
        outcome, chunk = attack_chunk(job, have, count, options)
        cell = store.extended(cell, job.cell_id, job.settings, job.info, outcome, chunk)
        store.write(cells_dir, cell)
        computed, seconds = computed + count, seconds + chunk["seconds"]
        rate = cell.seconds / cell.n
    return cell, computed, seconds
