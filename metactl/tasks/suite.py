"""The task suite: data for each tool plus the evaluation splits the scores are computed on."""

from __future__ import annotations

from dataclasses import dataclass, field

from metactl.errors import ConfigError, DataError

# Fields each tool's rows must carry (TRL's dataset formats).
TOOL_FORMATS: dict[str, tuple[str, ...]] = {
    "sft": ("prompt", "completion"),
    "dpo": ("prompt", "chosen", "rejected"),
    "retain": ("text",),
}
EVAL_FIELDS = ("prompt", "chosen", "rejected")
SPLITS = ("target", "heldout")


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
    saw); ``retain`` are general texts for the stability scores. ``features`` describe the task
    numerically (for controllers that condition on the task).
    """

    name: str
    task_seed: int
    data: dict[str, list[dict]]
    behaviours: list[Behaviour]
    evals: dict[str, dict[str, list[EvalItem]]]
    retain: list[str]
    features: dict[str, float] = field(default_factory=dict)
    description: str = ""

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
        for b in self.behaviours:
            for split in SPLITS:
                if not self.evals.get(split, {}).get(b.name):
                    raise ConfigError(f"suite {self.name!r}: behaviour {b.name!r} has no {split!r} probes.")
        if not self.retain:
            raise ConfigError(f"suite {self.name!r}: the retain split is empty.")

    @property
    def tools(self) -> list[str]:
        return [t for t, rows in self.data.items() if rows]


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
) -> TaskSuite:
    """The built-in suites' shape: ``sft`` produces a ``style``, ``dpo`` produces ``truth``."""
    return TaskSuite(
        name=name,
        task_seed=task_seed,
        data=data,
        behaviours=[Behaviour("style", "sft", style), Behaviour("truth", "dpo", truth)],
        evals=evals,
        retain=retain,
        features=features,
        description=description,
    )
