"""Ablations: switch parts of a trained model off and re-score; change a schedule and re-train.

Model ablations (cheap, no training) work on the adapters an episode left behind: a coalition of
tools keeps only those tools' adapters at their final output scale, a coalition of layer groups
keeps every adapter only in those groups. Feeding every coalition to :mod:`.shapley` gives exact
Shapley values. Schedule ablations (a training run each) answer what the model would be without
one phase's training, with two phases swapped, or with a tool's steps merged into one phase.
"""

from __future__ import annotations

import copy
from collections.abc import Hashable

from metactl.commands.inspect.shapley import coalition_values
from metactl.layer_grid import MODULE_KINDS
from metactl.runner import Engine
from metactl.schedule import Merge, Phase, Schedule, interleave
from metactl.score_parts import HEADLINE_PARTS

KEPT = frozenset({*HEADLINE_PARTS, "kl"})


def kept_scores(scores: dict[str, float]) -> dict[str, float]:
    """The parts an attribution reports: each score part, KL, and the per-behaviour accuracies."""
    return {
        k: float(v)
        for k, v in scores.items()
        if k in KEPT or ("/" in k and not k.endswith("_margin") and "cka" not in k)
    }


class ModelAblation:
    """Re-scores the engine's current (trained) adapters with parts switched off; restores them after.

    A tool whose adapter a schedule merged into the base is switched off in the base too: the base
    then holds the initial weights plus the merged parts of the kept tools (and groups) only
    (:meth:`AdapterSet.merged_only`), so an attribution covers what each tool did, merged or not.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.scales = engine.adapters.output_scales()
        self.groups = engine.layer_map.groups
        self.evaluations = 0

    def score(self, keep_tools: frozenset, keep_groups: frozenset | None = None) -> dict[str, float]:
        groups = set(range(self.groups)) if keep_groups is None else set(keep_groups)
        if not keep_tools or not groups:
            return kept_scores(self.engine.task.base_scores)  # nothing on: the base, already scored
        scales = {
            t: [[v if (t in keep_tools and g in groups) else 0.0 for g, v in enumerate(row)] for row in grid]
            for t, grid in self.scales.items()
        }
        return self._score(scales, sorted(keep_tools), lambda t, g: t in keep_tools and g in groups)

    def _score(self, scales: dict, active: list[str], keep_merged=None) -> dict[str, float]:
        eng = self.engine
        eng.adapters.set_output(scales)
        eng.adapters.activate(active)
        try:
            self.evaluations += 1
            with eng.adapters.merged_only(keep_merged or (lambda t, g: True)):
                return kept_scores(eng.task.scorer.score(eng.model))
        finally:
            self.restore()

    def restore(self) -> None:
        self.engine.adapters.set_output(self.scales)
        self.engine.adapters.activate(list(self.engine.tool_names))

    def tool_table(self) -> dict[frozenset, dict[str, float]]:
        return coalition_values(self.engine.tool_names, lambda s: self.score(s))

    def group_table(self) -> dict[frozenset, dict[str, float]]:
        tools = frozenset(self.engine.tool_names)
        return coalition_values(list(range(self.groups)), lambda s: self.score(tools, s))

    def tool_group_loo(self, full: dict[str, float]) -> dict[Hashable, dict[str, float]]:
        """Score lost when one tool's adapter is removed from one layer group only."""
        out = {}
        for t in self.engine.tool_names:
            for g in range(self.groups):
                scales = copy.deepcopy(self.scales)
                for row in scales[t]:
                    row[g] = 0.0
                s = self._score(scales, list(self.engine.tool_names), lambda t2, g2, t=t, g=g: (t2, g2) != (t, g))
                out[(t, g)] = {k: full[k] - s[k] for k in full}
        return out


# -- schedule variants (each one a training run) -------------------------------------------------------
def tool_steps(schedule: Schedule, total_steps: int) -> list[dict[str, int]]:
    """How many optimiser steps each tool takes in each phase (the runner's own split)."""
    out = []
    for phase, n in zip(schedule.phases, schedule.phase_steps(total_steps)):
        order = interleave({t: c.share for t, c in phase.tools.items() if c.lowest_trained_group() is not None}, n)
        out.append({t: order.count(t) for t in phase.tools})
    return out


def without_phase(schedule: Schedule, i: int) -> Schedule:
    """``schedule`` with phase ``i`` training nothing (its output scales still apply)."""
    s = copy.deepcopy(schedule)
    for c in s.phases[i].tools.values():
        c.share = 0.0
    s.name = f"without phase {i}"
    return s


def swapped(schedule: Schedule, i: int) -> Schedule:
    """Phases ``i`` and ``i+1`` in the other order (each keeps its length and controls)."""
    s = copy.deepcopy(schedule)
    s.phases[i], s.phases[i + 1] = s.phases[i + 1], s.phases[i]
    s.name = f"phases {i} and {i + 1} swapped"
    return s


def merged(schedule: Schedule, tool: str, total_steps: int) -> Schedule | None:
    """Every step of ``tool`` moved into one phase of its own, just before the phase where it first trained.

    Each tool keeps its step count and the other tools their order; output scales stay as the
    schedule sets them, and the merged phase trains ``tool`` at its step-weighted mean train
    controls. ``None`` when the tool trains in fewer than two phases (nothing to merge).
    """
    steps = tool_steps(schedule, total_steps)
    lengths = schedule.phase_steps(total_steps)
    used = [i for i, st in enumerate(steps) if st.get(tool, 0) > 0]
    if len(used) < 2:
        return None
    n_tool = sum(st[tool] for st in steps)
    grids = [(steps[i][tool], schedule.phases[i].tools[tool].train) for i in used]
    mean_train = [
        [sum(w * g[k][j] for w, g in grids) / n_tool for j in range(len(grids[0][1][k]))]
        for k in range(len(MODULE_KINDS))
    ]
    last = len(schedule.phases) - 1
    phases: list[Phase] = []
    for i, (phase, st, n) in enumerate(zip(schedule.phases, steps, lengths)):
        if i == used[0]:
            solo = copy.deepcopy(phase.tools)
            for t, c in solo.items():
                c.share = 1.0 if t == tool else 0.0
            solo[tool].train = mean_train
            phases.append(Phase(n_tool / total_steps, solo))
        rest = n - st.get(tool, 0)  # the phase's other steps, idle ones (every share 0) included
        if rest == 0 and i != last:
            if phase.merge is not None:  # the phase's merge still follows its training
                kept = phases[-1].merge
                phases[-1].merge = copy.deepcopy(phase.merge) if kept is None else Merge(
                    list(dict.fromkeys([*kept.tools, *phase.merge.tools])), phase.merge.coefficient,
                    phase.merge.toward_init)
            continue  # the tool was all this phase trained; the last phase stays, its output scales are final
        tools = copy.deepcopy(phase.tools)
        tools[tool].share = 0.0
        phases.append(Phase(rest / total_steps, tools, phase.order, phase.merge))
    return Schedule(phases=phases, layer_groups=schedule.layer_groups, name=f"{tool} merged into one phase")
