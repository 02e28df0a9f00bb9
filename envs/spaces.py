"""How a float32 action in [-1, 1] becomes tool controls, in one place for every controller.

Both environments, random search and Optuna read actions through these two classes, so a
learned policy and a baseline search the same space and a vector means the same schedule
wherever it is decoded.

Ranges (``a`` is one action component, clipped to [-1, 1]):

- ``share``  = (a + 1) / 2, in [0, 1]: the tool's relative share of the phase's steps
  (tools interleave step by step; a share of 0 sits the tool out; a phase where every share is 0
  trains nothing).
- ``train``  = R ** a, in [1/R, R]: learning-rate multiplier per (module kind, layer group),
  R = ``env.train_range`` (4 unless set).
- ``output`` = 1 + a, in [0, 2]: adapter output scale per (module kind, layer group).
- ``merge``  = a > 0, per tool in ``env.merge`` and phase: fold that tool's adapter into the base at
  the phase's end (:class:`metactl.schedule.Merge`, coefficient 1). A schedule's "no merge" is coded
  -0.5 (and "merge" +0.5), not -1: a residual above +0.25 merges, so exploration around a prior that
  never merges still tries merges (a merge at coefficient 1 leaves the model's function as it is; what
  it changes is what follows: the references and the restarted adapter).

Policies act *residually* around a prior schedule (``env.prior``, by default the ``default``
schedule a practitioner would run anyway): the environment decodes ``clip(prior + 2 * a)``,
where ``prior`` is the schedule encoded in these coordinates. The zero action therefore
reproduces the prior, a policy that learns nothing stays there, and what it gains over the
prior is learned (residual policy learning). ``env.prior: neutral`` puts the zero action at
"every tool at full force, equal shares, base learning rates" instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial

import numpy as np

from metactl.layer_grid import MODULE_KINDS
from metactl.schedule import Merge, Phase, Schedule, ToolControls

TRAIN_BASE = 4.0


def check_prior(schedule: Schedule, train_range: float, field: str = "env.prior") -> None:
    """Refuse a prior the actions cannot express: the zero action would silently decode to a
    different schedule (a clipped multiplier, or an order the actions do not set), and every
    "gain over the prior" would be measured from a schedule nobody chose."""
    from metactl.errors import ConfigError

    lo, hi = 1.0 / train_range, train_range
    for i, phase in enumerate(schedule.phases):
        where = f"{field}: schedule {schedule.name or '?'!r}, phase {i + 1}"
        if phase.merge is not None:
            raise ConfigError(
                f"{where}: merges {phase.merge.tools}; a prior may not merge (the env phases need not end where the "
                "prior's do, and a run without env.merge could not express it). Use a prior without merges and let "
                "env.merge decide them, or run the schedule itself (--set compare=[...])."
            )
        if phase.order != "interleave":
            raise ConfigError(
                f"{where}: order {phase.order!r}; the envs' actions set each tool's share and interleave the "
                "tools, so a prior must use order 'interleave' (run the rule itself as a fixed schedule, "
                "e.g. --set compare=[...], or use env.prior: neutral)."
            )
        for tool, c in phase.tools.items():
            if c.share <= 0:
                continue
            for v in (x for row in c.train for x in row):
                if not lo - 1e-9 <= v <= hi + 1e-9:
                    need = max(v, 1.0 / v) if v > 0 else None
                    fix = (f"raise env.train_range to {need:g} or more" if need else
                           "a train of 0 (a frozen group) is not an action; give it a small multiplier")
                    raise ConfigError(
                        f"{where}, tool {tool!r}: train {v:g} is outside what an action can express, "
                        f"[1/R, R] = [{lo:g}, {hi:g}] with env.train_range R = {train_range:g}; {fix}, "
                        "or edit the schedule."
                    )
            for v in (x for row in c.output for x in row):
                if not 0.0 <= v <= 2.0:
                    raise ConfigError(
                        f"{where}, tool {tool!r}: output {v:g} is outside what an action can express, [0, 2]; "
                        "edit the schedule."
                    )


def share_of(a: float) -> float:
    return float((np.clip(a, -1.0, 1.0) + 1.0) / 2.0)


def train_of(a: float, base: float = TRAIN_BASE) -> float:
    return float(base ** np.clip(a, -1.0, 1.0))


def output_of(a: float) -> float:
    return float(1.0 + np.clip(a, -1.0, 1.0))


RESIDUAL_SCALE = 2.0  # a residual of +-1 moves a prior at either end across the whole range


def share_code(share: float, top: float) -> float:
    return 2.0 * share / top - 1.0 if top > 0 else -1.0


def train_code(x: float, base: float = TRAIN_BASE) -> float:
    return float(np.clip(np.log(x) / np.log(base), -1.0, 1.0)) if x > 0 else -1.0


def output_code(x: float) -> float:
    return float(np.clip(x - 1.0, -1.0, 1.0))


def apply_residual(prior: np.ndarray, action: np.ndarray) -> np.ndarray:
    return np.clip(prior + RESIDUAL_SCALE * np.asarray(action, dtype=np.float64), -1.0, 1.0)


def merge_of(values: np.ndarray, tools: tuple[str, ...]) -> Merge | None:
    """The merge a phase's merge components (one per tool of ``tools``, clipped) decode to."""
    chosen = [t for t, a in zip(tools, values) if a > 0]
    return Merge(chosen) if chosen else None


MERGE_CODE = 0.5  # a schedule's merge is +0.5, its "no merge" -0.5 (see the module docstring)


def merge_code(phase: Phase, tools: tuple[str, ...]) -> list[float]:
    merged = set(phase.merge.tools) if phase.merge is not None else set()
    return [MERGE_CODE if t in merged else -MERGE_CODE for t in tools]


def neutral_action(dim: int, merges: int) -> np.ndarray:
    """The prior of ``env.prior: neutral``: the middle of every range, and no merge (the last ``merges``)."""
    return np.array([0.0] * (dim - merges) + [-MERGE_CODE] * merges)


def _code_grid(grid: list[list[float]], fn) -> list[float]:
    return [fn(v) for row in grid for v in row]


def _grid(values: np.ndarray, groups: int, fn) -> list[list[float]]:
    return [[fn(values[k * groups + g]) for g in range(groups)] for k in range(len(MODULE_KINDS))]


CONTROL_GRAINS = ("layer", "tool", "share")  # env.controls: what one action component of the phase env sets


@dataclass(frozen=True)
class PhaseControlSpace:
    """One phase's controls: per tool ``[share, train[kind][group]..., output[kind][group]...]``.

    ``tied=True`` (``env.controls: tool``) ties every (module kind, layer group) cell of a tool to
    one train and one output component: ``[share, train, output]`` per tool. Nine numbers instead of
    27 for three tools on two groups: a policy with tens of episodes explores fewer directions, at the
    price of per-layer allocation (the decoded schedule still has the full grid, all cells equal).

    ``shares_only=True`` (``env.controls: share``) sets each tool's share alone: which tools run in a
    phase and how they interleave, the decision the published hand rules (ALRIGHT, MAXRIGHT, mixing)
    make. Learning rates and output scales are held at the prior phase's (``held``; 1 for a tool the
    prior does not run there), so no action reaches a harsher step than the prior's own.
    """

    tools: tuple[str, ...]
    groups: int
    tied: bool = False
    train_range: float = TRAIN_BASE
    shares_only: bool = False
    merge: tuple[str, ...] = ()  # tools whose merge at the phase's end is decided (one component each, last)

    @property
    def cells(self) -> int:
        return 1 if self.tied else len(MODULE_KINDS) * self.groups

    @property
    def per_tool(self) -> int:
        return 1 if self.shares_only else 1 + 2 * self.cells

    @property
    def dim(self) -> int:
        return len(self.tools) * self.per_tool + len(self.merge)

    def neutral(self) -> np.ndarray:
        return neutral_action(self.dim, len(self.merge))

    def _grid(self, values: np.ndarray, fn) -> list[list[float]]:
        if self.tied:
            return [[fn(values[0])] * self.groups for _ in MODULE_KINDS]
        return _grid(values, self.groups, fn)

    def phase(self, action: np.ndarray, fraction: float, held: Phase | None = None) -> Phase:
        """The phase ``action`` (already clipped to [-1, 1]) decodes to; ``held``: the phase whose
        learning rates and output scales a shares-only space keeps (ignored otherwise)."""
        action = np.asarray(action, dtype=np.float64).reshape(-1)
        merge = merge_of(action[len(action) - len(self.merge):], self.merge) if self.merge else None
        action = action[: len(self.tools) * self.per_tool].reshape(len(self.tools), self.per_tool)
        cells = self.cells
        tools = {}
        for t, row in zip(self.tools, action):
            if self.shares_only:
                keep = held.tools.get(t) if held is not None else None
                train, output = (keep.train, keep.output) if keep is not None and keep.share > 0 else (None, None)
                tools[t] = ToolControls(share_of(row[0]), self._copy_or_ones(train), self._copy_or_ones(output))
                continue
            tools[t] = ToolControls(
                share=share_of(row[0]),
                train=self._grid(row[1 : 1 + cells], partial(train_of, base=self.train_range)),
                output=self._grid(row[1 + cells :], output_of),
            )
        return Phase(fraction=fraction, tools=tools, merge=merge)

    def _copy_or_ones(self, grid: list[list[float]] | None) -> list[list[float]]:
        return [list(r) for r in grid] if grid is not None else [[1.0] * self.groups for _ in MODULE_KINDS]

    def encode(self, phase: Phase) -> np.ndarray:
        """The action that decodes to ``phase`` (as near as the ranges allow; tied: each grid's mean code)."""
        top = max((c.share for c in phase.tools.values()), default=0.0)
        vec: list[float] = []
        for t in self.tools:
            c = phase.tools.get(t)
            if c is None:
                vec += [-1.0] + [0.0] * (self.per_tool - 1)
                continue
            if self.shares_only:
                vec.append(share_code(c.share, top))
                continue
            train = _code_grid(c.train, partial(train_code, base=self.train_range))
            output = _code_grid(c.output, output_code)
            if self.tied:
                train, output = [float(np.mean(train))], [float(np.mean(output))]
            vec += [share_code(c.share, top)] + train + output
        return np.array(vec + merge_code(phase, self.merge), dtype=np.float64)

    def labels(self) -> list[str]:
        out = []
        for t in self.tools:
            out.append(f"{t}.share")
            if self.shares_only:
                continue
            for what in ("train", "output"):
                if self.tied:
                    out.append(f"{t}.{what}")
                else:
                    out += [f"{t}.{what}.{k}{g}" for k in MODULE_KINDS for g in range(self.groups)]
        return out + [f"{t}.merge" for t in self.merge]


@dataclass(frozen=True)
class ScheduleSpace:
    """A whole schedule in few numbers (the bandit's action, and what the searches sample).

    Layout: ``shares[phase][tool]`` first, then per tool ``train[kind][group]`` and
    ``output[kind][group]``, held for the whole run. Sharing the per-layer controls across phases
    keeps the dimension small enough for a budget of tens of episodes; per-phase control is what
    the phase-level environment is for.

    ``shares_only=True`` (``env.controls: share``) keeps the shares alone, with each phase's learning
    rates and output scales taken from ``held`` (the prior) as the phase env's share-only space does:
    a search then explores exactly the decisions the share-only controller makes, open loop.
    """

    tools: tuple[str, ...]
    groups: int
    phases: int
    train_range: float = TRAIN_BASE
    shares_only: bool = False
    held: Schedule | None = field(default=None, compare=False)
    merge: tuple[str, ...] = ()  # tools whose merge after each phase is decided (phases x tools, last)

    @property
    def cells(self) -> int:
        return len(MODULE_KINDS) * self.groups

    @property
    def dim(self) -> int:
        return (self.phases * len(self.tools) + (0 if self.shares_only else len(self.tools) * 2 * self.cells)
                + self.phases * len(self.merge))

    def schedule(self, action: np.ndarray, name: str = "") -> Schedule:
        action = np.asarray(action, dtype=np.float64).reshape(-1)
        n_merge = self.phases * len(self.merge)
        merges = action[len(action) - n_merge:].reshape(self.phases, len(self.merge)) if n_merge else None
        action = action[: len(action) - n_merge]
        schedule = self._schedule(action, name)
        if merges is not None:
            for phase, row in zip(schedule.phases, merges):
                phase.merge = merge_of(row, self.merge)
        return schedule

    def neutral(self) -> np.ndarray:
        return neutral_action(self.dim, self.phases * len(self.merge))

    def _schedule(self, action: np.ndarray, name: str) -> Schedule:
        n_t = len(self.tools)
        if self.shares_only:
            one = PhaseControlSpace(self.tools, self.groups, train_range=self.train_range, shares_only=True)
            rows = action.reshape(self.phases, n_t)
            phases = [one.phase(rows[p], 1.0 / self.phases, self._held_at(p)) for p in range(self.phases)]
            return Schedule(phases=phases, layer_groups=self.groups, name=name)
        shares = action[: self.phases * n_t].reshape(self.phases, n_t)
        rest = action[self.phases * n_t :].reshape(n_t, 2, self.cells)
        train = partial(train_of, base=self.train_range)
        grids = {t: (_grid(rest[i, 0], self.groups, train), _grid(rest[i, 1], self.groups, output_of))
                 for i, t in enumerate(self.tools)}
        phases = [
            Phase(
                fraction=1.0 / self.phases,
                tools={t: ToolControls(share=share_of(shares[p, i]), train=[r[:] for r in grids[t][0]],
                                       output=[r[:] for r in grids[t][1]])
                       for i, t in enumerate(self.tools)},
            )
            for p in range(self.phases)
        ]
        return Schedule(phases=phases, layer_groups=self.groups, name=name)

    def encode(self, schedule: Schedule) -> np.ndarray:
        """The action that decodes closest to ``schedule``: its shares at each phase's midpoint,
        and per tool the mean train/output over the phases where the tool takes part."""
        shares, merges = [], []
        for p in range(self.phases):
            ph = schedule.phase_at((p + 0.5) / self.phases)
            top = max((c.share for c in ph.tools.values()), default=0.0)
            shares += [share_code(ph.tools[t].share, top) if t in ph.tools else -1.0 for t in self.tools]
            merges += merge_code(ph, self.merge)
        if self.shares_only:
            return np.array(shares + merges, dtype=np.float64)
        rest: list[float] = []
        for t in self.tools:
            used = [ph.tools[t] for ph in schedule.phases if t in ph.tools and ph.tools[t].share > 0]
            for what, fn in (("train", partial(train_code, base=self.train_range)), ("output", output_code)):
                if not used:
                    rest += [0.0] * self.cells
                    continue
                codes = np.array([_code_grid(getattr(c, what), fn) for c in used])
                rest += list(codes.mean(axis=0))
        return np.array(shares + rest + merges, dtype=np.float64)

    def labels(self) -> list[str]:
        out = [f"phase{p}.{t}.share" for p in range(self.phases) for t in self.tools]
        if not self.shares_only:
            for t in self.tools:
                for what in ("train", "output"):
                    out += [f"{t}.{what}.{k}{g}" for k in MODULE_KINDS for g in range(self.groups)]
        return out + [f"phase{p}.{t}.merge" for p in range(self.phases) for t in self.merge]

    def _held_at(self, p: int) -> Phase | None:
        return self.held.phase_at((p + 0.5) / self.phases) if self.held is not None else None
