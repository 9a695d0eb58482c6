"""The adaptive suite's Markdown report (`adaptive.md`, rendered from `adaptive.json` as written) and its
verdicts against the published reference points."""

from __future__ import annotations

from dim_tf.eval.results import by_threat_model

# Published reference points at L-inf 0.3 (Schott et al. 2019, "Towards the first adversarially robust neural network
# model on MNIST", their accuracy-vs-eps curves).
PUBLISHED = {"binarized CNN (ABS paper)": 0.63, "binary ABS (ABS paper)": 0.77}


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _dist(value) -> str:
    return "inf" if value is None else f"{value:.3g}"


def render(report: dict) -> str:
    """adaptive.md: summary table, protocol numbers, references, sanity checks, cascades."""
    lines = [f"# Adaptive evaluation ({report['num_examples']} test images, seed {report['seed']}, budget "
             f"{report['budget']:g})", "",
             "Worst case per sample over every attack below (verified on the exact model); accuracy at the paper's "
             "thresholds, median adversarial distance over all examples (inf: half or more never broken).", "",
             "| model | clean | L-inf 0.3 worst case | median L-inf | L2 1.5 worst case | median L2 | paper protocol "
             "(same model) | seconds |", "|---|---|---|---|---|---|---|---|"]
    for m in report["models"]:
        proto = []
        for p in m["protocol"]:
            if p["source"] == "paper suite" and p["attack"].startswith("all") or p["source"] == "single attack":
                grad = f", {p['bi_gradient']}" if p.get("bi_gradient") and p["bi_gradient"] != "exact" else ""
                masked = " (zero gradient: masked)" if p.get("zero_gradient") else ""
                proto.append(f"{p['norm']} {p['attack']}{grad}: {_pct(p['accuracy'])}{masked} "
                             f"(n={p.get('num_examples')})")
        li, l2 = m["norms"].get("linf", {}), m["norms"].get("l2", {})
        lines.append(f"| {m['variant_name']} | {_pct(m['clean_accuracy'])} | {_pct(li.get('accuracy'))} | "
                     f"{_dist(li.get('median_distance'))} | {_pct(l2.get('accuracy'))} | "
                     f"{_dist(l2.get('median_distance'))} | {'; '.join(proto) or 'none found'} | {m['seconds']:.0f} |")
    lines += ["", "Paper-protocol numbers (same model dir and variant) were read from: " + (", ".join(sorted({
        p["file"] for m in report["models"] for p in m["protocol"]})) or
        "no JSON found (run `--suite paper` or single attacks first)") + ".", "",
        "The worst case counts every verified adversarial found, also at the probe eps (L-inf 0.5, L2 3.0) once "
        "refined and line-searched toward x; the cascade accuracy is what the attacks run at the threshold left.",
        ""]
    ref = report.get("references") or {}
    lines += ["## Reference points (L-inf 0.3)", ""]
    for label, acc in PUBLISHED.items():
        lines.append(f"- {label}: {100 * acc:.0f}%")
    if ref.get("bicnn"):
        lines.append(f"- biCNN here ({ref['bicnn']['model_dir']}), same L-inf cascade: "
                     f"{_pct(ref['bicnn']['accuracy'])}")
    if ref.get("without_defense"):
        lines.append(f"- undefended CNN, main attack: {_pct(ref['without_defense']['accuracy'])}")
    for verdict in ref.get("verdicts", []):
        lines.append(f"- **{verdict}**")
    lines += ["", "## Sanity checks", ""]
    for check in report["sanity"]:
        lines.append(f"- {check['status']} `{check['name']}` [{check['subject']}]: {check['value']} (limit "
                     f"{check['limit']})" + (f"; {check['note']}" if check["note"] else ""))
    for m in report["models"]:
        lines += ["", f"## {m['variant_name']}" + (" (random at test time: EOT over "
                                                     f"{m['eot_samples']} draws)" if m["stochastic"] else
                                                     " (deterministic at test time: no EOT needed)"), ""]
        for norm, n in by_threat_model(m["norms"]):
            lines += [f"### {norm} {n['eps']:g}: worst case {_pct(n['accuracy'])} (cascade at {n['eps']:g}: "
                      f"{_pct(n['cascade_accuracy'])}), median distance "
                      f"{_dist(n['median_distance'])}" + (f", accuracy at {n['probe_eps']:g}: "
                                                          f"{_pct(n['accuracy_at_probe'])}" if n["probe_eps"] else ""),
                      "", "| attack | group | eps | attacked | broke | new | accuracy after | seconds |",
                      "|---|---|---|---|---|---|---|---|"]
            for r in n["cascade"] + n["probe"] + ([n["doubled"]] if n["doubled"] else []):
                lines.append(f"| {r['label']} | {r['group']} | {r['eps']:g} | {r['attacked']} | {r.get('broken', 0)} "
                             f"| {r.get('newly_broken', 0)} | {_pct(r.get('accuracy_after'))} | "
                             f"{r.get('seconds', 0):.0f} |")
            lines.append("")
    lines += ["", f"Total {report['seconds']['total']:.0f}s. Command: `{report['command']}`", ""]
    return "\n".join(lines)


def verdicts(models: list[dict], bicnn: dict | None) -> list[str]:
    out = []
    for m in models:
        acc = m["norms"].get("linf", {}).get("accuracy")
        if not m["variant"] == "bi" or acc is None:
            continue
        for label, ref in PUBLISHED.items():
            out.append(f"{m['variant_name']} {100 * acc:.1f}% at L-inf 0.3 (adaptive worst case) "
                       f"{'beats' if acc > ref else 'does not beat'} the {label} ({100 * ref:.0f}%)")
        if bicnn:
            gap = acc - bicnn["accuracy"]
            verdict = "beats" if gap > 0 else "does NOT beat"
            if abs(gap) < 0.01:
                verdict += " (within 1 point: on par with)"
            out.append(f"{m['variant_name']} {100 * acc:.1f}% vs biCNN {100 * bicnn['accuracy']:.1f}% under the same "
                       f"L-inf 0.3 cascade: {m['variant_name']} {verdict} the binarized CNN")
    return out

