"""`python -m dim_tf.eval --suite adaptive --model_dir runs/dim --variant default,bi --output_dir DIR`: attacks
built for DIM and biDIM, the per-sample worst case over all of them, and sanity checks that expose gradient masking.

Per model variant and threat model (L-inf 0.3 and L2 1.5, the paper's thresholds; `--norm linf` or `--norm l2` runs
one of them, and the biCNN reference only comes with L-inf) a cascade, as in AutoAttack: each
attack runs only on the examples nothing before it broke (the main attack and the single-step one on every example):
  white-box   margin PGD (5 restarts, the main attack), for binarized variants through BPDA (straight-through
              backward pass) and once more through a sigmoid surrogate whose temperature is annealed; DLR PGD;
              targeted margin PGD against every wrong class; APGD on the DLR loss (2 random starts) and APGD-T
              toward every wrong class (own, `dim_tf.eval.attacks.apgd`); FAB-T toward every wrong class (own,
              `dim_tf.eval.attacks.fab`, minimum-norm); for binarized variants the pixel-flip search; for
              DIM-family models the feature attack (D(x) pushed toward a wrong class's reconstruction);
  single-step FGSM / FGM (through the same surrogate);
  black-box   Square (L-inf, L2), HopSkipJump (L-inf, L2), Boundary (L2), transfer from the undefended CNN and, for
              a binarized variant, from the same model without binarization.
Then a distance probe (margin PGD, and pixel flip for binarized variants, at L-inf 0.5 / L2 3.0 on what is still
unbroken there: the L-inf 0.5 accuracy is a sanity check, and both give distances for the medians), and the
strongest white-box attack with twice the steps and restarts on the unbroken examples among the first
SANITY_EXAMPLES (a sanity check).
`--budget` scales every step, query, round and restart count (at least 1).

Every adversarial any attack returns (at any eps) is verified on the exact model (forward pass with the true 0.5
threshold), moved by foolbox's BinarizationRefinementAttack to the closest point with the same binarized input
(binarized variants), and pooled: per sample, the smallest verified adversarial distance. After the probe each
pooled adversarial is shrunk by a line search toward x. Worst-case accuracy at eps = correct and no pooled
adversarial within eps; median distance over all N (0: misclassified clean, inf: never broken; inf when half or
more are never broken).

Output in --output_dir: `adaptive.json` (schema dim_tf.eval.adaptive/1: per variant and norm the cascade, per-sample
worst case, medians, sanity checks, paper-protocol numbers found for the same model, seconds) and `adaptive.md`,
both written atomically, plus one runner JSON per attack run under `attacks/`.
"""

from __future__ import annotations

# The suite's parts, one job each: `settings` (what it accepts), `planning` (targets and their cascades), `cascade`
# (running, verifying and pooling), `report` (adaptive.md and the verdicts); the paper-protocol numbers already on
# disk come from `dim_tf.eval.results.protocol_numbers`. This module runs them in order.

import json
import os
import time

import numpy as np

from dim_tf.eval import sanity
from dim_tf.eval.settings import EvalSettings
from dim_tf.eval.suites.adaptive import cascade, planning, report as reporting
from dim_tf.eval.suites.adaptive.planning import BANK_PER_CLASS, LINF, PROBES, THRESHOLDS
from dim_tf.eval.suites.adaptive.settings import validate

SCHEMA = "dim_tf.eval.adaptive/1"


def find_undefended(settings: EvalSettings, model_dir: str) -> str | None:
    """--undefended_dir, else a sibling cnn6/ or cnn/ of the first model dir holding a finished CNN run."""
    if settings.undefended_dir:
        return settings.undefended_dir
    parent = os.path.dirname(os.path.abspath(model_dir))
    for name in ("cnn6", "cnn"):
        path = os.path.join(parent, name)
        try:
            with open(os.path.join(path, "manifest.json")) as f:
                if json.load(f).get("model") == "cnn":
                    return path
        except (OSError, json.JSONDecodeError):
            continue
    return None


def run(settings: EvalSettings, argv=None, log=print) -> dict:
    """Runs the suite (see the module doc); writes adaptive.json and adaptive.md; returns the report. `argv`: the
    command line the report records."""
    checked = validate(settings)
    from dim_tf import data, distribute, model_dir as md
    from dim_tf.eval import results

    start = time.time()
    strategy = distribute.strategy_from_flag(settings.strategy)
    out_dir = settings.output_dir or os.path.join(checked["dirs"][0], "eval", "adaptive")
    results.check_writable(os.path.join(out_dir, "adaptive.json"))
    command = results.command(argv)
    undefended_dir = find_undefended(settings, checked["dirs"][0])
    undefended = None
    if undefended_dir:
        with strategy.scope():
            undefended, undefended_manifest = md.load(undefended_dir)
        log(f"adaptive suite: undefended CNN {undefended_dir}")
    else:
        log("adaptive suite: no undefended CNN found (--undefended_dir): no transfer from it, no no-defense check, "
            "no biCNN reference")
    models, checks, seconds = [], [], {}
    dataset = None
    for model_dir in checked["dirs"]:
        with strategy.scope():
            model, manifest = md.load(model_dir)
        dataset = data.load(manifest.get("dataset", "mnist"), data.data_dir_for(settings.data_dir, manifest))
        test = dataset.test.take(settings.num_examples)
        x, y = test.images, test.labels
        bank_idx = np.concatenate([np.flatnonzero(dataset.validation.labels == c)[:BANK_PER_CLASS]
                                   for c in range(10)])
        bank = (dataset.validation.images[bank_idx], dataset.validation.labels[bank_idx])
        for variant in checked["variants"]:
            with strategy.scope():
                target = planning.make_target(model_dir, model, manifest, variant, x[:min(len(x), 64)])
            sources = [(f"undefended CNN ({os.path.basename(os.path.normpath(undefended_dir))})", undefended, 100)] \
                if undefended is not None else []
            if target.binarized:
                sources.append((f"{manifest.get('model')} without binarization", model, 50))
            log(f"== {target.name} ({model_dir}): {len(x)} examples, budget {settings.budget:g}")
            entry = cascade.evaluate(target, x, y, settings, out_dir, dataset, argv, log, sources, bank,
                                     norms=checked["norms"], strategy=strategy)
            entry["protocol"] = results.protocol_numbers(model_dir, variant, out_dir)
            checks += entry["sanity"]
            seconds[target.name] = entry["seconds"]
            models.append(entry)
    references = {"published_linf_0.3": reporting.PUBLISHED, "verdicts": []}
    if undefended is not None:
        test = dataset.test.take(settings.num_examples)
        cnn = planning.make_target(undefended_dir, undefended, undefended_manifest, "default", test.images[:64])
        run_cnn = cascade.Cascade(cnn, test.images, test.labels, LINF, settings, out_dir, dataset, argv, log,
                                  strategy)
        main = planning.plan(cnn, LINF, settings.budget, [], None)[0]
        log(f"== without defense: {main.label} on {cnn.name} at L-inf 0.3")
        rec = run_cnn.run(main, THRESHOLDS[LINF], np.flatnonzero(run_cnn.correct))
        references["without_defense"] = {"model_dir": results.shown_path(undefended_dir), "attack": main.label,
                                         "accuracy": run_cnn.pool.accuracy(THRESHOLDS[LINF]),
                                         "seconds": rec["seconds"]}
        checks.append(sanity.without_defense(f"{cnn.name} linf 0.3", references["without_defense"]["accuracy"]))
        if any(m["variant"] == "bi" for m in models) and LINF in checked["norms"]:
            bicnn = planning.make_target(undefended_dir, undefended, undefended_manifest, "bi", test.images[:64])
            log(f"== reference: {bicnn.name}, the L-inf 0.3 cascade")
            sources = [(f"{bicnn.manifest.get('model')} without binarization", undefended, 100)]
            ref = cascade.evaluate(bicnn, test.images, test.labels, settings, out_dir, dataset, argv, log, sources,
                                   None, checks=False, norms=(LINF,), strategy=strategy)
            references["bicnn"] = {"model_dir": results.shown_path(undefended_dir),
                                   "accuracy": ref["norms"]["linf"]["accuracy"],
                                   "white_box_accuracy": ref["norms"]["linf"]["white_box_accuracy"],
                                   "clean_accuracy": ref["clean_accuracy"], "seconds": ref["seconds"],
                                   "cascade": ref["norms"]["linf"]["cascade"]}
            seconds[bicnn.name + " (reference)"] = ref["seconds"]
    else:
        checks.append(sanity.skipped("without_defense", "-", "no undefended CNN (--undefended_dir)"))
    references["verdicts"] = reporting.verdicts(models, references.get("bicnn"))
    seconds["total"] = time.time() - start
    report = {"schema": SCHEMA, "suite": "adaptive", "command": command, "num_examples": settings.num_examples,
              "seed": settings.seed, "budget": settings.budget, "output_dir": results.shown_path(out_dir),
              "thresholds": {n.value: e for n, e in THRESHOLDS.items()},
              "probes": {n.value: e for n, e in PROBES.items()}, "models": models,
              "sanity": [c.to_json() for c in checks], "references": references, "seconds": seconds,
              "undefended_dir": results.shown_path(undefended_dir) if undefended_dir else None,
              "conventions": __doc__.strip(), "versions": md.library_versions(),
              "written": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    for m in report["models"]:
        m["sanity"] = [c.to_json() for c in m["sanity"]]
    results.write_report(os.path.join(out_dir, "adaptive.json"), report, reporting.render)
    log("sanity checks:")
    for c in checks:
        log("  " + c.line())
    for v in references["verdicts"]:
        log(v)
    log("seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items()))
    log(f"adaptive suite -> {os.path.join(out_dir, 'adaptive.json')}, adaptive.md")
    return report

