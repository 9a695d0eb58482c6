"""`python -m dim_tf.eval --suite paper --models runs/cnn6,runs/madry,runs/dim --output_dir DIR`: the paper's
Tables 1 and 2 with its protocol (its 15 attacks at its thresholds, exact binarization, per-norm worst case).

For every model dir, every variant of it that is a paper column (cnn: CNN and biCNN; dim: DIM and biDIM; madry,
im, single_im, dn_single_im: the model itself; abs: ABS and biABS) and every attack row of the paper (those the
model's row selection keeps): one cell (`dim_tf.eval.cells`) in the cell store (`--cells_dir`, default
DIR/cells), keyed by the fingerprint of the model's weights and the attack settings. A cell already there is reused
and, when it holds fewer than `--num_examples` images, extended by attacking only the images it lacks, so the
tables accumulate over sessions. Before any work the suite prints the cells that are missing and what they will
cost; `--max_minutes` bounds the work of one run. Then `table1.md`, `table2.md` and `suite.json` (every aggregate,
per-sample worst-case distances, seconds), rendered from the cells, and, with matplotlib, the pictures
(`dim_tf.eval.pictures`).

`--attack a,b` restricts the work to those attacks (the tables still show every row with a stored cell: the
others with the attack table's default parameters); `--params key=value,attack.key=value` overrides attack
parameters (`key` for every attack of the suite that has it, `attack.key` for one).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time

from dim_tf.eval import aggregate, cells, paper_numbers as paper
from dim_tf.eval.settings import EvalSettings, check_run, parse_params
from dim_tf.eval.threat import EvalError, ThreatModel

SCHEMA = "dim_tf.eval.suite/1"
# Variants of each model that are paper columns (paper_numbers.COLUMNS), the model as trained first:
# cnn, dim, abs: default and bi; madry, im, single_im, dn_single_im: default.
VARIANTS = {model: tuple(sorted((v for m, v in paper.COLUMNS if m == model), key=lambda v: v != "default"))
            for model, _ in paper.COLUMNS}
# Attack rows ("norm:attack" keys of paper_numbers.ROWS) run on a column (paper_numbers.COLUMNS); a column not
# listed runs every row.
ROWS_BY_COLUMN: dict[str, tuple[str, ...]] = {
    # ABS: one forward pass is a best-of-8000 search plus 50 Adam steps on ten latents per image (0.13 s per image
    # batched, 0.22 s alone, on 2 CPU cores: `python -m dim_tf.abs_benchmark`), so only the cheap gradient rows
    # run: FGM, FGSM (one step) and PGD-40 (L2, L-inf). Its gradient is exact, not estimated: the envelope
    # gradient of min_z ELBO(x, z) (dim_tf.models.abs), one decode per backward pass. Left out: DDN, C&W,
    # Brendel-Bethge (100-1200 steps), DeepFool (10 passes per step), Boundary and Pointwise (thousands of
    # queries per image), as are the L0 and L1 columns.
    "ABS": ("l2:pgd", "l2:fgm", "linf:pgd", "linf:fgsm"),
    # biABS with the exact binarization has no input gradient (None: the cells are masked, marked): PGD's 40 steps
    # would add nothing to its random start at 40 ABS passes per image, so only the one-step rows run, to show the
    # masking. Its real robustness needs BPDA (`--bi_gradient straight_through`) or decision-based attacks.
    "biABS": ("l2:fgm", "linf:fgsm"),
}


@dataclasses.dataclass
class ModelEntry:
    """A loaded model dir: `slug` (its folder's name) names it in the cell index and the tables; `fingerprint`:
    of its weights (`dim_tf.fingerprint`), what its cells are keyed by."""

    dir: str
    slug: str
    model: object
    manifest: dict
    fingerprint: str


def parse_models(settings: EvalSettings) -> list[str]:
    text = settings.models or settings.model_dir
    dirs = [d.strip() for d in (text or "").split(",") if d.strip()]
    if not dirs:
        raise EvalError("--suite paper needs models: --models DIR1,DIR2,... (finished training runs)")
    slugs = [os.path.basename(os.path.normpath(d)) for d in dirs]
    for slug in set(slugs):
        if slugs.count(slug) > 1:
            same = [d for d, s in zip(dirs, slugs) if s == slug]
            raise EvalError(f"--models lists {len(same)} dirs named {slug!r} ({', '.join(same)}): the cell index "
                            "and the tables name a model by its folder; give each model dir a distinct name")
    return dirs


def select_rows(attack_flag: str | None) -> list[paper.Row]:
    """The paper's rows, restricted to the `--attack` names if given; every attack must exist in the attack table
    and support its norm."""
    from dim_tf.eval import attacks

    rows = list(paper.ROWS)
    if attack_flag:
        wanted = [a.strip() for a in attack_flag.split(",") if a.strip()]
        suite_attacks = sorted({r.attack for r in rows})
        for name in wanted:
            if name not in suite_attacks:
                raise EvalError(f"attack {name!r} is not in the paper suite; its attacks: {', '.join(suite_attacks)}")
        rows = [r for r in rows if r.attack in wanted]
    for row in rows:
        if row.attack not in attacks.ATTACKS:
            raise EvalError(f"the paper suite's row {row.label!r} needs attack {row.attack!r}, which is not in the "
                            f"attack table (`--attack list`); restrict the suite to attacks that exist, e.g. "
                            f"--attack {','.join(sorted({r.attack for r in rows if r.attack in attacks.ATTACKS}))}")
        attacks.get(row.attack).check_norm(ThreatModel.parse(row.norm))
    return rows


def resolve_params(rows: list[paper.Row], text: str | None) -> dict[str, dict]:
    """--params 'steps=10,cw_l2.max_iterations=50' -> {attack: resolved params} for the suite's attacks."""
    from dim_tf.eval import attacks

    names = sorted({r.attack for r in rows})
    overrides: dict[str, dict] = {name: {} for name in names}
    for key, value in parse_params(text).items():
        scope, dot, param = key.rpartition(".")
        if dot:
            if scope not in overrides:
                raise EvalError(f"--params {key}: {scope!r} is not an attack of this suite run ({', '.join(names)})")
            overrides[scope][param] = value
            continue
        having = [n for n in names if param in attacks.get(n).defaults]
        if not having:
            raise EvalError(f"--params {key}: no attack of this suite run ({', '.join(names)}) has a parameter "
                            f"{param!r}; scope it as ATTACK.{param} or see `--attack list`")
        for name in having:
            overrides[name].setdefault(param, value)
    return {name: attacks.get(name).resolve_params(overrides[name]) for name in names}


def validate(settings: EvalSettings) -> dict:
    """Every check that needs neither models nor data. Raises `EvalError`."""
    for flag in ("eps", "output"):
        if getattr(settings, flag, None):
            raise EvalError(f"--{flag} does not apply to --suite paper (it uses the paper's thresholds and keeps "
                            "one cell per attack row in --cells_dir)")
    if settings.variant != "default":
        raise EvalError("--variant does not apply to --suite paper (it runs every variant of a model that is a "
                        "column of the paper's tables)")
    if settings.bi_gradient != "exact":
        raise EvalError("--suite paper uses the exact binarization, as the paper did; BPDA (--bi_gradient "
                        f"{settings.bi_gradient}) belongs to --suite adaptive")
    if not settings.output_dir:
        raise EvalError("--suite paper needs --output_dir (the tables, suite.json and pictures go there)")
    if settings.max_minutes is not None and not settings.max_minutes >= 0:
        raise EvalError(f"--max_minutes must be >= 0 (0: list the missing cells and render the tables from the "
                        f"stored ones), got {settings.max_minutes}")
    check_run(settings)
    dirs = parse_models(settings)
    rows = select_rows(settings.attack)
    return {"dirs": dirs, "rows": rows, "params": resolve_params(rows, settings.params)}


def table_params(selected: dict[str, dict]) -> dict[str, dict]:
    """The parameters each paper row's cells are looked up with: `selected` (--params resolved) for the attacks of
    this run, the attack table's defaults for the others, whose stored cells the tables show too."""
    from dim_tf.eval import attacks

    names = {r.attack for r in paper.ROWS if r.attack in attacks.ATTACKS}
    return {**{name: attacks.get(name).resolve_params({}) for name in names}, **selected}


def load_models(dirs: list[str], strategy) -> list[ModelEntry]:
    """Loads each model dir (its manifest names the model) and fingerprints its weights; `EvalError` for a model
    with no paper column."""
    from dim_tf import model_dir as md
    from dim_tf.fingerprint import weights_fingerprint

    entries = []
    with strategy.scope():
        for d in dirs:
            model, manifest = md.load(d)
            name = manifest.get("model")
            if name not in VARIANTS:
                raise EvalError(f"{d}: model {name!r} is no column of the paper's tables; models: "
                                f"{', '.join(VARIANTS)}")
            entries.append(ModelEntry(d, os.path.basename(os.path.normpath(d)), model, manifest,
                                      weights_fingerprint(model)))
    return entries


def rows_for(model_name: str, variant: str, rows: list[paper.Row]) -> list[paper.Row]:
    keep = ROWS_BY_COLUMN.get(paper.COLUMNS[(model_name, variant)])
    return rows if keep is None else [r for r in rows if r.key in keep]


def column_label(column: str, slug: str, taken: set[str]) -> str:
    label = column if column not in taken else f"{column} [{slug}]"
    taken.add(label)
    return label


@dataclasses.dataclass(frozen=True, eq=False)  # eq=False: hashed by identity, a key of the run's dicts
class Slot:
    """A cell of the tables: a model variant (a column) and an attack row; `selected`: this run may work on it."""

    entry: ModelEntry
    variant: str
    variant_name: str
    label: str
    row: paper.Row
    cell_id: cells.store.CellId
    settings: dict
    selected: bool


def slots(models: list[ModelEntry], checked: dict, settings: EvalSettings, strategy) -> tuple[list[Slot], dict]:
    """Every (model variant, paper row) the tables show, with its cell's key; and the attacked variant models."""
    from dim_tf import variants

    params = table_params(checked["params"])
    selected = {r.key for r in checked["rows"]}
    out, attacked, taken = [], {}, set()
    for entry in models:
        name = entry.manifest["model"]
        for variant in VARIANTS[name]:
            with strategy.scope():
                model, variant_name = variants.choose(entry.model, entry.manifest, variant, "exact", EvalError)
            attacked[(entry.slug, variant)] = model
            label = column_label(paper.COLUMNS[(name, variant)], entry.slug, taken)
            for row in rows_for(name, variant, [r for r in paper.ROWS if r.attack in params]):
                cell_settings = {
                    "attack": row.attack, "norm": row.norm, "eps": paper.THRESHOLDS[row.norm],
                    "params": params[row.attack], "restarts": settings.restarts, "seed": settings.seed,
                    "variant": variant, "bi_gradient": "exact" if variant == "bi" else None,
                    "dataset": entry.manifest.get("dataset", "mnist"),
                    "model_settings": cells.store.model_settings(entry.model)}
                cell_settings = json.loads(json.dumps(cell_settings))  # as read back from the file
                cell_id = cells.store.CellId(entry.fingerprint, variant, row.attack, row.norm,
                                             cells.store.settings_hash(cell_settings))
                out.append(Slot(entry, variant, variant_name, label, row, cell_id, cell_settings,
                                row.key in selected))
    return out, attacked


def index_entry(entry: ModelEntry) -> dict:
    """What models.json records about a model dir."""
    from dim_tf.eval import results

    shown = results.shown_path(entry.dir)
    name = entry.manifest["model"]
    return {"fingerprint": entry.fingerprint, "model": name, "model_dir": shown,
            "columns": [paper.COLUMNS[(name, v)] for v in VARIANTS[name]],
            "preset": (entry.manifest.get("config") or {}).get("preset"),
            "test_accuracy": entry.manifest.get("test_accuracy"),
            "training_command": cells.index.training_command(entry.manifest, shown),
            "trained_at_commit": (entry.manifest.get("versions") or {}).get("dim_tf_commit")}


def summarize_column(col: dict, rows: list[paper.Row], outcomes: dict[str, aggregate.Outcome]) -> None:
    """Adds the per-norm worst case (`all`, over the first n images every row of that norm has) and the minimal
    accuracy to a column, in place; `rows_missing`: rows asked for whose cells are not there yet (the column's
    `missing`), so the aggregate is an upper bound over fewer attacks."""
    col["all"] = {}
    for norm in paper.NORM_ORDER:
        keys = [r.key for r in rows if r.norm == norm and r.key in outcomes]
        if keys:
            n = min(len(outcomes[k].correct) for k in keys)
            worst = aggregate.worst_case([outcomes[k].first(n) for k in keys])
            col["all"][norm] = {**aggregate.to_json(worst), "attacks": keys, "n": n,
                                "rows_missing": sum(k.startswith(norm + ":") for k in col.get("missing", ()))}
    if outcomes:
        accuracy, index, masked = aggregate.minimal_accuracy(list(outcomes.values()))
        col["minimal"] = {"accuracy": accuracy, "attack": list(outcomes)[index], "masked": masked,
                          "n": min(len(o.correct) for o in outcomes.values()),
                          "rows_missing": len(col.get("missing", ()))}
    col["seconds"] = sum(a["seconds"] for a in col["attacks"].values())


def todos_of(table_slots: list[Slot], stored: dict, cells_dir: str, target: int) -> dict:
    """Where each cell of the selected rows stands against `target` images, with its seconds per image from the
    store (`cells.plan`)."""
    from dim_tf.eval import results

    scanned = cells.store.scan(cells_dir)
    todos = {}
    for slot in table_slots:
        if slot.selected:
            name, cell = slot.entry.manifest["model"], stored[slot]
            rate, source = cells.plan.rate_for(slot.cell_id, slot.settings, name, scanned)
            todos[slot] = cells.plan.Todo(slot.cell_id, results.shown_path(slot.entry.dir), name, slot.label,
                                          slot.row.label, min(cell.n if cell else 0, target), target, rate, source)
    return todos


def compute(todos: dict, stored: dict, attacked: dict, test_of, cells_dir: str, settings: EvalSettings,
            options: cells.extend.RunOptions, log) -> dict:
    """Fills the short cells in order while `--max_minutes` allows (`stored` is updated); returns {slot: (images,
    seconds) computed}."""
    from dim_tf.eval import results

    budget = cells.plan.Budget(settings.max_minutes)
    computed = {}
    short = [slot for slot, todo in todos.items() if todo.missing]
    for done, slot in enumerate(short, 1):
        todo = todos[slot]
        if budget.left <= 0:
            log("--max_minutes 0: nothing attacked" if settings.max_minutes == 0 else
                f"budget of {settings.max_minutes:g} min used: {len(short) - done + 1} cell(s) not started")
            break
        first_chunk = None if todo.rate is None else todo.rate * min(settings.batch_size, todo.missing)
        if not budget.allows(first_chunk):
            log(f"[{done}/{len(short)}] {slot.label} / {slot.row.label}: not started (next chunk "
                f"{cells.plan.duration(first_chunk)}, {cells.plan.duration(budget.left)} left)")
            continue
        test = test_of(slot.entry)
        cells.index.record(cells_dir, slot.entry.slug, index_entry(slot.entry))
        name = slot.entry.manifest["model"]
        info = {"model": name, "model_dir": results.shown_path(slot.entry.dir), "row": slot.row.label,
                "column": paper.COLUMNS[(name, slot.variant)], "variant_name": slot.variant_name}
        job = cells.extend.Job(slot.cell_id, slot.settings, info, attacked[(slot.entry.slug, slot.variant)],
                               test.images, test.labels)
        cell, images, seconds = cells.extend.fill(cells_dir, job, stored[slot], todo.target, todo.rate, budget,
                                                  options)
        stored[slot], computed[slot] = cell, (images, seconds)
        log(f"[{done}/{len(short)}] {slot.label} / {slot.row.label}: {images} images attacked in {seconds:.1f}s, "
            f"{cell.n if cell else 0} stored" + (f" -> {os.path.join(results.shown_path(cells_dir), slot.cell_id.file)}"
                                                 if cell else ""))
    return computed


def columns_from(table_slots: list[Slot], stored: dict, computed: dict, target: int) -> list[dict]:
    """The tables' columns (one per model variant) from the cells: per row accuracy, images, masking, seconds; per
    norm the worst case; the minimal accuracy."""
    from dim_tf.eval import results

    columns, by_label = [], {}
    for slot in table_slots:
        name = slot.entry.manifest["model"]
        if slot.label not in by_label:
            by_label[slot.label] = {
                "column": paper.COLUMNS[(name, slot.variant)], "label": slot.label,
                "model_dir": results.shown_path(slot.entry.dir), "model": name, "variant": slot.variant,
                "variant_name": slot.variant_name, "weights_fingerprint": slot.entry.fingerprint, "attacks": {},
                "missing": [], "outcomes": {}, "rows": []}
            columns.append(by_label[slot.label])
        col, cell = by_label[slot.label], stored[slot]
        col["rows"].append(slot.row)
        if cell is None:
            if slot.selected:
                col["missing"].append(slot.row.key)
            continue
        outcome = col["outcomes"][slot.row.key] = cell.outcome.first(target)
        n = len(outcome.correct)
        if n > col.get("clean_n", 0):
            col["clean_accuracy"], col["clean_n"] = float(outcome.correct.mean()), n
        images, seconds = computed.get(slot, (0, 0.0))
        col["attacks"][slot.row.key] = {
            "label": slot.row.label, "accuracy": outcome.accuracy, "masked": outcome.masked, "n": n,
            "zero_gradient": any(c["zero_gradient"] for c in cell.chunks),
            "median_distance": aggregate.finite_or_none(outcome.median_distance),
            "params": cell.settings["params"], "restarts": cell.settings["restarts"],
            "seconds": sum(c["seconds"] for c in cell.chunks if c["first"] < n), "computed_now": images,
            "seconds_now": seconds, "cell": cell.id.file}
    for col in columns:
        summarize_column(col, col.pop("rows"), col.pop("outcomes"))
    return columns


def run(settings: EvalSettings, argv=None, log=print) -> dict:
    """Lists the missing cells, computes what `--max_minutes` allows, renders the tables, `suite.json` and the
    pictures from the cells; returns the summary. `argv`: the command line the reports record."""
    checked = validate(settings)
    from dim_tf import data, distribute, model_dir as md
    from dim_tf.eval import results, tables

    start = time.time()
    strategy = distribute.strategy_from_flag(settings.strategy)
    models = load_models(checked["dirs"], strategy)
    cells_dir = settings.cells_dir or os.path.join(settings.output_dir, "cells")
    for entry in models:  # a changed model is refused before any work
        cells.index.check(cells_dir, entry.slug, entry.dir, entry.fingerprint)
        recorded = entry.manifest.get("weights_fingerprint")
        if recorded and recorded != entry.fingerprint:
            log(f"warning: {entry.dir}: manifest.json records weights fingerprint {recorded}, model.keras has "
                f"{entry.fingerprint} (the model file was replaced after training?); its cells use {entry.fingerprint}")
    results.check_writable(os.path.join(settings.output_dir, "suite.json"))
    os.makedirs(cells_dir, exist_ok=True)
    target, shown_cells = settings.num_examples, results.shown_path(cells_dir)
    table_slots, attacked = slots(models, checked, settings, strategy)
    stored = {slot: cells.store.read(cells_dir, slot.cell_id) for slot in table_slots}
    todos = todos_of(table_slots, stored, cells_dir, target)
    log(f"paper suite: {len(models)} model dir(s), {len(todos)} cells of the selected rows at {target} images -> "
        f"{settings.output_dir}")
    for line in cells.plan.listing(list(todos.values()), shown_cells):
        log(line)

    tests = {}

    def test_of(entry: ModelEntry):
        """The first N test images of the model's dataset, loaded once per source."""
        source = (entry.manifest.get("dataset", "mnist"), data.data_dir_for(settings.data_dir, entry.manifest))
        if source not in tests:
            tests[source] = data.load(*source).test.take(target)
        return tests[source]

    options = cells.extend.RunOptions(settings.batch_size, settings.progress, strategy, results.command(argv))
    computed = compute(todos, stored, attacked, test_of, cells_dir, settings, options, log)
    columns = columns_from(table_slots, stored, computed, target)
    for col in columns:
        for key, att in col["attacks"].items():
            log(f"{col['label']} / {att['label']}: accuracy {100 * att['accuracy']:.1f}% at "
                f"{paper.THRESHOLDS[key.split(':')[0]]:g} on {att['n']} images"
                + (" MASKED (zero gradient)" if att["masked"] else "")
                + (f"; {att['computed_now']} computed now" if att["computed_now"] else "; stored"))
    remaining = list(todos_of(table_slots, stored, cells_dir, target).values())
    summary = {
        "schema": SCHEMA, "suite": "paper", "command": results.command(argv),
        "num_examples": target, "thresholds": paper.THRESHOLDS, "columns": columns, "cells_dir": shown_cells,
        "missing": [{"model_dir": t.model_dir, "column": t.column, "row": t.row, "stored": t.have,
                     "missing": t.missing, "estimate_seconds": t.cost} for t in remaining if t.missing],
        "conventions": aggregate.__doc__.strip(), "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "versions": md.library_versions(), "tables": [],
    }
    for number in (1, 2):
        text = tables.render(summary, number)
        if text:
            path = os.path.join(settings.output_dir, f"table{number}.md")
            with md.atomic_path(path, ".md") as tmp, open(tmp, "w") as f:
                f.write(text)
            summary["tables"].append(os.path.basename(path))
            log(f"Table {number} -> {path}")
    summary["pictures"] = draw_pictures(summary, models, test_of, settings, log)
    computed_seconds = sum(seconds for _, seconds in computed.values())
    attack_seconds = sum(c["seconds"] for c in columns)
    summary["seconds"] = {"total": time.time() - start, "attacks_computed_now": computed_seconds,
                          "attacks_all": attack_seconds}
    md.write_json(os.path.join(settings.output_dir, "suite.json"), summary)
    log("after this run: " + cells.plan.listing(remaining, shown_cells)[-1])
    log(f"paper suite done in {summary['seconds']['total']:.1f}s (attacks computed now: {computed_seconds:.1f}s; "
        f"all stored cells shown: {attack_seconds:.1f}s) -> {os.path.join(settings.output_dir, 'suite.json')}")
    return summary


def draw_pictures(summary: dict, models: list[ModelEntry], test_of, settings: EvalSettings, log) -> list[str]:
    """The pictures (`dim_tf.eval.pictures`) if matplotlib is installed: the curves, and for each DIM model the
    reconstruction grid and the t-SNE of its latent spaces (`test_of(entry)`: its first N test images). None with
    `--max_minutes 0`, which only lists and renders. Returns the files written (relative paths)."""
    from dim_tf.eval import pictures

    if settings.max_minutes == 0:
        log("--max_minutes 0: pictures skipped")
        return []
    if not pictures.available():
        log("matplotlib is not installed: pictures skipped (pip install -e '.[plots]'; then "
            f"`python -m dim_tf.eval.pictures --suite_dir {settings.output_dir} --model_dir DIR`)")
        return []
    written = []
    if any(c["all"] for c in summary["columns"]):
        written.append(pictures.curves(summary, os.path.join(settings.output_dir, "curves.png")))
    for entry in models:
        if entry.manifest["model"] == "dim":
            written += pictures.model_pictures(
                entry.model, test_of(entry), settings.output_dir, entry.slug,
                tsne_examples=min(settings.num_examples, pictures.TSNE_EXAMPLES), seed=settings.seed)
    for path in written:
        log(f"picture -> {path}")
    return [os.path.relpath(p, settings.output_dir) for p in written]
