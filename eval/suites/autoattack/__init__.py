"""`python -m dim_tf.eval --suite autoattack --model_dir DIR [--variant default,bi] --norm linf,l2`: AutoAttack
(Croce & Hein 2020), the community's standard evaluation, through ART, beside the adaptive suite.

Per model variant and norm (L-inf 0.3, L2 1.5: the adaptive suite's thresholds) the standard version's cascade on
the first N test images: APGD-CE (100 iterations), APGD-T (targeted DLR, 100 iterations, the 9 most likely wrong
classes), FAB-T (targeted, 100 iterations, 9 classes) and Square (5,000 queries), each on what the ones before it
left. APGD and Square are ART's (`art_attacks`, one shim for Square's L2 window), FAB-T is the suite's own
(`fab`: ART has none). DIM-family scores are multiplied by the training temperature for the cross-entropy
(`targets.logit_scale`). Binarized variants (`bi`) are differentiated through the straight-through BPDA surrogate
(`--bi_gradient sigmoid` for the sigmoid one) and every adversarial, of every attack, counts only once the exact
model misclassifies it inside [0, 1] and the eps-ball. A model the gradient attacks would see no gradient through is
refused before any attack.

With an adaptive suite report of the same weights (found by weights fingerprint, or named with --adaptive_report),
each norm also gives the adaptive accuracy, the per-sample worst case of the two, and the images each broke that the
other missed (`merge`).

Output (`--output`, default MODEL_DIR/eval/autoattack/autoattack.json): the JSON (schema dim_tf.eval.autoattack/1)
and autoattack.md beside it, both written atomically; no absolute path in either. A cascade the report already at
--output holds for the same weights and settings is kept, not attacked again (`reuse`): rerunning the command once
an adaptive report exists only redoes the comparison.
"""

from __future__ import annotations

# One job per module: `settings` (what the suite accepts: AutoAttackConfig), `targets` (the model variant, its
# surrogate, logits and fingerprint; the gradient check), `art_attacks` (ART's APGD and Square), `fab` (FAB-T),
# `cascade` (the attacks in order, verified on the exact model), `merge` (the adaptive suite's report), `reuse` (a
# cascade already at --output), `report` (autoattack.md). This module runs them in order.

import os
import time

from dim_tf.eval.settings import EvalSettings
from dim_tf.eval.suites.autoattack.settings import AutoAttackConfig, validate

SCHEMA = "dim_tf.eval.autoattack/1"
GRADIENT_PROBE_IMAGES = 16
SHIMS = ["ART's SquareAttack (1.20.1), L2: the new window is scaled by 1/sqrt(budget) instead of sqrt(budget) (an "
         "operator-precedence slip; it wipes the perturbation built so far and makes NaN images when the budget is "
         "0); the suite runs ART's own `generate` with that expression corrected (art_attacks.py)",
         "FAB-T: not in ART (its AutoAttack substitutes DeepFool); the suite's own (eval/attacks/fab.py)"]


def run(settings: EvalSettings, argv=None, log=print) -> dict:
    """Runs the suite from the command line's settings (see the module doc); returns the report."""
    return run_config(validate(settings), argv, log)


def run_config(config: AutoAttackConfig, argv=None, log=print) -> dict:
    """Loads every model variant and checks its gradient and its adaptive report first, then attacks; writes the
    JSON and the markdown report; returns the report (with each norm's `adversarials` kept in memory only)."""
    from dim_tf import data, model_dir as md
    from dim_tf.eval import results
    from dim_tf.eval.suites.autoattack import art_attacks, cascade, merge, report as reporting, reuse, targets

    start = time.time()
    output = config.output_path()
    results.check_writable(output)
    attacks = {name: {"source": cascade.ATTACKS[name][2], "params": params}
               for name, params in cascade.parameters(config).items()}
    versions = {**md.library_versions(), art_attacks.PACKAGE: _art_version()}
    kept = reuse.previous(output, SCHEMA, {"num_examples": config.num_examples, "seed": config.seed,
                                           "budget": config.budget, "attacks": attacks}, versions[art_attacks.PACKAGE])
    jobs = []
    for model_dir in config.model_dirs:
        model, manifest = md.load(model_dir)
        dataset = data.load(manifest.get("dataset", "mnist"), data.data_dir_for(config.data_dir, manifest))
        test = dataset.test.take(config.num_examples)
        for variant in config.variants:
            target = targets.make(model_dir, model, manifest, variant, config.surrogate)
            n = min(len(test), GRADIENT_PROBE_IMAGES)
            targets.check_gradient(target, test.images[:n], test.labels[:n])
            matches = {norm: merge.find(target, norm, config.adaptive_report) for norm in config.norms}
            jobs.append((target, test, matches))
    models, seconds = [], {}
    for target, test, matches in jobs:
        entry = {"model": target.folder, "model_dir": results.shown_path(target.model_dir),
                 "manifest_model": target.manifest.get("model"), "variant": target.variant,
                 "variant_name": target.name, "surrogate": target.surrogate, "logit_scale": target.logit_scale,
                 "weights_fingerprint": target.fingerprint, "norms": {}}
        for norm in config.norms:
            result = reuse.norm_result(kept, target, norm)
            if result is None:
                result = cascade.evaluate(target, test.images, test.labels, norm, config, log)
            else:
                log(f"{target.name} {norm.value}: the cascade on weights {target.fingerprint} is kept from "
                    f"{results.shown_path(output)} (written {result['reused']['written']}): "
                    f"{100 * result['accuracy']:.1f}%; only the comparison with the adaptive suite is redone")
            result["adaptive"] = merge.compare(norm, result, *matches[norm])
            entry["norms"][norm.value] = result
            entry["clean_accuracy"] = result["clean_accuracy"]
            seconds[f"{target.name} ({target.folder}) {norm.value}"] = result["seconds"]
        entry["seconds"] = sum(n["seconds"] for n in entry["norms"].values())
        models.append(entry)
    seconds["total"] = time.time() - start
    report = {"schema": SCHEMA, "suite": "autoattack", "command": results.command(argv),
              "num_examples": config.num_examples, "images": {"split": "test", "first": 0,
                                                              "count": config.num_examples},
              "seed": config.seed, "budget": config.budget, "norms": [n.value for n in config.norms],
              "thresholds": {n.value: config.eps(n) for n in config.norms},
              "attacks": attacks,
              "shims": SHIMS, "models": models, "seconds": seconds, "conventions": __doc__.strip(),
              "versions": versions,
              "written": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    stored = {**report, "models": [{**m, "norms": {k: {f: v for f, v in n.items() if f != "adversarials"}
                                                   for k, n in m["norms"].items()}} for m in models]}
    markdown = results.write_report(output, stored, reporting.render)
    log("seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items()))
    log(f"autoattack suite -> {results.shown_path(output)}, {os.path.basename(markdown)}")
    return report


def _art_version() -> str:
    from importlib.metadata import version

    from dim_tf.eval.suites.autoattack.art_attacks import PACKAGE

    return version(PACKAGE)
