"""The task suite: data for each tool plus the evaluation splits the scores are computed on."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from metactl.errors import ConfigError, DataError
from metactl.rewards import RewardSpec

# Fields each tool's rows must carry (TRL's dataset formats).
TOOL_FORMATS: dict[str, tuple[str, ...]] = {
    "sft": ("prompt", "completion"),
    "dpo": ("prompt", "chosen", "rejected"),
    "retain": ("text",),
    "grpo": ("prompt",),  # TRL's prompt-only format, plus the columns the suite's reward reads
}
SAMPLING_TOOLS = ("grpo",)  # tools that sample their own completions and need the suite's reward
EVAL_FIELDS = ("prompt", "chosen", "rejected")
SPLITS = ("target", "heldout")  # the probe splits reported scores are computed on
OBSERVE = "observe"  # the controller's split: training-distribution probes no reported score uses
OBSERVE_PROBES = 16  # per behaviour (and retain texts) in a built-in suite's observe split
OBSERVE_SHARE = 0.25  # of a user suite's target probes and retain texts, when suite.yaml gives no observe split


@dataclass
class EvalItem:
    """A behaviour probe: does the model prefer ``chosen`` over ``rejected`` after ``prompt``?

    Each side is a list of completions whose probabilities are summed (log-sum-exp), so e.g. a
    correct answer counts whether or not it is written in the style.
    """

    prompt: str
    chosen: list[str]
    rejected: list[str]


@dataclass
class Behaviour:
    """A target behaviour and the tool meant to produce it."""

    name: str
    tool: str
    description: str = ""


@dataclass
class TaskSuite:
    """Everything a run needs besides the model.

    ``data[tool]`` are the tool's training rows; ``evals[split][behaviour]`` the probes for the
    ``target`` split (the tools' own input distribution) and the ``heldout`` split (inputs no tool
    saw); ``retain`` are general texts for the stability scores. These three feed the reported
    scores. ``observe[behaviour]`` and ``observe_retain`` are the controller's split: probes from
    the training distribution, disjoint from every reported probe (no prompt in common), read
    between phases; no reported score uses them. ``features`` describe the task numerically.
    """

    name: str
    task_seed: int
    data: dict[str, list[dict]]
    behaviours: list[Behaviour]
    evals: dict[str, dict[str, list[EvalItem]]]
    retain: list[str]
    observe: dict[str, list[EvalItem]] = field(default_factory=dict)
    observe_retain: list[str] = field(default_factory=list)
    features: dict[str, float] = field(default_factory=dict)
    description: str = ""
    rewards: dict[str, RewardSpec] = field(default_factory=dict)  # per sampling tool (grpo): what a sample earns

    def __post_init__(self) -> None:
        for tool, rows in self.data.items():
            need = TOOL_FORMATS.get(tool)
            if need is None:
                continue  # tools added later declare their own format
            for i, row in enumerate(rows):
                missing = [k for k in need if k not in row]
                if missing:
                    raise DataError(
                        f"suite {self.name!r}: {tool} row {i} is missing field {missing[0]!r} "
                        f"(needs {', '.join(need)})."
                    )
            if tool in SAMPLING_TOOLS and rows:
                self._check_sampling_rows(tool, rows)
        for b in self.behaviours:
            for split in SPLITS:
                if not self.evals.get(split, {}).get(b.name):
                    raise ConfigError(f"suite {self.name!r}: behaviour {b.name!r} has no {split!r} probes.")
        if not self.retain:
            raise ConfigError(f"suite {self.name!r}: the retain split is empty.")
        for b in self.behaviours:
            if not self.observe.get(b.name):
                raise ConfigError(f"suite {self.name!r}: behaviour {b.name!r} has no {OBSERVE!r} probes.")
        if not self.observe_retain:
            raise ConfigError(f"suite {self.name!r}: the {OBSERVE} split has no retain texts.")
        reported = self.reported_prompts()
        for b, items in self.observe.items():
            shared = [item.prompt for item in items if item.prompt in reported]
            if shared:
                raise DataError(
                    f"suite {self.name!r}: {OBSERVE} probe {shared[0]!r} ({b}) is also a reported probe; the "
                    f"{OBSERVE} split must share no prompt with the target and heldout probes (a user suite "
                    "without evals.observe holds back its last target probes: keep those prompts unique)."
                )
        shared = set(self.observe_retain) & set(self.retain)
        if shared:
            raise DataError(
                f"suite {self.name!r}: {OBSERVE} retain text {min(shared)!r} is also a reported retain text."
            )

    def _check_sampling_rows(self, tool: str, rows: list[dict]) -> None:
        """A sampling tool's rows: a reward to score its samples, its columns, and a prompt to sample after."""
        if tool not in self.rewards:
            raise ConfigError(
                f"suite {self.name!r}: {tool} data needs a reward (suite.yaml: rewards: {{{tool}: {{name: "
                f"contains, field: answer}}}}; metactl.rewards lists them)."
            )
        self.rewards[tool].check_rows(rows, f"suite {self.name!r} {tool} data")
        for i, row in enumerate(rows, start=1):
            if not isinstance(row["prompt"], str) or not row["prompt"].strip():
                raise DataError(
                    f"suite {self.name!r}: {tool} row {i}: prompt must be non-empty text (the tool samples "
                    f"its completion after it), got {row['prompt']!r}."
                )

    def reported_prompts(self) -> set[str]:
        """Every prompt a reported score reads (target and heldout probes of every behaviour)."""
        return {item.prompt for split in SPLITS for items in self.evals.get(split, {}).values() for item in items}

    @property
    def tools(self) -> list[str]:
        return [t for t, rows in self.data.items() if rows]


def draw_observe(
    reported: set[str],
    retain: list[str],
    probes: dict[str, Callable[[], EvalItem]],
    retain_text: Callable[[], str],
    n: int = OBSERVE_PROBES,
    tries: int = 10_000,
) -> tuple[dict[str, list[EvalItem]], list[str]]:
    """A built-in suite's observe split: ``n`` probes per behaviour from ``probes[b]()`` and ``n``
    retain texts, skipping any that a reported score reads (or that were already drawn)."""
    seen, texts = set(reported), set(retain)
    out: dict[str, list[EvalItem]] = {}
    for b, draw in probes.items():
        out[b] = []
        for _ in range(tries):
            item = draw()
            if item.prompt not in seen:
                seen.add(item.prompt)
                out[b].append(item)
                if len(out[b]) == n:
                    break
    kept: list[str] = []
    for _ in range(tries):
        text = retain_text()
        if text not in texts:
            texts.add(text)
            kept.append(text)
            if len(kept) == n:
                break
    return out, kept


# The tool that produces each behaviour of a built-in family, in order: the controller's
# observation and the reports read behaviour 0 as sft's and behaviour 1 as dpo's.
FAMILY_TOOLS = ("sft", "dpo")

ProbeDraw = Callable[[int], EvalItem]  # the i-th probe of a split (i lets a split alternate kinds of input)


def two_tool_suite(
    name: str,
    task_seed: int,
    *,
    behaviours: tuple[Behaviour, Behaviour],
    data: dict[str, list[dict]],
    target: dict[str, ProbeDraw],
    heldout: dict[str, ProbeDraw],
    observe: dict[str, Callable[[], EvalItem]],
    retain: list[str],
    observe_retain: Callable[[], str],
    features: dict[str, float],
    description: str,
    n_eval: int = 64,
) -> TaskSuite:
    """A built-in family's suite: ``sft`` produces the first behaviour, ``dpo`` the second.

    ``target[b](i)`` and ``heldout[b](i)`` draw the reported probes (``n_eval`` each, target
    before heldout, behaviours in order, so a family's RNG stream fixes them); ``observe[b]()``
    and ``observe_retain()`` draw the controller's split, which must come from a stream of its
    own so that the reported probes do not depend on it, and skips every reported prompt.
    """
    if tuple(b.tool for b in behaviours) != FAMILY_TOOLS:
        raise ConfigError(
            f"suite {name!r}: a built-in family's behaviours are made by {', '.join(FAMILY_TOOLS)} in that "
            f"order, got {', '.join(b.tool for b in behaviours)}."
        )
    evals = {
        split: {b.name: [draw[b.name](i) for i in range(n_eval)] for b in behaviours}
        for split, draw in (("target", target), ("heldout", heldout))
    }
    reported = {item.prompt for split in evals.values() for items in split.values() for item in items}
    obs, obs_retain = draw_observe(reported, retain, observe, observe_retain)
    return TaskSuite(
        name=name,
        task_seed=task_seed,
        data=data,
        behaviours=list(behaviours),
        evals=evals,
        retain=retain,
        observe=obs,
        observe_retain=obs_retain,
        features=features,
        description=description,
    )


def style_truth_suite(
    name: str,
    task_seed: int,
    data: dict[str, list[dict]],
    evals: dict[str, dict[str, list[EvalItem]]],
    retain: list[str],
    style: str,
    truth: str,
    features: dict[str, float],
    description: str,
    observe: dict[str, list[EvalItem]],
    observe_retain: list[str],
) -> TaskSuite:
    """The first built-in suites' shape: ``sft`` produces a ``style``, ``dpo`` produces ``truth``
    (their probes drawn by the caller; newer families use :func:`two_tool_suite`)."""
    return TaskSuite(
        name=name,
        task_seed=task_seed,
        data=data,
        behaviours=[Behaviour("style", "sft", style), Behaviour("truth", "dpo", truth)],
        evals=evals,
        retain=retain,
        observe=observe,
        observe_retain=observe_retain,
        features=features,
        description=description,
    )
