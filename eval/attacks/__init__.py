"""The attack table: one row per attack (name, norms, function), gathered from one module per attack family.

Families: `gradient` (FGSM/FGM, PGD, BIM, MIM), `optimization` (Carlini-Wagner L2), `score_based` (SPSA), and
from foolbox 3.3.4: `minimization` (DDN, DeepFool, Brendel-Bethge), `decision` (Boundary, HopSkipJump, Pointwise),
`noise` (additive Gaussian / uniform noise); own: `adaptive` (margin, DLR and targeted PGD on the scores, EOT),
`apgd` (APGD and APGD-T on the DLR loss), `fab` (FAB-T), Square in `score_based`.
`python -m dim_tf.eval --attack list` prints the table.
"""

from __future__ import annotations

from dim_tf.eval.attacks import adaptive, apgd, decision, fab, gradient, minimization, noise, optimization, score_based
from dim_tf.eval.attacks.base import Attack
from dim_tf.eval.threat import EvalError, ThreatModel

FAMILIES = (gradient, optimization, score_based, minimization, decision, noise, adaptive, apgd, fab)
ATTACKS: dict[str, Attack] = {row.name: row for family in FAMILIES for row in family.ROWS}

__all__ = ["ATTACKS", "Attack", "get", "table", "norms_covered"]


def get(name: "str | Attack") -> Attack:
    """The row named `name`, or `EvalError` listing the names."""
    if isinstance(name, Attack):
        return name
    if name not in ATTACKS:
        raise EvalError(f"unknown attack {name!r}; choose one of {', '.join(ATTACKS)} (`--attack list` describes them)")
    return ATTACKS[name]


def norms_covered() -> set[ThreatModel]:
    return {n for row in ATTACKS.values() for n in row.norms}


def table() -> str:
    """The table as text, one attack per line."""
    w = max(len(name) for name in ATTACKS)
    lines = [f"{'attack':{w}} {'family':13} {'norms':13} {'kind':8} description / code"]
    for row in ATTACKS.values():
        lines.append(f"{row.name:{w}} {row.family:13} {','.join(n.value for n in row.norms):13} {row.kind:8} "
                     f"{row.description}")
        lines.append(f"{'':{w + 38}} code: {row.source}; defaults: "
                     + (", ".join(f"{k}={v}" for k, v in row.defaults.items()) or "none"))
    missing = [n.value for n in ThreatModel if n not in norms_covered()]
    if missing:
        lines.append(f"no attack covers: {', '.join(missing)} (yet)")
    return "\n".join(lines)
