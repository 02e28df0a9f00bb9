"""An episode: fresh adapters and optimiser state on an :class:`metactl.runner.Engine`, then phases.

Each phase trains the tools its controls name, step by step in the schedule's interleaved order,
with each tool's learning rate and output scale per layer group and module kind; its result is a
:class:`PhaseResult`. An episode checkpoints itself after a phase and resumes bit for bit.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from metactl.errors import ConfigError
from metactl.layer_grid import MODULE_KINDS, Grid, full_grid
from metactl.rundir import atomic_write_with
from metactl.schedule import Phase, interleave
from metactl.tools import Tool

if TYPE_CHECKING:
    from collections.abc import Callable

    from metactl.runner import Engine
    from metactl.scoring import Scorer


class DivergedError(FloatingPointError):
    """A tool's loss became NaN/inf; the episode cannot continue meaningfully."""


@dataclass
class PhaseResult:
    phase: int
    steps: int
    tool_steps: dict[str, int]
    losses: dict[str, float]  # mean training loss per tool over the phase
    norms: dict[str, list[float]]  # per tool, per layer group: ||s * B A||
    seconds: float
    scores: dict[str, float] | None = None

    def to_row(self) -> dict:
        return {
            "phase": self.phase, "steps": self.steps, "tool_steps": self.tool_steps, "losses": self.losses,
            "norms": self.norms, "seconds": round(self.seconds, 4), "scores": self.scores,
        }


@dataclass
class LossMemory:
    """Each tool's last and best training loss in the episode: what the ``max-gap`` order reads."""

    last: dict[str, float] = field(default_factory=dict)
    best: dict[str, float] = field(default_factory=dict)
    previous: str = ""  # the tool of the latest step: on a tie the other tool goes, so tools alternate

    def record(self, tool: str, value: float) -> None:
        self.last[tool] = value
        self.best[tool] = min(self.best.get(tool, math.inf), value)
        self.previous = tool

    def furthest(self, shares: dict[str, float]) -> str:
        """The tool whose last loss is furthest above its best, weighted by its share of ``shares``
        (MAXRIGHT's rule, arXiv 2410.15483, with the best loss so far standing in for the optimum)."""
        unseen = [t for t in shares if t not in self.last]
        if unseen:
            return unseen[0]
        total = sum(shares.values())
        gap = {t: s / total * (self.last[t] - self.best[t]) for t, s in shares.items()}
        top = max(gap.values())
        tied = [t for t in shares if gap[t] == top]
        return next((t for t in tied if t != self.previous), tied[0])

    def to_dict(self) -> dict:
        return {"last": dict(self.last), "best": dict(self.best), "previous": self.previous}


@dataclass
class PhasePlan:
    outputs: dict[str, Grid]  # every tool's output scales in this phase (1.0 where the phase is silent on it)
    order: list[tuple[str, ...]]  # the tools of each step (one each, but every tool under ``joint``)
    active: list[str]  # the tools whose adapters can change the forward pass
    rule: str = "interleave"
    shares: dict[str, float] = field(default_factory=dict)  # the tools taking part, by share

    def tools_at(self, step: int, memory: LossMemory) -> tuple[str, ...]:
        """The tools of step ``step``; under ``max-gap`` chosen now, from the losses so far."""
        if self.rule == "max-gap":
            return (memory.furthest(self.shares),)
        return self.order[step]


def plan_phase(
    phase: Phase, steps: int, tools: list[str], groups: int, trained: set[str], order_seed: int = 0
) -> PhasePlan:
    """What a phase does, for one episode or a population alike; adds the phase's tools to ``trained``.

    ``order_seed`` draws a ``random`` order (its own stream, so the batches an episode draws do not
    depend on the order rule). An adapter still at its zero init, or scaled to zero everywhere, adds
    exactly nothing: leaving it out of the forward pass saves its FLOPs and the per-module overhead.
    """
    full = {t: full_grid(1.0, groups) for t in tools}
    outputs = {**full, **{t: c.output for t, c in phase.tools.items() if t in full}}
    shares = {t: c.share for t, c in phase.tools.items() if c.lowest_trained_group() is not None and c.share > 0}
    names = list(shares)
    if not names:
        order: list[tuple[str, ...]] = []
    elif phase.order == "random":
        weights = torch.tensor([shares[t] for t in names], dtype=torch.float64)
        gen = torch.Generator().manual_seed(order_seed)
        order = [(names[i],) for i in torch.multinomial(weights, steps, replacement=True, generator=gen).tolist()]
    elif phase.order == "joint":
        order = [tuple(names)] * ((steps + len(names) // 2) // len(names))
    elif phase.order == "max-gap":
        order = [()] * steps  # chosen step by step (PhasePlan.tools_at)
    else:
        order = [(t,) for t in interleave(shares, steps)]
    trained |= set(names)
    silent = {t for t, grid in outputs.items() if not any(v for row in grid for v in row)}
    active = [t for t in tools if t in shares or (t in trained and t not in silent)]
    return PhasePlan(outputs, order, active, phase.order, shares)


def order_seed(seed: int, phase_index: int) -> int:
    """The seed of a ``random`` phase's order: the episode seed and the phase, nothing else."""
    return (seed * 1_000_003 + phase_index * 7_919 + 17) % (2**63)


def merge_seed(seed: int, phase_index: int) -> int:
    """The seed of the fresh ``A`` of adapters merged after phase ``phase_index``: like the episode's
    first init, it depends on the episode seed (and the phase) alone."""
    return (seed * 1_000_033 + phase_index * 104_729 + 29) % (2**63)


class Episode:
    """Fresh adapters and optimiser state; phases run in order and keep their effects."""

    def __init__(self, engine: Engine, seed: int) -> None:
        self.engine = engine
        self.seed = seed
        self.phase_index = 0
        self.trained: set[str] = set()  # tools whose adapters have moved from their zero init
        self.losses = LossMemory()
        engine.restore_base()  # every episode starts from the model as loaded, whatever the last one merged
        engine.adapters.reset(seed)
        self.gen = torch.Generator().manual_seed(seed)
        cfg = engine.config
        self.optimizer = torch.optim.AdamW(
            [
                {"params": params, "tool": t, "group": g, "kind": k, "base_lr": cfg.tools[t].lr}
                for (t, g, k), params in engine.adapters.params.items()
            ],
            lr=0.0,
            weight_decay=0.0,
            foreach=True,
        )

    def save(self, path: Path, fingerprint: str, results: list[PhaseResult]) -> None:
        """Everything needed to continue bit for bit: adapters, optimiser, RNG, results so far."""
        state = {
            "fingerprint": fingerprint,
            "lora": {n: p.detach().clone() for n, p in self.engine.model.named_parameters() if "lora_" in n},
            "optimizer": self.optimizer.state_dict(),
            "generator": self.gen.get_state(),
            "phase_index": self.phase_index,
            "trained": sorted(self.trained),
            "losses": self.losses.to_dict(),
            "results": [r.to_row() for r in results],
        }
        if self.engine.adapters.merged:  # the merged base weights: the adapters mean nothing without them
            state["merges"] = self.engine.adapters.merge_state()
        atomic_write_with(path, lambda tmp: torch.save(state, tmp))

    def load(self, path: Path, fingerprint: str) -> list[PhaseResult]:
        try:
            state = torch.load(path, weights_only=True, map_location="cpu")  # tensors and plain data only
        except Exception as exc:
            raise ConfigError(
                f"checkpoint {path}: not loaded, it holds more than tensors and plain data (torch.load with "
                f"weights_only=True refused it: {str(exc).splitlines()[0]}); delete it to start afresh, or write "
                "to another --out."
            ) from exc
        if not isinstance(state, dict) or state.get("fingerprint") != fingerprint:
            raise ConfigError(
                f"checkpoint {path} belongs to a different run (config, schedule or seed changed); "
                "delete it to start afresh, or write to another --out."
            )
        params = dict(self.engine.model.named_parameters())
        with torch.no_grad():
            for name, value in state["lora"].items():
                params[name].copy_(value)
        if "merges" in state:
            self.engine.rebase(state["merges"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.gen.set_state(state["generator"])
        self.phase_index = state["phase_index"]
        self.trained = set(state["trained"])
        self.losses = LossMemory(**state.get("losses", {}))
        return [PhaseResult(**row) for row in state["results"]]

    def merge(self, tools: list[str], coefficient: float = 1.0, toward_init: float = 0.0) -> None:
        """Fold ``tools``' adapters into the base (:meth:`AdapterSet.merge`); those adapters restart,
        with fresh optimiser moments, and the tools' references become the merged model."""
        eng = self.engine
        if eng.parallel is not None:  # every path that merges comes through here, a policy's phases too
            raise ConfigError("a merge in a data-parallel run is not supported yet; run it in one process.")
        eng.adapters.merge(tools, coefficient, toward_init, merge_seed(self.seed, self.phase_index))
        for p in (p for t in tools for p in eng.adapters.params_of(t)):
            self.optimizer.state.pop(p, None)
        self.trained -= set(tools)
        eng.rebase()
        # Restarted adapters and moved references (DPO's loss is back near log 2) make the losses so far
        # no yardstick: max-gap (MAXRIGHT) starts its memory afresh.
        self.losses = LossMemory()

    def _apply_train(self, phase: Phase) -> None:
        for group in self.optimizer.param_groups:
            c = phase.tools.get(group["tool"])
            strength = c.train[MODULE_KINDS.index(group["kind"])][group["group"]] if c else 0.0
            group["lr"] = group["base_lr"] * strength

    def _loss(self, tool: Tool) -> tuple[torch.Tensor, float]:
        """The tool's loss on the next batch (to backpropagate) and its value (the same on every rank).

        Every rank draws the same global batch from the episode's generator; in a data-parallel
        run each computes its slice, reweighted so that DDP's gradient average is the batch's.
        """
        index = tool.sample(self.gen)
        par = self.engine.parallel
        if par is None:
            loss = tool.loss(self.engine.model, index)
            return loss, loss.item()
        mine = par.shard(index)
        loss = tool.loss(self.engine.train_model, mine) * par.scale(tool.units(mine), tool.units(index))
        return loss, par.mean(loss)  # one verdict on divergence for every rank

    def run_phase(
        self,
        phase: Phase,
        steps: int,
        score: bool = True,
        on_step: Callable[[int], object] | None = None,
        scorer: Scorer | None = None,
    ) -> PhaseResult:
        eng = self.engine
        t0 = time.perf_counter()
        plan = plan_phase(
            phase, steps, eng.tool_names, eng.layer_map.groups, self.trained, order_seed(self.seed, self.phase_index)
        )
        eng.adapters.set_output(plan.outputs)
        self._apply_train(phase)
        eng.adapters.activate(plan.active or eng.tool_names[:1])
        eng.model.train()
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        current = None
        for i in range(len(plan.order)):
            # Every tool of a step computes its gradient at the same parameters; one update follows.
            step_tools = plan.tools_at(i, self.losses)
            for tool_name in step_tools:
                if tool_name != current:
                    eng.adapters.trainable(tool_name, phase.tools[tool_name].train)
                    current = tool_name
                loss, value = self._loss(eng.task.tools[tool_name])
                if not math.isfinite(value):
                    raise DivergedError(
                        f"phase {self.phase_index}: {tool_name} loss is {value} (diverged); lower "
                        f"tools.{tool_name}.lr or that tool's train control."
                    )
                loss.backward()
                self.losses.record(tool_name, value)
                sums[tool_name] = sums.get(tool_name, 0.0) + value
                counts[tool_name] = counts.get(tool_name, 0) + 1
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            if on_step:
                on_step(len(step_tools))
        eng.model.eval()
        eng.adapters.freeze()  # nothing keeps a gradient between phases
        if phase.merge is not None:
            self.merge(phase.merge.tools, phase.merge.coefficient, phase.merge.toward_init)
        scores = (scorer or eng.task.scorer).score(eng.model) if score else None
        result = PhaseResult(
            phase=self.phase_index,
            steps=sum(counts.values()),
            tool_steps=counts,
            losses={t: sums[t] / counts[t] for t in counts},
            norms=eng.adapters.norms(),
            seconds=time.perf_counter() - t0,
            scores=scores,
        )
        self.phase_index += 1
        return result

