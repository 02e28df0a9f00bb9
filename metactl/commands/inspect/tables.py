"""The report's tables as (title, headers, rows): printed in the terminal and rendered in HTML alike."""

from __future__ import annotations

from metactl.interference import is_cosine
from metactl.layer_grid import MODULE_KINDS
from metactl.score_parts import HEADLINE_PARTS
from metactl.tables import render_table

Table = tuple[str, list[str], list[list[str]]]


def _f(x: float, signed: bool = False) -> str:
    return f"{x:+.3f}" if signed else f"{x:.3f}"


def decision_table(report: dict, label: str) -> Table:
    d = report["decisions"][label]
    groups = report["layer_groups"]
    headers = ["phase", "tool", "steps", "share"] + [f"train {k} g{g}" for k in MODULE_KINDS for g in range(groups)] + \
        [f"output {k} g{g}" for k in MODULE_KINDS for g in range(groups)]
    # A column for merges only where the schedule merges (or the policy could have): most never do.
    merges = any(p.get("merge") for p in d["phases"]) or d.get("merge_decided", False)
    headers += ["merged after"] if merges else []
    rows = []
    for p in d["phases"]:
        merged = (p.get("merge") or {}).get("tools", [])
        for t, c in p["tools"].items():
            rows.append(
                [str(p["phase"]), t, str(p["tool_steps"].get(t, 0)), f"{c['share']:.2f}"]
                + [f"{v:.2f}" for row in c["train"] for v in row]
                + [f"{v:.2f}" for row in c["output"] for v in row]
                + (["yes" if t in merged else "-"] if merges else [])
            )
    return (
        f"Decisions: {label} on task {report['task_seed']} (train = x base learning rate, output = x adapter scale)",
        headers,
        rows,
    )


def learning_table(report: dict) -> Table:
    lr = report["learning"]
    c = lr["curve"]
    rows = []
    n = len(c["episode"])
    if n:
        k = max(1, n // 4)
        for name, sl in (("first quarter of training", slice(0, k)), ("last quarter of training", slice(n - k, n))):
            rows.append(
                [name, f"{len(c['episode'][sl])} episodes"]
                + [_f(sum(c[p][sl]) / len(c[p][sl])) for p in HEADLINE_PARTS]
            )
    for label, b in lr["baselines"].items():
        rows.append([f"{label} (held-out)", f"{b['tasks']} tasks"] + [_f(b[p]) for p in HEADLINE_PARTS])
    return (
        "Learning: training episodes (drawn training tasks) vs methods on the held-out tasks",
        ["what", "n"] + list(HEADLINE_PARTS),
        rows,
    )


def attribution_tables(report: dict) -> list[Table]:
    out = []
    for label, a in report["attribution"].items():
        rows = [["total change (final - base)"] + [_f(a["total_change"][p], True) for p in HEADLINE_PARTS]]
        rows += [
            [f"tool {t} (Shapley)"] + [_f(v[p], True) for p in HEADLINE_PARTS] for t, v in a["tools"]["shapley"].items()
        ]
        rows += [
            [f"layer group {g} (Shapley)"] + [_f(v[p], True) for p in HEADLINE_PARTS]
            for g, v in a["groups"]["shapley"].items()
        ]
        rows += [
            [f"{tg} (leave one out)"] + [_f(v[p], True) for p in HEADLINE_PARTS] for tg, v in a["tool_groups"].items()
        ]
        rows += [
            [f"{ph} training (leave one out, retrained)"] + [_f(v[p], True) for p in HEADLINE_PARTS]
            for ph, v in a.get("phases", {}).items()
        ]
        out.append(
            (
                (
                    f"Attribution: {label} (score each part owes to each tool, group and phase; "
                    f"Shapley sums to the total, gap {a['efficiency_gap']:.1e})"
                ),
                ["who"] + list(HEADLINE_PARTS),
                rows,
            )
        )
    return out


def order_table(report: dict) -> Table:
    o = report["order"]
    rows = [["as the policy ran it"] + [_f(o["original"][p]) for p in HEADLINE_PARTS]]
    rows += [
        [v["variant"]] + [f"{v['scores'][p]:.3f} ({v['delta'][p]:+.3f})" for p in HEADLINE_PARTS] for v in o["variants"]
    ]
    return (
        "Order and repetition: the policy's schedule retrained with its phases reordered or a tool's phases merged",
        ["schedule"] + list(HEADLINE_PARTS),
        rows,
    )


def why_table(report: dict) -> Table:
    w = report["why"]
    if "note" in w:
        return ("Why the policy chose it", ["note"], [[w["note"]]])
    rows = []
    for s in w["steps"]:
        for e in s["explanations"]:
            because = (
                "; ".join(f"{b['feature']}={b['value']:.2f} ({b['effect']:+.3f})" for b in e["because"])
                or "no feature moves it (saturated)"
            )
            rows.append([str(s["step"]), e["control"], f"{e['chosen']:.2f}", f"{e['prior']:.2f}", because])
    return (
        (
            f"Why: controls moved furthest from the prior ({w.get('prior', 'env.prior')}), and the observation "
            "features that move them most (effect of +10% of the feature's range, in the control's units)"
        ),
        ["step", "control", "chosen", "prior", "because"],
        rows,
    )


def implantation_tables(report: dict) -> list[Table]:
    imp = report["implantation"]
    out = []
    rows = []
    for label, series in imp["cosines"].items():
        for pair in filter(is_cosine, series[0]):
            for g in range(report["layer_groups"]):
                rows.append([label, pair, f"g{g}"] + [f"{s[pair][g]:+.2f}" for s in series])
    n = max(len(s) for s in imp["cosines"].values())
    out.append(
        (
            (
                "Interference: gradient cosine between tools on the base weights of each layer group "
                "(before phase 0, then after each phase; < 0 the tools pull against each other)"
            ),
            ["method", "tools", "group"] + ["start"] + [f"after {i}" for i in range(n - 1)],
            rows,
        )
    )
    layers = report["layers"]
    rows = [[f"CKA drift {label}"] + [f"{1 - v:.4f}" for v in vals] for label, vals in imp["cka"].items()]
    for label, by_key in imp["readout"].items():
        for key, accs in by_key.items():
            rows.append([f"readout {label} {key}"] + [f"{a:.2f}" for a in accs])
    out.append(
        (
            (
                "Implantation per layer: 1 - CKA to the base on retain text, and each behaviour read out at that layer "
                "through the model's own final norm and unembedding (accuracy)"
            ),
            ["what"] + [f"layer {i}" for i in range(layers)],
            rows,
        )
    )
    rows = [
        [
            label,
            key,
            f"{v['gain']:+.2f}",
            "-" if v.get("below_output") is None else f"{v['below_output']:.2f}",
            "-" if v["first_layer"] is None else str(v["first_layer"]),
            v["verdict"],
        ]
        for label, by_key in imp["summary"].items()
        for key, v in by_key.items()
    ]
    out.append(
        (
            "Where each behaviour lives (first layer reaching half the output's gain over the base)",
            ["method", "behaviour", "gain at output", "share of it one layer down", "first layer", "verdict"],
            rows,
        )
    )
    return out


def all_tables(report: dict) -> dict[str, list[Table]]:
    """Section name -> its tables, in report order."""
    labels = list(report["decisions"])
    return {
        "Decisions": [decision_table(report, label) for label in labels],
        "Learning": [learning_table(report)],
        "Attribution": attribution_tables(report),
        "Order and repetition": [order_table(report)],
        "Why the policy chose it": [why_table(report)],
        "Interference and implantation": implantation_tables(report),
    }


def render_text(table: Table) -> str:
    title, headers, rows = table
    return render_table([headers, *rows], title=title)  # shorter schedules leave cells empty
