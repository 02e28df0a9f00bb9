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

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from metactl.adapters import AdapterSet, LoraSettings, base_only
from metactl.config import RunConfig
from metactl.episode import DivergedError, Episode, PhaseResult
from metactl.errors import ConfigError, did_you_mean
from metactl.layer_map import resolve_layer_map
from metactl.models import load_model, resolve_model
from metactl.schedule import Schedule
from metactl.scoring import Scorer
from metactl.tasks import TaskSuite, check_suite_name, load_suite
from metactl.tasks.suite import SAMPLING_TOOLS
from metactl.tools import TOOLS, Tool

if TYPE_CHECKING:
    from metactl.parallel import DataParallel

__all__ = [
    "DivergedError", "Engine", "Episode", "PhaseResult", "TaskState", "build_task", "check_layout", "check_schedule",
    "suite_tools",
]


@dataclass
class TaskState:
    """What depends on the task (suite): tool data with cached references, and the scorers.

    The reported scores (``scorer``: target, heldout, retain) and the base's on them are read only
    when asked for; a controller reads the ``observe`` split (:meth:`observe_scorer`), which no
    reported score uses.
    """

    suite: TaskSuite
    tools: dict[str, Tool]
    scorer: Scorer
    model: torch.nn.Module  # the engine's PeftModel, scored with its adapters off for the base
    # Puts the initial base weights in place for the duration (after a merge, the base a score compares
    # with is still the model as loaded); no-op for engines that do not merge.
    initial: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
    _base: dict[str, float] | None = None
    _observe: dict[int, Scorer] = field(default_factory=dict)
    _observe_base: dict[int, dict[str, float]] = field(default_factory=dict)

    @property
    def base_scores(self) -> dict[str, float]:
        """The base model's reported scores (computed on first use, then cached)."""
        if self._base is None:
            with self.initial(), base_only(self.model):
                self._base = self.scorer.score(self.model)
        return self._base

    def observe_scorer(self, probes: int = 0) -> Scorer:
        """A scorer on the observe split: its first ``probes`` probes per behaviour and retain texts
        (0: all). For readings in the middle of an episode (a controller's observation)."""
        if probes not in self._observe:
            scorer = Scorer(self.suite, self.scorer.tokenizer, self.scorer.reward, observe=probes)
            with self.initial():
                scorer.prepare(self.model)
            self._observe[probes] = scorer
        return self._observe[probes]

    def scorer_after(self, last: bool, every: bool, observe_probes: int | None) -> Scorer | None:
        """What a phase of a whole-schedule run is scored with: the reported splits after the last phase
        (and after every phase with ``every``), the observe split before it with ``observe_probes``."""
        if observe_probes is not None and not last:
            return self.observe_scorer(observe_probes)
        return self.scorer if last or every else None

    def observe_base(self, probes: int = 0) -> dict[str, float]:
        """The base model's scores on the observe split (what a controller sees before training)."""
        if probes not in self._observe_base:
            with self.initial(), base_only(self.model):
                self._observe_base[probes] = self.observe_scorer(probes).score(self.model)
        return self._observe_base[probes]


def build_task(
    config: RunConfig,
    suite: TaskSuite,
    tokenizer,
    model: torch.nn.Module,
    tool_names: list[str],
    device: torch.device,
    parallel: DataParallel | None = None,
) -> TaskState:
    """A task's tool data on ``device`` with the base's references cached, and its scorers.

    ``model`` is anything with an adapter-off switch (``disable_adapter()``): the engine's
    ``PeftModel`` or the population's stacked model; the references are the base's either way.
    """
    tools = {t: TOOLS[t].from_suite(config.tools[t], suite, tokenizer) for t in tool_names}
    if parallel is not None:
        from metactl.parallel import check_batches_cover

        check_batches_cover(
            {t: config.tools[t] for t in tools}, parallel.world, {t: len(tool) for t, tool in tools.items()}
        )
    for tool in tools.values():
        tool.to(device)
        tool.prepare(model)
    # Scores (the base's included) read only the first training.score_probes probes.
    scorer = Scorer(first_probes(suite, config.training.score_probes), tokenizer, config.reward)
    scorer.prepare(model)
    return TaskState(suite, tools, scorer, model)


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
        first_suite = load_suite(*check_names(config))
        self.config = config
        self.parallel = parallel
        self.device = parallel.device if parallel is not None else config.training.torch_device()
        self.tool_names = suite_tools(config, first_suite, tools)
        sampling = [t for t in self.tool_names if t in SAMPLING_TOOLS]
        if parallel is not None and sampling:
            # Each rank would sample its own shard of the prompts from one shared seed, so the completions
            # (and the run) would differ from the same run in one process.
            raise ConfigError(
                f"tools.{sampling[0]}: a data-parallel run does not train {sampling[0]} yet (each rank would "
                "sample its own shard, unlike a one-process run); run it in one process."
            )

        model, self.tokenizer, self.model_path, self.layer_map, lora = load_base(config, self.device, progress)
        self.adapters = AdapterSet(model, self.tool_names, self.layer_map, lora, model_path=self.model_path)
        self.model = self.adapters.model
        # What the tools' training forward runs through: DDP around the model in a data-parallel
        # run (references and scores always use the unwrapped model).
        self.train_model = parallel.wrap(self.adapters) if parallel is not None else self.model
        self._tasks: dict[tuple[str, int], TaskState] = {}
        self._rebased: TaskState | None = None  # the task whose tool references a merge moved
        self.task = self.load_task(config.task_seed, first_suite)

    def load_task(self, task_seed: int, suite: TaskSuite | None = None, suite_name: str | None = None) -> TaskState:
        """Switch to task ``task_seed`` of ``suite_name`` (default: the config's suite), built and
        cached on first use: data, references, scorers."""
        name = suite_name or self.config.suite
        # A task's references are the base's as loaded: switching task ends the merges of an episode.
        self.restore_base()
        if (name, task_seed) not in self._tasks:
            suite = suite or load_suite(name, task_seed)
            check_layout(self.config, suite, self.tool_names)
            self._tasks[name, task_seed] = build_task(
                self.config, suite, self.tokenizer, self.model, self.tool_names, self.device, self.parallel
            )
            self._tasks[name, task_seed].initial = self.adapters.initial_weights
        self.task = self._tasks[name, task_seed]
        return self.task

    def rebase(self, merges: dict | None = None) -> None:
        """After a merge (or with ``merges``, a checkpoint's :meth:`AdapterSet.merge_state`): the current
        task's tools take the merged model as their reference (DPO's reference log-probs, the retain
        KL's, GRPO's KL), as a trainer started on the merged checkpoint would."""
        if merges is not None:
            self.adapters.load_merge_state(merges)
        self._prepare(self.task)
        self._rebased = self.task

    def restore_base(self) -> None:
        """The base weights as loaded, and the references of the task a merge had moved."""
        if self.adapters.restore() and self._rebased is not None:
            self._prepare(self._rebased)
        self._rebased = None

    def _prepare(self, task: TaskState) -> None:
        """``task``'s tools take the base as it is now as their reference."""
        for tool in task.tools.values():
            tool.prepare(self.model)

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
        observe_probes: int | None = None,
    ) -> list[PhaseResult]:
        """Run a whole schedule from fresh adapters; returns one result per phase.

        With ``checkpoint``, the episode's full state is saved there (atomically) after every
        phase, and a run that finds a checkpoint of the same run resumes after its last complete
        phase, with results identical to an uninterrupted run. ``score_every_phase`` overrides
        the config's; with ``observe_probes`` the phases before the last are scored on the observe
        split instead (that many probes per behaviour; 0: all), the last on the reported splits.
        """
        from tqdm.auto import tqdm

        self.check_schedule(schedule)
        seed = self.config.training.seed if seed is None else seed
        ep = self.episode(seed)
        steps = schedule.phase_steps(self.config.training.total_steps)
        results: list[PhaseResult] = []
        every = self.config.training.score_every_phase if score_every_phase is None else score_every_phase
        fingerprint = (
            f"{self.config.to_yaml()}\n{schedule.to_yaml()}\nseed={seed} task_seed={self.task.suite.task_seed}"
        )
        if checkpoint is not None and Path(checkpoint).is_file():
            results = ep.load(checkpoint, fingerprint)
        with tqdm(
            total=sum(steps),
            initial=sum(steps[: len(results)]),
            desc="training",
            unit="step",
            disable=not progress,
            leave=False,
        ) as bar:
            for i, (phase, n) in enumerate(zip(schedule.phases, steps)):
                if i < len(results):
                    continue
                bar.set_postfix(phase=i)
                scorer = self.task.scorer_after(i == len(schedule.phases) - 1, every, observe_probes)
                res = ep.run_phase(phase, n, score=scorer is not None, on_step=bar.update, scorer=scorer)
                results.append(res)
                if checkpoint is not None:
                    ep.save(checkpoint, fingerprint, results)
                if on_phase:
                    on_phase(res)
        return results

    def check_schedule(self, schedule: Schedule) -> None:
        check_schedule(self.config, schedule, self.tool_names)
        if schedule.merges and self.parallel is not None:
            raise ConfigError(
                "schedule merges adapters, which a data-parallel run does not do yet; run it in one process."
            )

    def gradient_cosines(self, rows: int = 8) -> dict[str, list[float]]:
        """The interference reading of the current adapters (:mod:`metactl.interference`)."""
        from metactl.interference import gradient_cosines

        return gradient_cosines(self, rows)


def load_base(config: RunConfig, device: torch.device, progress: bool = True):
    """The base model on ``device`` (threads set first), its tokenizer and path, where its layers sit,
    and the LoRA settings: what either engine puts its adapters on."""
    torch.set_num_threads(config.training.threads)
    model, tokenizer, model_path = load_model(config.model, progress=progress)
    model.to(device)
    layer_map = resolve_layer_map(model, config.training.layer_groups)
    lora = LoraSettings(r=config.training.lora_r, alpha=config.training.lora_alpha)
    return model, tokenizer, model_path, layer_map, lora


def check_names(config: RunConfig) -> tuple[str, int]:
    resolve_model(config.model)
    check_suite_name(config.suite)
    return config.suite, config.task_seed


def _not_trained(config: RunConfig, tool: str) -> str:
    return f"this run does not train (its tools: {', '.join(config.tools)}); add it with --set tools.{tool}={{}}"


def suite_tools(config: RunConfig, suite: TaskSuite, tools: list[str] | None = None) -> list[str]:
    """The requested tools (default: the config's ``tools``) that ``suite`` has data for."""
    names = list(tools or config.tools)
    for t in names:
        if t not in TOOLS:
            raise ConfigError(f"tools: unknown tool {t!r}; allowed: {', '.join(TOOLS)}.{did_you_mean(t, TOOLS)}")
        if t not in config.tools:
            raise ConfigError(f"tools: {t!r} {_not_trained(config, t)}.")
    names = [t for t in names if suite.data.get(t)]
    if not names:
        raise ConfigError(f"suite {config.suite!r} has no data for any of the requested tools.")
    return names


def check_layout(config: RunConfig, suite: TaskSuite, tools: list[str]) -> None:
    """Another suite on an engine built for ``tools`` (an evaluation suite, a mixture's member)
    must give every one of them data: their adapters and losses were set up for it."""
    missing = [t for t in tools if not suite.data.get(t)]
    if missing:
        raise ConfigError(
            f"suite {suite.name!r} (task {suite.task_seed}) has no {missing[0]} data, but this run trains the tools "
            f"{', '.join(tools)} (from suite {config.suite!r}); evaluate on suites with data for the same tools."
        )


def check_schedule(
    config: RunConfig, schedule: Schedule, tools: list[str] | None = None, what: str = "schedule"
) -> None:
    """Does ``schedule`` fit the run? Checked from names and the suite's data, before any weights load."""
    if schedule.layer_groups != config.training.layer_groups:
        raise ConfigError(
            f"{what} has layer_groups={schedule.layer_groups} but training.layer_groups="
            f"{config.training.layer_groups}; pass --set training.layer_groups={schedule.layer_groups}."
        )
    if tools is None:
        tools = suite_tools(config, load_suite(*check_names(config)))
    missing = [t for t in schedule.tool_names if t not in tools]
    if missing and missing[0] in TOOLS and missing[0] not in config.tools:
        raise ConfigError(f"{what} uses tool {missing[0]!r}, which {_not_trained(config, missing[0])} (its options: "
                          "metactl tools).")
    if missing:
        raise ConfigError(
            f"{what} uses tool {missing[0]!r} but suite {config.suite!r} has no data for it "
            f"(its tools: {', '.join(tools)}); pick a suite with {missing[0]} data."
        )
