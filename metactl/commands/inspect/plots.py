"""The report's pictures, drawn from the report dict alone (so they can be redrawn from report.json)."""

from __future__ import annotations

import statistics
from pathlib import Path

import numpy as np

from metactl.interference import is_cosine
from metactl.layer_grid import MODULE_KINDS
from metactl.rundir import atomic_write_with
from metactl.score_parts import HEADLINE_PARTS

PART_LABELS = {
    "target": "target behaviour",
    "heldout": "held-out generalisation",
    "stability": "stability exp(-KL/scale)",
    "composite": "composite (sum of the three)",
}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    try:
        return atomic_write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    finally:
        _plt().close(fig)


def decisions_png(report: dict, label: str, path: Path) -> Path:
    plt = _plt()
    d = report["decisions"][label]
    tools, groups = report["tools"], report["layer_groups"]
    phases = d["phases"]
    rows_lbl = [f"{k} g{g}" for k in MODULE_KINDS for g in range(groups)]
    fig, axes = plt.subplots(len(tools), 3, figsize=(12, 2.6 * len(tools) + 0.6), squeeze=False)
    for r, t in enumerate(tools):
        ax = axes[r][0]
        steps = [p["tool_steps"].get(t, 0) for p in phases]
        ax.bar(range(len(phases)), steps, color=f"C{r}")
        ax.set_title(f"{t}: optimiser steps per phase", fontsize=9)
        ax.set_xlabel("phase")
        ax.set_ylabel("steps")
        ax.set_xticks(range(len(phases)))
        for c, (what, vmax, unit, cmap) in enumerate(
            (("train", 4.0, "x base learning rate", "viridis"), ("output", 2.0, "x adapter output scale", "magma"))
        ):
            ax = axes[r][c + 1]
            grid = np.array([[v for row in p["tools"][t][what] for v in row] for p in phases]).T
            # A tool with no steps in a phase trains nothing there whatever its train control says.
            if what == "train":
                grid = np.where(np.array(steps)[None, :] > 0, grid, np.nan)
            im = ax.imshow(grid, aspect="auto", cmap=cmap, vmin=0.0, vmax=vmax)
            for (y, x), v in np.ndenumerate(grid):
                if np.isfinite(v):
                    ax.text(
                        x,
                        y,
                        f"{v:.2f}",
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if v < vmax * 0.6 else "black",
                    )
            ax.set_xticks(range(len(phases)))
            ax.set_yticks(range(len(rows_lbl)), rows_lbl, fontsize=8)
            ax.set_xlabel("phase")
            ax.set_title(
                f"{t}: {what} ({unit}; blank = no steps)" if what == "train" else f"{t}: {what} ({unit})", fontsize=9
            )
            fig.colorbar(im, ax=ax, label=unit)
    fig.suptitle(
        f"What {label} decided on task {report['task_seed']}: per tool, layer group (module kind x depth) and phase",
        fontsize=10,
    )
    fig.tight_layout()
    return _save(fig, path)


def learning_png(report: dict, path: Path) -> Path:
    plt = _plt()
    lr = report["learning"]
    c = lr["curve"]
    fig, axes = plt.subplots(2, 2, figsize=(12, 7))
    for ax, part in zip(axes.flat, HEADLINE_PARTS):
        x, y = c["episode"], c[part]
        if x:
            k = max(1, len(y) // 8)
            run = [statistics.mean(y[max(0, i - k + 1) : i + 1]) for i in range(len(y))]
            ax.scatter(x, y, s=8, alpha=0.4, color="C0", label="training episode (drawn task)")
            ax.plot(x, run, color="C0", lw=2, label=f"running mean over {k}")
        for i, (label, b) in enumerate(lr["baselines"].items()):
            ax.axhline(
                b[part], ls="--", lw=1.2, color=f"C{i + 1}", label=f"{label}: held-out mean ({b['tasks']} tasks)"
            )
        ax.set_title(PART_LABELS[part], fontsize=10)
        ax.set_xlabel("training episode")
        ax.set_ylabel("score (0 to 3)" if part == "composite" else "score (0 to 1)")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8)
    fig.suptitle(
        f"Learning: each part of the final score over training ({report['policy']}), baselines as lines", fontsize=10
    )
    fig.tight_layout(rect=(0, 0.08, 1, 0.97))
    return _save(fig, path)


def _bars(ax, names: list[str], by_label: dict[str, dict[str, dict[str, float]]], part: str) -> None:
    labels = list(by_label)
    width = 0.8 / max(1, len(labels))
    for j, label in enumerate(labels):
        vals = [by_label[label].get(n, {}).get(part, np.nan) for n in names]
        ax.bar(np.arange(len(names)) + (j - (len(labels) - 1) / 2) * width, vals, width, label=label, color=f"C{j}")
    ax.axhline(0, color="black", lw=0.6)
    ax.set_xticks(range(len(names)), names, fontsize=8, rotation=20)


def attribution_png(report: dict, path: Path) -> Path:
    plt = _plt()
    attr = report["attribution"]
    fig, axes = plt.subplots(3, 4, figsize=(14, 9))
    sections = (
        ("tools", "tool (Shapley)", lambda a: a["tools"]["shapley"]),
        ("groups", "layer group (Shapley)", lambda a: a["groups"]["shapley"]),
        ("phases", "phase's training (leave one out)", lambda a: a.get("phases", {})),
    )
    for r, (_, what, get) in enumerate(sections):
        by_label = {label: get(a) for label, a in attr.items()}
        names = list(dict.fromkeys(n for v in by_label.values() for n in v))
        for c, part in enumerate(HEADLINE_PARTS):
            ax = axes[r][c]
            _bars(ax, names, by_label, part)
            ax.set_title(f"{PART_LABELS[part]}\nper {what}", fontsize=9)
            ax.set_ylabel("score change owed")
    axes[0][0].legend(fontsize=8)
    fig.suptitle(
        "Attribution: how much of each final score each tool, layer group and phase is responsible for", fontsize=10
    )
    fig.tight_layout()
    return _save(fig, path)


def order_png(report: dict, path: Path) -> Path:
    plt = _plt()
    o = report["order"]
    names = [v["variant"] for v in o["variants"]]
    fig, ax = plt.subplots(figsize=(10, 2.8 + 0.5 * len(names)))
    y = np.arange(len(names))
    for j, part in enumerate(HEADLINE_PARTS):
        ax.barh(
            y + (j - 1.5) * 0.2, [v["delta"][part] for v in o["variants"]], 0.2, label=PART_LABELS[part], color=f"C{j}"
        )
    ax.axvline(0, color="black", lw=0.6)
    ax.set_yticks(y, names, fontsize=8)
    ax.set_xlabel("score change vs the schedule as the policy ran it")
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title("Order and repetition: does the order of the phases matter on this task?", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def why_png(report: dict, path: Path) -> Path | None:
    steps = report["why"].get("steps")
    if not steps:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, len(steps), figsize=(4.2 * len(steps) + 1.5, 6), squeeze=False)
    for ax, s in zip(axes[0], steps):
        effect = np.array(s["effect"])
        ctrl = np.argsort(-np.abs(effect).sum(0))[:8]
        feat = np.argsort(-np.abs(effect).sum(1))[:10]
        sub = effect[np.ix_(feat, ctrl)]
        lim = max(1e-6, float(np.abs(sub).max()))
        im = ax.imshow(sub, cmap="coolwarm", vmin=-lim, vmax=lim, aspect="auto")
        ax.set_yticks(range(len(feat)), [s["features"][i] for i in feat], fontsize=7)
        ax.set_xticks(
            range(len(ctrl)), [s["controls"][j].split(": ")[-1] for j in ctrl], fontsize=7, rotation=60, ha="right"
        )
        ax.set_title(f"decision {s['step']}", fontsize=9)
        fig.colorbar(im, ax=ax, label="control change per +10% of the feature's range")
    fig.suptitle(
        "Why: which observation features move which controls (the 10 strongest features, 8 most moved controls)",
        fontsize=10,
    )
    fig.tight_layout()
    return _save(fig, path)


def implantation_png(report: dict, path: Path) -> Path:
    plt = _plt()
    imp = report["implantation"]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    ax = axes[0]
    styles = ["-", "--", ":", "-."]
    for j, (label, series) in enumerate(imp["cosines"].items()):
        for i, pair in enumerate(k for k in series[0] if is_cosine(k)):
            for g in range(report["layer_groups"]):
                ax.plot(
                    range(len(series)),
                    [s[pair][g] for s in series],
                    styles[j % 4],
                    marker="o",
                    ms=3,
                    color=f"C{i * report['layer_groups'] + g}",
                    label=f"{label}: {pair} g{g}",
                )
    ax.axhline(0, color="black", lw=0.6)
    ax.set_xlabel("phase boundary (0 = before training)")
    ax.set_ylabel("gradient cosine on base weights")
    ax.set_title("Interference between tools per layer group", fontsize=10)
    ax.legend(fontsize=6)
    ax = axes[1]
    labels = list(imp["cka"])
    for j, label in enumerate(labels):
        vals = [1 - v for v in imp["cka"][label]]
        ax.bar(np.arange(len(vals)) + (j - (len(labels) - 1) / 2) * 0.4, vals, 0.4, label=label, color=f"C{j}")
    ax.set_xlabel("decoder layer")
    ax.set_ylabel("1 - linear CKA to the base")
    ax.set_title("Representation drift per layer (retain text)", fontsize=10)
    ax.legend(fontsize=8)
    ax = axes[2]
    for j, (label, by_key) in enumerate(imp["readout"].items()):
        for i, (key, accs) in enumerate(by_key.items()):
            if key.startswith("heldout/"):
                continue
            ax.plot(range(len(accs)), accs, styles[j % 4], marker="o", ms=3, color=f"C{i}", label=f"{label}: {key}")
    ax.set_xlabel("decoder layer read out")
    ax.set_ylabel("behaviour accuracy at that layer")
    ax.set_ylim(-0.05, 1.05)
    ax.set_title("Implantation: behaviour readable at each layer (logit lens)", fontsize=10)
    ax.legend(fontsize=6)
    fig.tight_layout()
    return _save(fig, path)


def draw_all(report: dict, out: Path) -> dict[str, Path]:
    """Every PNG into ``out``; section name -> file."""
    out = Path(out)
    pngs = {
        "Decisions": decisions_png(report, report["policy"], out / "decisions.png"),
        "Learning": learning_png(report, out / "learning.png"),
        "Attribution": attribution_png(report, out / "attribution.png"),
        "Order and repetition": order_png(report, out / "order.png"),
        "Why the policy chose it": why_png(report, out / "why.png"),
        "Interference and implantation": implantation_png(report, out / "implantation.png"),
    }
    return {k: v for k, v in pngs.items() if v is not None}
