"""The AutoAttack suite's Markdown report (`autoattack.md`, rendered from `autoattack.json` as written)."""

from __future__ import annotations

from dim_tf.eval.results import by_threat_model
from dim_tf.eval.suites.autoattack.art_attacks import PACKAGE

NORM_LABELS = {"linf": "L-inf", "l2": "L2"}


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _adaptive_cells(a: dict | None) -> list[str]:
    if not a or not a.get("matched"):
        return ["-", "-", "-"]
    return [_pct(a["adaptive_accuracy"]), _pct(a["worst_case_accuracy"]),
            f"{len(a['autoattack_only'])} / {len(a['adaptive_only'])}"]


def render(report: dict) -> str:
    """autoattack.md: summary table (AutoAttack, adaptive, per-sample worst case), per-attack tables, the match with
    the adaptive suite, the shims, seconds and the command."""
    norms = report["norms"]
    head = ["model", "clean"]
    for norm in norms:
        label = f"{NORM_LABELS[norm]} {report['thresholds'][norm]:g}"
        head += [f"{label} AutoAttack", f"{label} adaptive", f"{label} worst case", f"{label} AA only / adaptive only"]
    lines = [f"# AutoAttack ({report['num_examples']} test images, seed {report['seed']}, budget {report['budget']:g})",
             "",
             "AutoAttack's standard version (APGD-CE, APGD-T, FAB-T, Square "
             f"{report['attacks']['square']['params']['queries']} queries), each attack on what the ones before it "
             "left; robust accuracy on the first test images. Every adversarial is moved into [0, 1] and the eps-ball "
             "and verified on the exact model; binarized variants are attacked through the "
             "BPDA surrogate named in their row. \"adaptive\": the adaptive suite's worst case on the same images "
             "(the first min(N, its N)); \"worst case\": robust to both, per image; \"AA only / adaptive only\": "
             "images one broke that the other missed.", "",
             "| " + " | ".join(head + ["seconds", "s / image"]) + " |", "|" + "---|" * (len(head) + 2)]
    for m in report["models"]:
        cells = [f"{m['variant_name']} ({m['model']})" + (f", BPDA {m['surrogate']}" if m["surrogate"] else ""),
                 _pct(m["clean_accuracy"])]
        for norm in norms:
            n = m["norms"].get(norm)
            cells += [_pct(n["accuracy"]) if n else "-"] + _adaptive_cells(n and n.get("adaptive"))
        per_image = sum(n["seconds_per_image"] for n in m["norms"].values())
        lines.append("| " + " | ".join(cells + [f"{m['seconds']:.0f}", f"{per_image:.2f}"]) + " |")
    lines += ["", "## Beside the adaptive suite", ""]
    for m in report["models"]:
        for norm, n in by_threat_model(m["norms"]):
            a = n.get("adaptive") or {}
            subject = f"{m['variant_name']} ({m['model']}) {NORM_LABELS[norm]}"
            if not a.get("matched"):
                lines.append(f"- {subject}: {a.get('note', 'not compared')}")
                continue
            lines.append(
                f"- {subject}: `{a['file']}` ({a['note']}; adaptive run on {a['adaptive_num_examples']} images, "
                f"budget {a['adaptive_budget']}); compared on the first {a['num_examples']} images: AutoAttack "
                f"{_pct(a['autoattack_accuracy'])}, adaptive {_pct(a['adaptive_accuracy'])}, worst case "
                f"{_pct(a['worst_case_accuracy'])}; AutoAttack alone broke {a['autoattack_only'] or 'none'}, the "
                f"adaptive suite alone {a['adaptive_only'] or 'none'}"
                + ("" if a.get("clean_agreement") in (None, 1.0) else
                   f"; WARNING: the clean predictions agree on only {_pct(a['clean_agreement'])} of the images"))
    lines += ["", "## Per attack", ""]
    for m in report["models"]:
        for norm, n in by_threat_model(m["norms"]):
            lines += [f"### {m['variant_name']} ({m['model']}) {NORM_LABELS[norm]} {n['eps']:g}: "
                      f"{_pct(n['accuracy'])} (clean {_pct(n['clean_accuracy'])}), {n['seconds']:.0f}s"
                      + (f" (kept from the run written {n['reused']['written']}: `{n['reused']['command']}`)"
                         if n.get("reused") else ""), "",
                      "| attack | attacked | broke | unverified | accuracy after | seconds |",
                      "|---|---|---|---|---|---|"]
            for r in n["attacks"]:
                lines.append(f"| {r['attack']} | {r['attacked']} | {r['broken']} | {r['unverified']} | "
                             f"{_pct(r['accuracy_after'])} | {r['seconds']:.0f} |")
            lines.append("")
    lines += ["## The attacks", ""]
    for name, a in report["attacks"].items():
        params = ", ".join(f"{k} {v}" for k, v in a["params"].items())
        lines.append(f"- {name}: {a['source']}; {params}")
    lines += [f"- logits: DIM-family scores x their training temperature (`score_temperature`) for the cross-entropy "
              f"(DLR, FAB and Square are scale-free); CNN outputs as they are", ""]
    for shim in report["shims"]:
        lines.append(f"- shim: {shim}")
    seconds = ", ".join(f"{k} {v:.0f}s" for k, v in report["seconds"].items())
    lines += ["", f"Seconds: {seconds}. ART {report['versions'].get(PACKAGE, '?')}.",
              f"Command: `{report['command']}`", ""]
    return "\n".join(lines)
