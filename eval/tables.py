"""The paper's Tables 1 and 2 as markdown, from a paper-suite summary (`suite.json`), our number beside the
paper's in each cell: `93.4 (paper 93)`; "All" rows `median distance/accuracy`."""

from __future__ import annotations

import math

from dim_tf.eval import paper_numbers as paper

DAGGER = "\u2020"
MASKED_NOTE = (f"{DAGGER} gradient masked: the attack needs the input gradient and saw zero (the exact binarization "
               "has none), so the number is only an upper bound, not robustness; derived cells (All, minimal) carry "
               "the mark when any of their attacks does. The binarized variants' real robustness: "
               "`python -m dim_tf.eval --suite adaptive` (BPDA, decision-based attacks).")


def _distance(value: float | None) -> str:
    return "\u221e" if value is None or math.isinf(value) else f"{value:.3g}"


def _percent(value: float) -> str:
    return f"{100 * value:.1f}"


def _paper_cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, tuple):
        return f" (paper {value[0]:g}/{value[1]:g})"
    return f" (paper {value:g})"


def columns_of(summary: dict, table: int) -> list[dict]:
    """The suite's model variants that are columns of `table` (1 or 2), in the paper's column order."""
    order = paper.TABLE1_COLUMNS if table == 1 else paper.TABLE2_COLUMNS
    chosen = [c for c in summary["columns"] if c["column"] in order]
    return sorted(chosen, key=lambda c: order.index(c["column"]))


def render(summary: dict, table: int) -> str | None:
    """Markdown of Table `table` (1 or 2) for the suite's variants that are its columns; None if there are none."""
    numbers = paper.TABLE1 if table == 1 else paper.TABLE2
    order = paper.TABLE1_COLUMNS if table == 1 else paper.TABLE2_COLUMNS
    cols = columns_of(summary, table)
    if not cols:
        return None
    thresholds = summary["thresholds"]
    any_masked = False

    n = summary["num_examples"]
    any_short = False

    def count(got_n: int | None) -> str:
        """' [n=100]' for a result on fewer images than the table's N (a cell not extended yet)."""
        nonlocal any_short
        if got_n is None or got_n >= n:
            return ""
        any_short = True
        return f" [n={got_n}]"

    def cell(col: dict, key: str) -> str:
        nonlocal any_masked
        reference = numbers.get(key, {}).get(col["column"])
        if key == "clean":
            about = paper.CLEAN_ABOUT.get(col["column"])
            clean = col.get("clean_accuracy")
            return ("not run" if clean is None else _percent(clean) + count(col.get("clean_n"))) + (
                f" (paper ~{about})" if about else "")
        if key == "minimal":
            got = col.get("minimal")
        elif key.startswith("all:"):
            got = col["all"].get(key[4:])
        else:
            got = col["attacks"].get(key)
        if got is None:
            return ("missing" if key in col.get("missing", ()) else "not run") + _paper_cell(reference)
        mark = DAGGER if got["masked"] else ""
        any_masked |= got["masked"]
        ours = _percent(got["accuracy"]) + mark
        if key.startswith("all:"):
            ours = f"{_distance(got['median_distance'])}/{ours}"
        partial = f" [{got['rows_missing']} missing]" if got.get("rows_missing") else ""
        return ours + count(got.get("n")) + partial + _paper_cell(reference)

    header = ["attack"] + [c["label"] for c in cols]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]

    def add(label: str, key: str) -> None:
        lines.append("| " + " | ".join([label] + [cell(c, key) for c in cols]) + " |")

    add("clean accuracy", "clean")
    for norm in paper.NORM_ORDER:
        name = paper.NORM_LABELS[norm]
        lines.append(f"| **{name} (threshold {thresholds[norm]:g})** |" + " |" * len(cols))
        for row in paper.ROWS:
            if row.norm == norm:
                add(row.label, row.key)
        add(f"All {name} attacks: median distance/accuracy", f"all:{norm}")
    if table == 1:
        add("Minimal accuracy (over the attacks run)", "minimal")

    missing = [c for c in order if c not in {col["column"] for col in cols}]
    title = ("Table 1: robustness against the paper's attacks" if table == 1 else
             "Table 2: ablations (same protocol)")
    notes = [
        f"# {title}",
        "",
        f"Accuracy (%) on the first {n} MNIST test images when perturbations are bounded by L2 "
        f"{thresholds['l2']:g}, L-inf {thresholds['linf']:g}, L0 {thresholds['l0']:g} pixels, L1 "
        f"{thresholds['l1']:g}; ours first, the paper's in parentheses (its test images and models, foolbox "
        "3.2.1). Binarized variants use the exact binarization, as the paper did.",
        "",
        f"Command: `{summary['command']}`",
        "",
        *lines,
        "",
    ]
    if any_masked:
        notes += [MASKED_NOTE, ""]
    notes += [
        "All rows: per sample the worst case over that norm's attacks run here (broken if any attack broke it "
        "within the threshold). Median distance: over all samples, 0 where the clean image is misclassified, "
        "\u221e where no attack found an adversarial; each sample's distance is the smallest adversarial any "
        "attack found (minimal attacks at any size, bounded ones at their actual size within the threshold), so "
        "it is an upper bound. The paper's All rows and minimal accuracy cover its 42 attacks, ours only the rows "
        "shown" + (" (Table 2 in the paper prints no medians)." if table == 2 else "."),
    ]
    if any(len(c["attacks"]) < len(paper.ROWS) for c in cols):
        notes.append("\"not run\": the row has no stored cell and was not asked for (`--attack` restricted the "
                     "suite, or the model's row selection in `dim_tf.eval.suites.paper.ROWS_BY_COLUMN` excludes "
                     "it); \"missing\": asked for, but the run's `--max_minutes` ended before it; an All or "
                     "minimal cell marked [k missing] leaves out k such rows.")
    if any_short:
        notes.append(f"[n=K]: computed on the first K test images only so far (the cell is extended to {n} by a "
                     "later run: the suite lists what is missing and its cost); All rows and the minimal accuracy "
                     "are over the first K images every row of theirs has.")
    if missing:
        notes.append(f"Paper columns not evaluated here: {', '.join(missing)} (pass their model dirs to "
                     "`--models`).")
    return "\n".join(notes) + "\n"
