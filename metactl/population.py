"""The population engine: K episodes of one (model, suite) advanced together, step by step.

Each episode (a *slot*) owns its adapters, optimiser state, batch generator and task, exactly as
an :class:`metactl.episode.Episode` does; the base weights are shared. At every step the
episodes that run the same tool are computed in one forward and one backward (at most one call
per tool per step, whatever K is), and one batched AdamW step updates all of them with their
own learning rates. Scoring, the observe readings and the interference reading run K episodes
as row blocks of one batch the same way. Each episode gives the scores it gives alone through
:class:`metactl.runner.Engine` (``tests/test_population.py``, to 1e-4 in fp32), so the
population is a faster way to run the same episodes, not a different experiment.
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass, field

import torch

from metactl.config import RunConfig
from metactl.episode import DivergedError, LossMemory, PhasePlan, PhaseResult, order_seed, plan_phase
from metactl.errors import ConfigError
from metactl.forward import concat_pairs, forward_logits
from metactl.layer_grid import MODULE_KINDS
from metactl.runner import TaskState, build_task, check_layout, check_names, check_schedule, load_base, suite_tools
from metactl.schedule import Phase, Schedule
from metactl.scoring import Scorer, score_blocks
from metactl.stacked_lora import StackedAdapters
from metactl.tasks import load_suite

CONV1D_MODEL_TYPES = ("gpt2", "openai-gpt")  # transformers models built on Conv1D, not nn.Linear


def check_no_merge(merges: bool) -> None:
    """The population shares one base between its slots, so no slot can fold its adapters into it."""
    if merges:
        raise ConfigError(
            "the population engine (vec_env: batched) does not merge adapters: its episodes share one base "
            "model. Run merging schedules through an Engine (run-schedule, vec_env: subproc or dummy)."
        )


def runs_model(model: str) -> bool:
    """Whether the population engine runs ``model`` (its adapted layers are ``nn.Linear``, not
    GPT-2's ``Conv1D``), told from the built-in name or the config.json on disk; no weights load."""
    import json

    from metactl.models import local_config, resolve_model

    ref = resolve_model(model)
    if ref.kind in ("proxy", "smollm2"):
        return True
    config = local_config(ref)
    return config is not None and json.loads(config.read_text()).get("model_type") not in CONV1D_MODEL_TYPES


@dataclass
class Slot:
    """One episode of the population."""

    seed: int
    task: TaskState
    gen: torch.Generator
    trained: set[str] = field(default_factory=set)
    active: list[str] = field(default_factory=list)
    phase_index: int = 0
    losses: LossMemory = field(default_factory=LossMemory)


class Population:
    """``size`` episode slots on one model with stacked adapters."""

    def __init__(self, config: RunConfig, size: int, tools: list[str] | None = None, progress: bool = False) -> None:
        if size < 1:
            raise ValueError(f"population size {size}; it must be at least 1")
        first_suite = load_suite(*check_names(config))
        self.config = config
        self.size = size
        self.device = config.training.torch_device()
        self.tool_names = suite_tools(config, first_suite, tools)
        model, self.tokenizer, self.model_path, self.layer_map, lora = load_base(config, self.device, progress)
        self.adapters = StackedAdapters(model, self.tool_names, self.layer_map, lora, size)
        self.model = self.adapters.model
        self.model.eval()
        self._tasks: dict[tuple[str, int], TaskState] = {}
        self.load_task(config.task_seed, first_suite)
        self.slots: list[Slot | None] = [None] * size

    def load_task(self, task_seed: int, suite=None, suite_name: str | None = None) -> TaskState:
        """Task ``task_seed`` of ``suite_name`` (default: the config's suite), built and cached on
        first use: data, references, scorers."""
        name = suite_name or self.config.suite
        if (name, task_seed) not in self._tasks:
            suite = suite or load_suite(name, task_seed)
            check_layout(self.config, suite, self.tool_names)
            self._tasks[name, task_seed] = build_task(
                self.config, suite, self.tokenizer, self.model, self.tool_names, self.device
            )
        return self._tasks[name, task_seed]

    def begin(self, slot: int, task_seed: int, seed: int, suite_name: str | None = None) -> Slot:
        """Start a fresh episode in ``slot``: adapters and optimiser from ``seed``, on task ``task_seed``
        of ``suite_name`` (default: the config's suite)."""
        self.adapters.reset(slot, seed)
        task = self.load_task(task_seed, suite_name=suite_name)
        self.slots[slot] = Slot(seed, task, torch.Generator().manual_seed(seed))
        return self.slots[slot]

    # -- training -----------------------------------------------------------------------------------
    def run_phases(
        self, phases: dict[int, tuple[Phase, int]], scorers: dict[int, Scorer | None] | None = None
    ) -> dict[int, PhaseResult | DivergedError]:
        """Run one phase in each of the given slots, all at once; score those with a scorer.

        A slot whose loss turns non-finite gets a :class:`DivergedError` and stops stepping; the
        others go on. Returns one result (or error) per slot.
        """
        t0 = time.perf_counter()
        for phase, _ in phases.values():
            check_no_merge(phase.merge is not None)
        scorers = scorers or {}
        groups = self.layer_map.groups
        plans: dict[int, PhasePlan] = {}
        train: dict[int, Phase] = {}
        for k, (phase, steps) in phases.items():
            s = self._slot(k)
            plans[k] = plan_phase(
                phase, steps, self.tool_names, groups, s.trained, order_seed(s.seed, s.phase_index)
            )
            self.adapters.set_output(k, plans[k].outputs)
            s.active = plans[k].active
            train[k] = phase
        failed: dict[int, DivergedError] = {}
        sums: dict[int, dict[str, float]] = {k: {} for k in phases}
        counts: dict[int, dict[str, int]] = {k: {} for k in phases}
        self.model.train()
        for i in range(max((len(p.order) for p in plans.values()), default=0)):
            by_tool: dict[str, list[int]] = {}
            for k, plan in plans.items():
                if i < len(plan.order) and k not in failed:
                    for tool in plan.tools_at(i, self.slots[k].losses):
                        by_tool.setdefault(tool, []).append(k)
            # Every tool's gradients first, then the updates: a slot whose step trains several tools
            # (``joint``) computes them all at the same parameters, as Episode does.
            rates: dict[str, torch.Tensor] = {}
            for tool in self.tool_names:
                if tool not in by_tool:
                    continue
                lr = torch.zeros(self.size, len(MODULE_KINDS) * groups, device=self.device, dtype=torch.float64)
                for k, value in zip(by_tool[tool], self._train_step(tool, by_tool[tool], train)):
                    if not math.isfinite(value):
                        failed[k] = DivergedError(
                            f"phase {self.slots[k].phase_index}: {tool} loss is {value} (diverged); lower "
                            f"tools.{tool}.lr or that tool's train control."
                        )
                        continue
                    self.slots[k].losses.record(tool, value)
                    sums[k][tool] = sums[k].get(tool, 0.0) + value
                    counts[k][tool] = counts[k].get(tool, 0) + 1
                    grid = train[k].tools[tool].train
                    strength = torch.tensor([v for row in grid for v in row], dtype=torch.float64)
                    lr[k] = strength * self.config.tools[tool].lr
                rates[tool] = lr
            for k in failed:  # a slot that diverged in this step takes none of its updates
                for lr in rates.values():
                    lr[k] = 0.0
            for tool, lr in rates.items():
                self.adapters.adamw_step(tool, lr)
        self.model.eval()
        ok = [k for k in phases if k not in failed]
        scores = self.score({k: scorers[k] for k in ok if scorers.get(k) is not None})
        norms = dict(zip(ok, self.adapters.norms(ok))) if ok else {}
        seconds = time.perf_counter() - t0
        out: dict[int, PhaseResult | DivergedError] = dict(failed)
        for k in ok:
            if isinstance(scores.get(k), FloatingPointError):
                out[k] = scores[k]
                continue
            s = self.slots[k]
            out[k] = PhaseResult(
                phase=s.phase_index, steps=sum(counts[k].values()), tool_steps=counts[k],
                losses={t: sums[k][t] / counts[k][t] for t in counts[k]}, norms=norms[k], seconds=seconds,
                scores=scores.get(k),
            )
            s.phase_index += 1
        return out

    def _train_step(self, tool: str, slots: list[int], train: dict[int, Phase]) -> list[float]:
        """One step of ``tool`` in every slot of ``slots`` (one forward and backward per batch size);
        the gradients land in the tool's flat gradient. Returns each slot's loss value."""
        picked = {}
        for k in slots:
            t = self.slots[k].task.tools[tool]
            picked[k] = t, *self._rows(k, t, t.sample(self.slots[k].gen), self.slots[k].active)
        values: dict[int, float] = {}
        def rows_of(k: int) -> int:
            return len(picked[k][1])

        for _, same in itertools.groupby(sorted(slots, key=rows_of), key=rows_of):
            same = list(same)
            cells = {
                (kind, g)
                for k in same
                for kind, row in enumerate(train[k].tools[tool].train)
                for g, v in enumerate(row)
                if v > 0
            }
            self.adapters.trainable(tool, cells)
            active = sorted({t for k in same for t in self.slots[k].active})
            batch = concat_pairs([picked[k][1] for k in same])
            with self.adapters.routing(same, active):
                logits = forward_logits(self.model, batch)
            rows = len(picked[same[0]][1])
            losses = []
            for b, k in enumerate(same):
                t, sub, extra = picked[k]
                losses.append(t.loss_of(logits[b * rows : (b + 1) * rows, : sub.input_ids.shape[1]], sub, extra))
            got = torch.stack(losses)
            finite = torch.isfinite(got.detach())
            if finite.any():
                got[finite].sum().backward()
            values.update(zip(same, got.detach().tolist()))
        self.adapters.take_grads(tool)
        return [values[k] for k in slots]

    # -- readings -----------------------------------------------------------------------------------
    def score(self, scorers: dict[int, Scorer]) -> dict[int, dict[str, float] | FloatingPointError]:
        """Each slot's scores under its scorer; slots whose scorers share a layout in one pass."""
        out: dict[int, dict[str, float] | FloatingPointError] = {}
        pending = list(scorers)
        while pending:
            first = scorers[pending[0]]
            same = [k for k in pending if first.same_layout(scorers[k])]
            pending = [k for k in pending if k not in same]
            active = sorted({t for k in same for t in self.slots[k].active} or self.tool_names[:1])
            with self.adapters.routing(same, active):
                try:
                    results = score_blocks([scorers[k] for k in same], self.model)
                except FloatingPointError:  # some slot went non-finite: find which, one by one
                    results = []
                    for k in same:
                        with self.adapters.routing([k], active):
                            try:
                                results.append(score_blocks([scorers[k]], self.model)[0])
                            except FloatingPointError as exc:
                                results.append(exc)
            out.update(zip(same, results))
        return out

    def _rows(self, k: int, tool, index: torch.Tensor, active) -> tuple:
        """What ``tool`` runs rows ``index`` of slot ``k`` through the model as: its batch, or for a tool
        that samples its own completions (grpo), the completions drawn from slot ``k``'s adapters
        (those of ``active`` tools on), as :class:`Engine` draws them from its one model."""
        if not hasattr(tool, "rollout"):
            return tool.batch(index)
        with self.adapters.routing([k], sorted(active)):
            return tool.rollout(self.model, index)

    def gradient_cosines(self, slots: list[int], rows: int = 8) -> dict[int, dict[str, list[float]]]:
        """:func:`metactl.interference.gradient_cosines` of each slot, all slots in one pass per tool.

        A base weight's gradient is ``sum over rows of grad_out^T x``; each block's share of that
        sum is its own episode's gradient, so the per-episode gradients come from one batched
        backward (the base weights are shared, the row blocks are not).
        """
        from metactl.interference import reading_of

        weights = [w for _, w in self.adapters.layers]
        base = [m.base_layer.weight for m in weights]
        groups = self.layer_map.groups
        grads: dict[str, list[list[torch.Tensor]]] = {}  # tool -> per block, per group: flat gradient
        losses: list[dict[str, float]] = [{} for _ in slots]
        try:
            for w in base:
                w.requires_grad_(True)
            for name in self.tool_names:
                picked = []
                for k in slots:
                    tool = self.slots[k].task.tools[name]
                    picked.append((tool, *self._rows(k, tool, torch.arange(min(rows, len(tool))), self.tool_names)))
                n_rows = {len(b) for _, b, _ in picked}
                if len(n_rows) > 1:  # tasks with too few rows for `rows`: one slot at a time
                    per = [self.gradient_cosines([k], rows)[k] for k in slots]
                    return dict(zip(slots, per))
                batch = concat_pairs([b for _, b, _ in picked])
                self.adapters.capture = []
                with self.adapters.routing(slots, self.tool_names):
                    logits = forward_logits(self.model, batch)
                n = n_rows.pop()
                per_slot = [
                    t.loss_of(logits[i * n : (i + 1) * n, : b.input_ids.shape[1]], b, extra)
                    for i, (t, b, extra) in enumerate(picked)
                ]
                for i, value in enumerate(torch.stack(per_slot).tolist()):
                    losses[i][name] = value
                captured, self.adapters.capture = self.adapters.capture, None
                outs = torch.autograd.grad(sum(per_slot), [o for _, _, o in captured])
                by_group: list[list[list[torch.Tensor]]] = [[[] for _ in range(groups)] for _ in slots]
                for (mod, x, _), g in zip(captured, outs):
                    blocks = len(slots)
                    g_blocks = g.reshape(blocks, -1, g.shape[-1]).transpose(1, 2)
                    gw = torch.bmm(g_blocks, x.reshape(blocks, -1, x.shape[-1]))
                    for i in range(blocks):
                        by_group[i][mod.target.group].append(gw[i].reshape(-1))
                grads[name] = [[torch.cat(parts) for parts in blk] for blk in by_group]
        finally:
            self.adapters.capture = None
            for w in base:
                w.requires_grad_(False)
        out = {}
        for i, k in enumerate(slots):
            out[k] = reading_of(losses[i], {name: grads[name][i] for name in self.tool_names})
        return out

    def norms(self, slot: int) -> dict[str, list[float]]:
        return self.adapters.norms([slot])[0]

    # -- whole schedules ------------------------------------------------------------------------------
    def run(
        self,
        schedules: list[Schedule],
        seeds: list[int],
        task_seeds: list[int],
        score_every_phase: bool | None = None,
        observe_probes: int | None = None,
        slots: list[int] | None = None,
        suite_name: str | None | list[str | None] = None,
    ) -> list[list[PhaseResult] | DivergedError]:
        """Run whole schedules from fresh adapters, one per slot (default: the first ones): what
        :meth:`Engine.run` gives for each (same seeds, same task), K at a time. Phase ``p`` of every
        schedule runs in round ``p``. ``suite_name``: one suite for all, or one per schedule (tasks
        of different suites train together: each slot reads its own task)."""
        slots = list(range(len(schedules))) if slots is None else list(slots)
        suites = list(suite_name) if isinstance(suite_name, list) else [suite_name] * len(schedules)
        if not len(schedules) == len(seeds) == len(task_seeds) == len(slots) == len(suites) <= self.size:
            raise ValueError(
                f"{len(schedules)} schedules, {len(seeds)} seeds, {len(task_seeds)} task seeds, {len(suites)} suites "
                f"for slots {slots} of {self.size}"
            )
        every = self.config.training.score_every_phase if score_every_phase is None else score_every_phase
        plans = {}
        for k, sched, seed, task_seed, suite in zip(slots, schedules, seeds, task_seeds, suites):
            check_schedule(self.config, sched, self.tool_names)
            check_no_merge(sched.merges)
            self.begin(k, task_seed, seed, suite)
            plans[k] = list(zip(sched.phases, sched.phase_steps(self.config.training.total_steps)))
        results: dict[int, list[PhaseResult] | DivergedError] = {k: [] for k in slots}
        for p in range(max(len(plan) for plan in plans.values())):
            phases, scorers = {}, {}
            for k, plan in plans.items():
                if p >= len(plan) or isinstance(results[k], DivergedError):
                    continue
                phases[k] = plan[p]
                scorers[k] = self.slots[k].task.scorer_after(p == len(plan) - 1, every, observe_probes)
            for k, res in self.run_phases(phases, scorers).items():
                if isinstance(res, FloatingPointError):
                    results[k] = res if isinstance(res, DivergedError) else DivergedError(str(res))
                else:
                    results[k].append(res)
        return [results[k] for k in slots]

    def _slot(self, k: int) -> Slot:
        if self.slots[k] is None:
            raise RuntimeError(f"slot {k} has no episode; call begin({k}, task_seed, seed) first")
        return self.slots[k]
