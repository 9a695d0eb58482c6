"""`python -m dim_tf.eval --suite paper --models runs/cnn,runs/madry,runs/dim --output_dir DIR`: the paper's
Tables 1 and 2 with its protocol (its 15 attacks at its thresholds, exact binarization, per-norm worst case).

For every model dir, every variant of it that is a paper column (cnn: CNN and biCNN; dim: DIM and biDIM; madry,
im, single_im, dn_single_im: the model itself; abs: ABS and biABS) and every attack row of the paper (those the
model's row selection keeps): one result JSON at `DIR/MODEL_DIR_NAME/VARIANT-ATTACK-NORM.json`. A JSON already there
with the same settings (attack, norm, threshold, parameters, restarts, seed, number of examples, variant, the
model's manifest) is reused, so an interrupted suite resumes. Then `table1.md`, `table2.md`, `suite.json` (every
aggregate, per-sample worst-case distances, seconds) and, with matplotlib, the pictures (`dim_tf.eval.pictures`).

`--attack a,b` restricts the suite to those attacks; `--params key=value,attack.key=value` overrides attack
parameters (`key` for every attack of the suite that has it, `attack.key` for one).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time

from dim_tf.eval import aggregate, paper_numbers as paper
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
    """A loaded model dir: `slug` names its folder under --output_dir."""

    dir: str
    slug: str
    model: object
    manifest: dict
    manifest_sha256: str


def parse_models(settings: EvalSettings) -> list[str]:
    text = settings.models or settings.model_dir
    dirs = [d.strip() for d in (text or "").split(",") if d.strip()]
    if not dirs:
        raise EvalError("--suite paper needs models: --models DIR1,DIR2,... (finished training runs)")
    slugs = [os.path.basename(os.path.normpath(d)) for d in dirs]
    for slug in set(slugs):
        if slugs.count(slug) > 1:
            same = [d for d, s in zip(dirs, slugs) if s == slug]
            raise EvalError(f"--models lists {len(same)} dirs named {slug!r} ({', '.join(same)}): each model's "
                            "results go to OUTPUT_DIR/<dir name>; give each model dir a distinct name")
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
            raise EvalError(f"--{flag} does not apply to --suite paper (it uses the paper's thresholds and writes "
                            "one JSON per attack under --output_dir)")
    if settings.variant != "default":
        raise EvalError("--variant does not apply to --suite paper (it runs every variant of a model that is a "
                        "column of the paper's tables)")
    if settings.bi_gradient != "exact":
        raise EvalError("--suite paper uses the exact binarization, as the paper did; BPDA (--bi_gradient "
                        f"{settings.bi_gradient}) belongs to --suite adaptive")
    if not settings.output_dir:
        raise EvalError("--suite paper needs --output_dir (the per-attack JSONs, tables and pictures go there)")
    check_run(settings)
    dirs = parse_models(settings)
    rows = select_rows(settings.attack)
    return {"dirs": dirs, "rows": rows, "params": resolve_params(rows, settings.params)}


def load_models(dirs: list[str], strategy) -> list[ModelEntry]:
    """Loads each model dir (its manifest names the model); `EvalError` for a model with no paper column."""
    from dim_tf import model_dir as md

    entries = []
    with strategy.scope():
        for d in dirs:
            model, manifest = md.load(d)
            name = manifest.get("model")
            if name not in VARIANTS:
                raise EvalError(f"{d}: model {name!r} is no column of the paper's tables; models: "
                                f"{', '.join(VARIANTS)}")
            with open(os.path.join(d, md.MANIFEST), "rb") as f:
                sha = hashlib.sha256(f.read()).hexdigest()
            entries.append(ModelEntry(d, os.path.basename(os.path.normpath(d)), model, manifest, sha))
    return entries


def rows_for(model_name: str, variant: str, rows: list[paper.Row]) -> list[paper.Row]:
    keep = ROWS_BY_COLUMN.get(paper.COLUMNS[(model_name, variant)])
    return rows if keep is None else [r for r in rows if r.key in keep]


def column_label(column: str, slug: str, taken: set[str]) -> str:
    label = column if column not in taken else f"{column} [{slug}]"
    taken.add(label)
    return label


def attack_once(job: dict, row: paper.Row, settings: EvalSettings, argv) -> tuple[dict, bool, str]:
    """Runs `row` on the job's model variant, or reuses the stored JSON made with the same settings; returns
    (result, reused, path)."""
    from dim_tf import model_dir as md
    from dim_tf.eval import attack_run, attacks, results

    entry, variant, test = job["entry"], job["variant"], job["test"]
    threshold = paper.THRESHOLDS[row.norm]
    params = job["params"][row.attack]
    path = os.path.join(settings.output_dir, entry.slug, f"{job['variant_name']}-{row.attack}-{row.norm}.json")
    key = json.loads(json.dumps({
        "suite": "paper", "attack": row.attack, "norm": row.norm, "eps": [threshold], "params": params,
        "restarts": settings.restarts, "seed": settings.seed, "num_examples": len(test), "variant": variant,
        "bi_gradient": "exact" if variant == "bi" else None, "manifest_sha256": entry.manifest_sha256,
        "dataset": entry.manifest.get("dataset", "mnist")}))
    result = results.reusable(path, key)
    if result is not None:
        return result, True, path
    os.makedirs(os.path.dirname(path), exist_ok=True)
    result = attack_run.run_attack(job["model"], test.images, test.labels, attacks.get(row.attack), row.norm,
                                   [threshold], batch_size=settings.batch_size, seed=settings.seed,
                                   restarts=settings.restarts, params=params, progress=settings.progress,
                                   strategy=job["strategy"])
    results.annotate(result, model_dir=entry.dir, manifest=entry.manifest, variant=variant,
                     variant_name=job["variant_name"], bi_gradient="exact", dataset=job["dataset"],
                     num_examples=len(test), strategy=settings.strategy, argv=argv)
    result["suite"] = {"name": "paper", "key": key}
    md.write_json(path, result)
    return result, False, path


def summarize_column(col: dict, rows: list[paper.Row], outcomes: dict[str, aggregate.Outcome]) -> None:
    """Adds the per-norm worst case (`all`) and the minimal accuracy to a column, in place."""
    col["all"] = {}
    for norm in paper.NORM_ORDER:
        keys = [r.key for r in rows if r.norm == norm]
        if keys:
            col["all"][norm] = {**aggregate.to_json(aggregate.worst_case([outcomes[k] for k in keys])),
                                "attacks": keys}
    if outcomes:
        accuracy, index, masked = aggregate.minimal_accuracy(list(outcomes.values()))
        col["minimal"] = {"accuracy": accuracy, "attack": list(outcomes)[index], "masked": masked}
    col["seconds"] = sum(a["seconds"] for a in col["attacks"].values())


def run(settings: EvalSettings, argv=None, log=print) -> dict:
    """Runs (or resumes) the suite, writes the tables, `suite.json` and the pictures; returns the summary. `argv`:
    the command line the reports record."""
    checked = validate(settings)
    from dim_tf import data, distribute, model_dir as md, variants
    from dim_tf.eval import attacks, results, tables

    start = time.time()
    strategy = distribute.strategy_from_flag(settings.strategy)
    models = load_models(checked["dirs"], strategy)
    results.check_writable(os.path.join(settings.output_dir, "suite.json"))
    datasets, dataset_of = {}, {}
    for entry in models:
        source = (entry.manifest.get("dataset", "mnist"), data.data_dir_for(settings.data_dir, entry.manifest))
        if source not in datasets:
            datasets[source] = data.load(*source)
        dataset_of[entry.slug] = datasets[source]
    total = sum(len(rows_for(m.manifest["model"], v, checked["rows"])) for m in models
                for v in VARIANTS[m.manifest["model"]])
    log(f"paper suite: {len(models)} model dir(s), {total} attack runs on {settings.num_examples} examples "
        f"-> {settings.output_dir}")
    columns, taken, computed_seconds, done = [], set(), 0.0, 0
    for entry in models:
        name = entry.manifest["model"]
        for variant in VARIANTS[name]:
            rows = rows_for(name, variant, checked["rows"])
            with strategy.scope():
                attacked, variant_name = variants.choose(entry.model, entry.manifest, variant, "exact", EvalError)
            column = paper.COLUMNS[(name, variant)]
            col = {"column": column, "label": column_label(column, entry.slug, taken),
                   "model_dir": os.path.abspath(entry.dir), "model": name, "variant": variant,
                   "variant_name": variant_name, "manifest_sha256": entry.manifest_sha256, "attacks": {}}
            job = {"entry": entry, "variant": variant, "variant_name": variant_name, "model": attacked,
                   "dataset": dataset_of[entry.slug], "test": dataset_of[entry.slug].test.take(settings.num_examples),
                   "params": checked["params"], "strategy": strategy}
            outcomes = {}
            for row in rows:
                done += 1
                result, reused, path = attack_once(job, row, settings, argv)
                computed_seconds += 0.0 if reused else result["seconds"]
                masked = bool(result["zero_gradient"] and attacks.get(row.attack).uses_gradient)
                outcome = outcomes[row.key] = aggregate.from_result(result, paper.THRESHOLDS[row.norm], masked)
                col["clean_accuracy"] = result["clean_accuracy"]
                col["attacks"][row.key] = {
                    "label": row.label, "accuracy": outcome.accuracy, "masked": masked,
                    "zero_gradient": result["zero_gradient"],
                    "median_distance": aggregate.finite_or_none(outcome.median_distance),
                    "kind": result["attack"]["kind"], "params": result["attack"]["params"],
                    "restarts": settings.restarts, "seconds": result["seconds"], "reused": reused,
                    "json": os.path.relpath(path, settings.output_dir)}
                log(f"[{done}/{total}] {col['label']} / {row.label}: accuracy {100 * outcome.accuracy:.1f}% at "
                    f"{paper.THRESHOLDS[row.norm]:g} (clean {100 * result['clean_accuracy']:.1f}%)"
                    + (" MASKED (zero gradient)" if masked else "")
                    + f"; {result['seconds']:.1f}s {'reused' if reused else 'computed'} -> {path}")
            summarize_column(col, rows, outcomes)
            columns.append(col)
    summary = {
        "schema": SCHEMA, "suite": "paper", "command": results.command(argv),
        "num_examples": settings.num_examples, "thresholds": paper.THRESHOLDS, "columns": columns,
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
    summary["pictures"] = draw_pictures(summary, models, dataset_of, settings, log)
    attack_seconds = sum(c["seconds"] for c in columns)
    summary["seconds"] = {"total": time.time() - start, "attacks_computed_now": computed_seconds,
                          "attacks_all": attack_seconds}
    md.write_json(os.path.join(settings.output_dir, "suite.json"), summary)
    log(f"paper suite done in {summary['seconds']['total']:.1f}s (attacks computed now: {computed_seconds:.1f}s; "
        f"all attack runs incl. reused: {attack_seconds:.1f}s) -> {os.path.join(settings.output_dir, 'suite.json')}")
    return summary


def draw_pictures(summary: dict, models: list[ModelEntry], dataset_of: dict, settings: EvalSettings, log) -> list[str]:
    """The pictures (`dim_tf.eval.pictures`) if matplotlib is installed: the curves, and for each DIM model the
    reconstruction grid and the t-SNE of its latent spaces. Returns the files written (relative paths)."""
    from dim_tf.eval import pictures

    if not pictures.available():
        log("matplotlib is not installed: pictures skipped (pip install -e '.[plots]'; then "
            f"`python -m dim_tf.eval.pictures --suite_dir {settings.output_dir} --model_dir DIR`)")
        return []
    written = [pictures.curves(summary, os.path.join(settings.output_dir, "curves.png"))]
    for entry in models:
        if entry.manifest["model"] == "dim":
            written += pictures.model_pictures(
                entry.model, dataset_of[entry.slug].test, settings.output_dir, entry.slug,
                tsne_examples=min(settings.num_examples, pictures.TSNE_EXAMPLES), seed=settings.seed)
    for path in written:
        log(f"picture -> {path}")
    return [os.path.relpath(p, settings.output_dir) for p in written]
