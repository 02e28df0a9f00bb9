"""The runner: executes a schedule on (model, suite, seed) phase by phase and scores the result.

This is the only implementation of training and scoring. The CLI, the environments, the
baselines, the benchmark and transfer all go through :class:`Engine` and :class:`Episode`, so a
schedule means the same thing wherever it runs.

An :class:`Engine` holds what is expensive and reusable: one persistent ``PeftModel`` with an
adapter per tool, the encoded tool data, the cached reference statistics of the base (DPO
reference log-probs, retain log-probs and hidden states) and the base's own scores. An
:class:`Episode` resets the adapters and the optimiser from a seed and then runs phases.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from metactl.adapters import AdapterSet, LoraSettings, base_only, resolve_layer_map
from metactl.config import RunConfig
from metactl.errors import ConfigError
from metactl.models import load_model, resolve_model
from metactl.schedule import MODULE_KINDS, Phase, Schedule, interleave
from metactl.scoring import Scorer
from metactl.tasks import TaskSuite, check_suite_name, load_suite
from metactl.tools import TOOLS, Tool

if TYPE_CHECKING:
    from metactl.parallel import DataParallel


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
class TaskState:
    """What depends on the task (suite): tool data with cached references, and the scorer."""

    suite: TaskSuite
    tools: dict[str, Tool]
    scorer: Scorer
    base_scores: dict[str, float] = field(default_factory=dict)
    _quick: dict[int, Scorer] = field(default_factory=dict)

    def quick_scorer(self, model, probes: int) -> Scorer:
        """A scorer on the first ``probes`` items of every probe set and of the retain text.

        For readings in the middle of an episode (a controller's observation): about
        64/``probes`` times cheaper, and the end-of-episode score stays the full one.
        """
        if probes not in self._quick:
            scorer = Scorer(first_probes(self.suite, probes), self.scorer.tokenizer, self.scorer.reward)
            scorer.prepare(model)
            self._quick[probes] = scorer
        return self._quick[probes]


def first_probes(suite: TaskSuite, probes: int) -> TaskSuite:
    """``suite`` with only the first ``probes`` items of every probe set and of the retain text."""
    import dataclasses

    if probes <= 0:
        return suite
    evals = {sp: {b: items[:probes] for b, items in by_b.items()} for sp, by_b in suite.evals.items()}
    return dataclasses.replace(suite, evals=evals, retain=suite.retain[:probes])


class Engine:
    """A model with one adapter per tool, ready to run episodes on one or more tasks."""

    def __init__(self, config: RunConfig, tools: list[str] | None = None, progress: bool = True,
                 parallel: DataParallel | None = None) -> None:
        # Validate everything that can be validated before reading any weights.
        resolve_model(config.model)
        check_suite_name(config.suite)
        self.config = config
        self.parallel = parallel
        self.device = parallel.device if parallel is not None else config.training.torch_device()
        self.tool_names = list(tools or TOOLS)
        for t in self.tool_names:
            if t not in TOOLS:
                raise ConfigError(f"tools: unknown tool {t!r}; allowed: {', '.join(TOOLS)}.")
        first_suite = load_suite(config.suite, config.task_seed)
        self.tool_names = [t for t in self.tool_names if first_suite.data.get(t)]
        if not self.tool_names:
            raise ConfigError(f"suite {config.suite!r} has no data for any of the requested tools.")

        torch.set_num_threads(config.training.threads)
        model, self.tokenizer, self.model_path = load_model(config.model, progress=progress)
        model.to(self.device)
        self.layer_map = resolve_layer_map(model, config.training.layer_groups)
        lora = LoraSettings(r=config.training.lora_r, alpha=config.training.lora_alpha)
        self.adapters = AdapterSet(model, self.tool_names, self.layer_map, lora)
        self.model = self.adapters.model
        # What the tools' training forward runs through: DDP around the model in a data-parallel
        # run (references and scores always use the unwrapped model).
        self.train_model = parallel.wrap(self.adapters) if parallel is not None else self.model
        self._tasks: dict[int, TaskState] = {}
        self.task = self.load_task(config.task_seed, first_suite)

    def load_task(self, task_seed: int, suite: TaskSuite | None = None) -> TaskState:
        """Switch to ``task_seed`` (built and cached on first use: data, references, base scores)."""
        if task_seed not in self._tasks:
            suite = suite or load_suite(self.config.suite, task_seed)
            tools = {t: TOOLS[t](self.config.tools[t], suite.data[t], self.tokenizer) for t in self.tool_names}
            if self.parallel is not None:
                from metactl.parallel import check_batches_cover

                check_batches_cover({t: self.config.tools[t] for t in tools}, self.parallel.world,
                                    {t: len(tool) for t, tool in tools.items()})
            for tool in tools.values():
                tool.to(self.device)
                tool.prepare(self.model)
            # Scores (the base's included) read only the first training.score_probes probes.
            scorer = Scorer(first_probes(suite, self.config.training.score_probes), self.tokenizer, self.config.reward)
            scorer.prepare(self.model)
            state = TaskState(suite, tools, scorer)
            with base_only(self.model):
                state.base_scores = scorer.score(self.model)
            self._tasks[task_seed] = state
        self.task = self._tasks[task_seed]
        return self.task

    def episode(self, seed: int | None = None) -> Episode:
        return Episode(self, self.config.training.seed if seed is None else seed)

    def run(
        self,
        schedule: Schedule,
        seed: int | None = None,
        on_phase: Callable[[PhaseResult], None] | None = None,
        progress: bool = False,
        checkpoint: Path | None = None,
        score_every_phase: bool | None = None,
        quick_probes: int = 0,
    ) -> list[PhaseResult]:
        """Run a whole schedule from fresh adapters; returns one result per phase.

        With ``checkpoint``, the episode's full state is saved there (atomically) after every
        phase, and a run that finds a checkpoint of the same run resumes after its last complete
        phase, with results identical to an uninterrupted run. ``score_every_phase`` overrides
        the config's; with ``quick_probes`` the phases before the last are scored on that many
        probes per set (the last phase always on all of them).
        """
        from tqdm.auto import tqdm

        self.check_schedule(schedule)
        seed = self.config.training.seed if seed is None else seed
        ep = self.episode(seed)
        steps = schedule.phase_steps(self.config.training.total_steps)
        results: list[PhaseResult] = []
        fingerprint = f"{self.config.to_yaml()}\n{schedule.to_yaml()}\nseed={seed} task_seed={self.task.suite.task_seed}"
        if checkpoint is not None and Path(checkpoint).is_file():
            results = ep.load(checkpoint, fingerprint)
        with tqdm(total=sum(steps), initial=sum(steps[: len(results)]), desc="training", unit="step",
                  disable=not progress, leave=False) as bar:
            for i, (phase, n) in enumerate(zip(schedule.phases, steps)):
                if i < len(results):
                    continue
                last = i == len(schedule.phases) - 1
                bar.set_postfix(phase=i)
                every = self.config.training.score_every_phase if score_every_phase is None else score_every_phase
                quick = self.task.quick_scorer(self.model, quick_probes) if quick_probes and not last else None
                res = ep.run_phase(phase, n, score=last or every, on_step=bar.update, scorer=quick)
                results.append(res)
                if checkpoint is not None:
                    ep.save(checkpoint, fingerprint, results)
                if on_phase:
                    on_phase(res)
        return results

    def check_schedule(self, schedule: Schedule) -> None:
        if schedule.layer_groups != self.layer_map.groups:
            raise ConfigError(
                f"schedule has layer_groups={schedule.layer_groups} but the run uses training.layer_groups="
                f"{self.layer_map.groups}; set training.layer_groups={schedule.layer_groups}."
            )
        missing = [t for t in schedule.tool_names if t not in self.tool_names]
        if missing:
            raise ConfigError(f"schedule uses tool {missing[0]!r} but the suite has no data for it (tools here: {', '.join(self.tool_names)}).")


class Episode:
    """Fresh adapters and optimiser state; phases run in order and keep their effects."""

    def __init__(self, engine: Engine, seed: int) -> None:
        self.engine = engine
        self.seed = seed
        self.phase_index = 0
        self.trained: set[str] = set()  # tools whose adapters have moved from their zero init
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
        import os

        state = {
            "fingerprint": fingerprint,
            "lora": {n: p.detach().clone() for n, p in self.engine.model.named_parameters() if "lora_" in n},
            "optimizer": self.optimizer.state_dict(),
            "generator": self.gen.get_state(),
            "phase_index": self.phase_index,
            "trained": sorted(self.trained),
            "results": [r.to_row() for r in results],
        }
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        torch.save(state, tmp)
        os.replace(tmp, path)

    def load(self, path: Path, fingerprint: str) -> list[PhaseResult]:
        state = torch.load(path, weights_only=False, map_location="cpu")
        if state.get("fingerprint") != fingerprint:
            raise ConfigError(
                f"checkpoint {path} belongs to a different run (config, schedule or seed changed); "
                "delete it to start afresh, or write to another --out."
            )
        params = dict(self.engine.model.named_parameters())
        with torch.no_grad():
            for name, value in state["lora"].items():
                params[name].copy_(value)
        self.optimizer.load_state_dict(state["optimizer"])
        self.gen.set_state(state["generator"])
        self.phase_index = state["phase_index"]
        self.trained = set(state["trained"])
        return [PhaseResult(**row) for row in state["results"]]

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
        full = {t: [[1.0] * eng.layer_map.groups for _ in MODULE_KINDS] for t in eng.tool_names}
        outputs = {**full, **{t: c.output for t, c in phase.tools.items() if t in full}}
        eng.adapters.set_output(outputs)
        self._apply_train(phase)
        order = interleave({t: c.share for t, c in phase.tools.items() if c.lowest_trained_group() is not None}, steps)
        # An adapter still at its zero init, or scaled to zero everywhere, adds exactly nothing:
        # leaving it out of the forward pass saves its FLOPs and peft's per-module overhead.
        self.trained |= set(order)
        silent = {t for t, grid in outputs.items() if not any(v for row in grid for v in row)}
        active = [t for t in eng.tool_names if t in set(order) or (t in self.trained and t not in silent)]
        eng.adapters.activate(active or eng.tool_names[:1])
        eng.model.train()
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        current = None
        for tool_name in order:
            if tool_name != current:
                eng.adapters.trainable(tool_name, phase.tools[tool_name].train)
                current = tool_name
            loss, value = self._loss(eng.task.tools[tool_name])
            if not math.isfinite(value):
                raise DivergedError(
                    f"phase {self.phase_index}: {tool_name} loss is {value} (diverged); lower tools.{tool_name}.lr "
                    "or that tool's train control."
                )
            loss.backward()
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            sums[tool_name] = sums.get(tool_name, 0.0) + value
            counts[tool_name] = counts.get(tool_name, 0) + 1
            if on_step:
                on_step(1)
        eng.model.eval()
        eng.adapters.freeze()  # nothing keeps a gradient between phases
        scores = (scorer or eng.task.scorer).score(eng.model) if score else None
        result = PhaseResult(
            phase=self.phase_index,
            steps=len(order),
            tool_steps=counts,
            losses={t: sums[t] / counts[t] for t in counts},
            norms=eng.adapters.norms(),
            seconds=time.perf_counter() - t0,
            scores=scores,
        )
        self.phase_index += 1
        return result

