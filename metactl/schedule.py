"""Schedules: ordered phases of per-tool influence controls, portable across model sizes.

A schedule never names a layer index or a step count. Depth is a relative *layer group*
(``floor(layer * G / L)``), module kinds are ``attn`` / ``mlp`` (resolved per architecture), and a
phase's length is a fraction of the run's step budget, so the same YAML means the same thing on a
4-layer proxy and a 30-layer model.

YAML form (schema_version 2; a file without ``merge`` may say 1, and is written as 1)::

    schema_version: 2
    layer_groups: 4
    phases:
      - fraction: 0.5            # share of the total step budget
        tools:
          sft:
            share: 1.0           # share of this phase's steps (tools interleave step by step)
            train: 1.0           # learning-rate multiplier; 0 freezes the adapter
            output: 0.7          # adapter output scale (peft's per-module scaling)
          dpo: {share: 1.0, train: [0, 0, 1, 1], output: {attn: 1.0, mlp: [1, 1, 0.5, 0.5]}}
        order: interleave        # how the phase's steps go to its tools (ORDERS; optional)
        merge: [sft]             # at the phase's end, fold these adapters into the base (optional; schema 2)

``train`` and ``output`` take a scalar, a list with one value per layer group, or a mapping
``{attn: ..., mlp: ...}`` of either. A tool omitted from a phase gets no steps there and keeps
its previous output scale (1.0 before it is first named).

``merge`` (schema 2) takes a list of tools or ``{tools: [...], coefficient: 1.0, toward_init: 0.0}``:
after the phase's last step each named tool's adapter, at its current output scales times
``coefficient``, is added into the base weights, and the adapter restarts from its zero init (a new
kaiming ``A``, ``B = 0``, fresh optimiser moments). ``toward_init`` then moves the merged base weights
that fraction of the way back to the initial model's (WARP's interpolation towards the initialisation,
arXiv 2406.16768, with its eta = 1 - toward_init). After a merge the tools' training references (DPO's
reference, the retain and GRPO KL terms) are the merged model, as a trainer started on the merged
checkpoint would have it; the reported scores stay measured against the initial model
(docs/merge.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from metactl.errors import ConfigError, check_choice, check_number, did_you_mean
from metactl.layer_grid import MODULE_KINDS, Grid, full_grid
from metactl.paths import resolve_schedule_path
from metactl.tools import TOOLS

SCHEMA_VERSION = 2  # the newest; a schedule without merges is still written as version 1
SUPPORTED_VERSIONS = (1, 2)
MERGE_KEYS = ("tools", "coefficient", "toward_init")
MAX_TRAIN = 10.0
MAX_OUTPUT = 2.0
_FRACTION_TOL = 1e-6

# How a phase hands its steps to its tools (tools with share 0 or no trained cell sit it out).
# The published hand rules for the SFT/preference conflict (ALRIGHT and MAXRIGHT, arXiv
# 2410.15483) and the summed-loss "mix" are orders, so they run through the same runner.
ORDERS = {
    "interleave": "deterministic: each tool's count follows its share and turns alternate (the default)",
    "random": "each step draws its tool independently, with probability proportional to its share (ALRIGHT)",
    "max-gap": "each step goes to the tool whose last loss is furthest above its best loss so far in the "
    "episode, weighted by share (MAXRIGHT; a tool not yet run goes first)",
    "joint": "every step trains every tool at the same parameters (each on its own loss), and the phase's steps "
    "are counted per tool, so a step budget buys the same number of forward/backward passes (mix)",
}



@dataclass
class ToolControls:
    """Influence of one tool during one phase."""

    share: float = 0.0
    train: Grid = field(default_factory=list)
    output: Grid = field(default_factory=list)

    def lowest_trained_group(self) -> int | None:
        groups = [g for row in self.train for g, v in enumerate(row) if v > 0]
        return min(groups) if groups and self.share > 0 else None


@dataclass
class Merge:
    """Fold tools' adapters into the base weights at the end of a phase (schema_version 2)."""

    tools: list[str]
    coefficient: float = 1.0  # multiplies each adapter's delta (at its output scales) as it is folded in
    toward_init: float = 0.0  # then move the base this fraction of the way back to the initial weights

    def to_dict(self) -> list[str] | dict:
        if self.coefficient == 1.0 and self.toward_init == 0.0:
            return list(self.tools)
        return {"tools": list(self.tools), "coefficient": round(self.coefficient, 6),
                "toward_init": round(self.toward_init, 6)}


@dataclass
class Phase:
    fraction: float
    tools: dict[str, ToolControls]
    order: str = "interleave"  # one of ORDERS
    merge: Merge | None = None  # folded in after the phase's last step


@dataclass
class Schedule:
    """An ordered list of phases; ``tools`` of every phase hold the same, fully resolved keys."""

    phases: list[Phase]
    layer_groups: int = 4
    name: str = ""

    @property
    def tool_names(self) -> list[str]:
        return list(self.phases[0].tools) if self.phases else []

    @property
    def merges(self) -> bool:
        return any(p.merge is not None for p in self.phases)

    def phase_steps(self, total_steps: int) -> list[int]:
        """Split ``total_steps`` by phase fraction (largest remainder, so the sum is exact)."""
        raw = [p.fraction * total_steps for p in self.phases]
        steps = [math.floor(r) for r in raw]
        for i in sorted(range(len(raw)), key=lambda i: raw[i] - steps[i], reverse=True)[: total_steps - sum(steps)]:
            steps[i] += 1
        return steps

    def phase_at(self, position: float) -> Phase:
        """The phase running at ``position`` in [0, 1) of the step budget."""
        end = 0.0
        for p in self.phases:
            end += p.fraction
            if position < end:
                return p
        return self.phases[-1]

    def regroup(self, groups: int) -> Schedule:
        """The same schedule over ``groups`` layer groups (each new group averages the old
        groups whose relative depth it covers; with fewer old groups, it takes the one it lies in)."""
        old = self.layer_groups
        if groups == old:
            return self

        def cells(g: int) -> list[int]:
            lo, hi = g / groups, (g + 1) / groups
            inside = [o for o in range(old) if lo <= (o + 0.5) / old < hi]
            return inside or [min(old - 1, int((g + 0.5) / groups * old))]

        def grid(gr: Grid) -> Grid:
            return [[sum(row[o] for o in cells(g)) / len(cells(g)) for g in range(groups)] for row in gr]

        phases = [
            Phase(
                p.fraction,
                {t: ToolControls(c.share, grid(c.train), grid(c.output)) for t, c in p.tools.items()},
                p.order,
                p.merge,
            )
            for p in self.phases
        ]
        return Schedule(phases=phases, layer_groups=groups, name=self.name)

    # -- serialisation -------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "schema_version": SCHEMA_VERSION if self.merges else 1,
            **({"name": self.name} if self.name else {}),
            "layer_groups": self.layer_groups,
            "phases": [
                {
                    "fraction": round(p.fraction, 6),
                    "tools": {
                        t: {"share": round(c.share, 6), "train": _compact(c.train), "output": _compact(c.output)}
                        for t, c in p.tools.items()
                    },
                    **({"order": p.order} if p.order != "interleave" else {}),
                    **({"merge": p.merge.to_dict()} if p.merge is not None else {}),
                }
                for p in self.phases
            ],
        }

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None, width=120)

    def save(self, path: str | Path) -> Path:
        from metactl.rundir import atomic_write_text

        return atomic_write_text(path, self.to_yaml())

    @classmethod
    def from_dict(cls, data: object, source: str = "schedule", known_tools: list[str] | None = None) -> Schedule:
        return parse_schedule(data, source, known_tools)

    @classmethod
    def named(cls, name: str | Path, layer_groups: int | None = None) -> Schedule:
        """A built-in schedule (``default``, ``expert``) or a schedule YAML, over ``layer_groups``
        groups when given (:meth:`regroup`)."""
        schedule = cls.load(resolve_schedule_path(name))
        return schedule if layer_groups is None else schedule.regroup(layer_groups)

    @classmethod
    def load(cls, path: str | Path, known_tools: list[str] | None = None) -> Schedule:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"schedule: file {str(path)!r} does not exist.")
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise ConfigError(f"schedule {path}: not valid YAML ({exc}).") from exc
        return parse_schedule(data, str(path), known_tools)


def _compact(grid: Grid):
    flat = [v for row in grid for v in row]
    if all(v == flat[0] for v in flat):
        return round(flat[0], 6)
    if all(row == grid[0] for row in grid):
        return [round(v, 6) for v in grid[0]]
    return {k: [round(v, 6) for v in row] for k, row in zip(MODULE_KINDS, grid)}


def _parse_grid(where: str, value: object, groups: int, high: float) -> Grid:
    def row(where_row: str, v: object) -> list[float]:
        if isinstance(v, (list, tuple)):
            if len(v) != groups:
                raise ConfigError(
                    f"{where_row}: got {len(v)} values but the schedule has layer_groups={groups}; "
                    f"give one value per group or a single number."
                )
            return [check_number(f"{where_row}[{g}]", x, low=0.0, high=high) for g, x in enumerate(v)]
        return [check_number(where_row, v, low=0.0, high=high)] * groups

    if isinstance(value, dict):
        unknown = [k for k in value if k not in MODULE_KINDS]
        if unknown:
            raise ConfigError(
                f"{where}: unknown module kind {unknown[0]!r}; allowed: {', '.join(MODULE_KINDS)}."
                f"{did_you_mean(unknown[0], MODULE_KINDS)}"
            )
        return [row(f"{where}.{k}", value.get(k, 1.0)) for k in MODULE_KINDS]
    r = row(where, value)
    return [list(r) for _ in MODULE_KINDS]


_CONTROL_KEYS = ("share", "train", "output")


def parse_schedule(data: object, source: str = "schedule", known_tools: list[str] | None = None) -> Schedule:
    """Validate a schedule given as plain data; every error names the field and the fix."""
    known = list(known_tools or TOOLS)
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: expected a mapping with 'schema_version' and 'phases', got {type(data).__name__}."
        )
    extra = [k for k in data if k not in ("schema_version", "name", "layer_groups", "phases")]
    if extra:
        raise ConfigError(
            f"{source}: unknown key {extra[0]!r}; allowed: schema_version, name, layer_groups, phases."
            f"{did_you_mean(extra[0], ['schema_version', 'name', 'layer_groups', 'phases'])}"
        )
    version = data.get("schema_version")
    if version not in SUPPORTED_VERSIONS:
        raise ConfigError(
            f"{source}: schema_version {version!r} is not supported; supported: {list(SUPPORTED_VERSIONS)}. "
            f"Set 'schema_version: {SCHEMA_VERSION}' or upgrade metactl."
        )
    groups = int(check_number(f"{source}: layer_groups", data.get("layer_groups", 4), low=1, high=64, integer=True))
    raw_phases = data.get("phases")
    if not isinstance(raw_phases, list) or not raw_phases:
        raise ConfigError(f"{source}: 'phases' must be a non-empty list of phases.")

    names: list[str] = []
    for i, ph in enumerate(raw_phases):
        if not isinstance(ph, dict):
            raise ConfigError(f"{source}: phases[{i}] must be a mapping with 'fraction' and 'tools'.")
        for t in ph.get("tools") or {}:
            check_choice(f"{source}: phases[{i}].tools", t, known)
            if t not in names:
                names.append(t)
    names.sort(key=known.index)

    phases: list[Phase] = []
    last_output = {t: full_grid(1.0, groups) for t in names}
    for i, ph in enumerate(raw_phases):
        where = f"{source}: phases[{i}]"
        keys = ("fraction", "tools", "order", "merge")
        bad = [k for k in ph if k not in keys]
        if bad:
            raise ConfigError(
                f"{where}: unknown key {bad[0]!r}; allowed: {', '.join(keys)}.{did_you_mean(bad[0], keys)}"
            )
        if "merge" in ph and version < 2:
            raise ConfigError(
                f"{where}.merge: 'merge' is a schema_version 2 field, but this schedule says schema_version "
                f"{version}; set 'schema_version: 2' at its top (version-1 readers cannot merge)."
            )
        merge = _parse_merge(f"{where}.merge", ph["merge"], names) if ph.get("merge") is not None else None
        order = ph.get("order", "interleave")
        check_choice(f"{where}.order", order, ORDERS)
        fraction = check_number(f"{where}.fraction", ph.get("fraction"), low=0.0, high=1.0, low_open=True)
        tools_in = ph.get("tools") or {}
        if not isinstance(tools_in, dict):
            raise ConfigError(f"{where}.tools: expected a mapping of tool name to controls.")
        controls: dict[str, ToolControls] = {}
        for t in names:
            spec = tools_in.get(t)
            if spec is None:
                controls[t] = ToolControls(0.0, full_grid(1.0, groups), [list(r) for r in last_output[t]])
                continue
            if not isinstance(spec, dict):
                raise ConfigError(f"{where}.tools.{t}: expected a mapping with share/train/output, got {spec!r}.")
            bad = [k for k in spec if k not in _CONTROL_KEYS]
            if bad:
                raise ConfigError(
                    f"{where}.tools.{t}: unknown control {bad[0]!r}; allowed: {', '.join(_CONTROL_KEYS)}."
                    f"{did_you_mean(bad[0], _CONTROL_KEYS)}"
                )
            share = check_number(f"{where}.tools.{t}.share", spec.get("share", 1.0), low=0.0, high=1e6)
            train = _parse_grid(f"{where}.tools.{t}.train", spec.get("train", 1.0), groups, MAX_TRAIN)
            output = (
                _parse_grid(f"{where}.tools.{t}.output", spec["output"], groups, MAX_OUTPUT)
                if "output" in spec
                else [list(r) for r in last_output[t]]
            )
            controls[t] = ToolControls(share, train, output)
            last_output[t] = output
        # A phase where every share is 0 trains nothing and only sets output scales; controllers
        # produce such phases on purpose (e.g. scale an adapter down before the final phase).
        phases.append(Phase(fraction, controls, order, merge))

    total = sum(p.fraction for p in phases)
    if abs(total - 1.0) > _FRACTION_TOL:
        raise ConfigError(
            f"{source}: phase fractions sum to {total:.6g}, they must sum to 1 "
            f"(got {[p.fraction for p in phases]}); rescale them."
        )
    return Schedule(phases=phases, layer_groups=groups, name=str(data.get("name", "")))


def _parse_merge(where: str, value: object, names: list[str]) -> Merge | None:
    """``[tool, ...]`` or ``{tools: [...], coefficient: c, toward_init: w}``; every tool one the
    schedule trains (a merge of an adapter no phase trains would fold in nothing)."""
    spec = {"tools": value} if isinstance(value, (list, tuple, str)) else value
    if not isinstance(spec, dict):
        raise ConfigError(
            f"{where}: expected a list of tools (e.g. [sft]) or a mapping with {', '.join(MERGE_KEYS)}; got {value!r}."
        )
    bad = [k for k in spec if k not in MERGE_KEYS]
    if bad:
        raise ConfigError(
            f"{where}: unknown key {bad[0]!r}; allowed: {', '.join(MERGE_KEYS)}.{did_you_mean(bad[0], MERGE_KEYS)}"
        )
    tools = spec.get("tools")
    tools = [tools] if isinstance(tools, str) else tools
    if not isinstance(tools, (list, tuple)):
        raise ConfigError(f"{where}.tools: expected a list of tools to merge, e.g. [sft]; got {tools!r}.")
    for t in tools:
        if t not in names:
            raise ConfigError(
                f"{where}.tools: unknown merge target {t!r}; the schedule's tools are {', '.join(names) or 'none'} "
                f"(a merge folds in an adapter one of its phases trains).{did_you_mean(str(t), names)}"
            )
    if not tools:
        return None  # an empty list merges nothing
    coefficient = check_number(f"{where}.coefficient", spec.get("coefficient", 1.0), low=0.0, high=MAX_OUTPUT)
    toward_init = check_number(f"{where}.toward_init", spec.get("toward_init", 0.0), low=0.0, high=1.0)
    return Merge(sorted(set(tools), key=names.index), coefficient, toward_init)


def interleave(shares: dict[str, float], steps: int) -> list[str]:
    """Order ``steps`` tool steps so each tool's count matches its share and turns alternate.

    Deterministic: at every step the tool furthest behind its quota goes next (ties by order).
    """
    active = {t: s for t, s in shares.items() if s > 0}
    if not active:
        return []  # a controller may sit every tool out of a phase: it trains nothing
    total = sum(active.values())
    done = dict.fromkeys(active, 0)
    order: list[str] = []
    for i in range(steps):
        t = max(active, key=lambda t: active[t] / total * (i + 1) - done[t])
        done[t] += 1
        order.append(t)
    return order
