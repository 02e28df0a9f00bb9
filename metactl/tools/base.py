"""What every tool is: a named adapter trained by its own loss on its own data."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from metactl.errors import check_number

if TYPE_CHECKING:
    from metactl.forward import EncodedPairs
    from metactl.tasks.suite import TaskSuite


@dataclass
class ToolConfig:
    """Settings shared by every tool; subclasses add their own, each with help text."""

    lr: float = field(default=1e-3, metadata={"help": "base learning rate; a phase's train control multiplies it"})
    batch_size: int = field(default=16, metadata={"help": "rows per step"})

    def __post_init__(self) -> None:
        self.lr = check_number(f"tools.{self.tool_name()}.lr", self.lr, low=0.0, high=1.0, low_open=True)
        self.batch_size = int(
            check_number(f"tools.{self.tool_name()}.batch_size", self.batch_size, low=1, high=4096, integer=True)
        )

    @classmethod
    def tool_name(cls) -> str:
        return cls.__name__.removesuffix("Config").lower()

    @classmethod
    def help(cls) -> dict[str, str]:
        return {f.name: f.metadata.get("help", "") for f in fields(cls)}


class Tool(ABC):
    """A tool owns one LoRA adapter and a loss over its training rows.

    Subclasses set ``name``, ``Config`` and ``fields`` (the TRL dataset format they read), encode
    their rows once in ``__init__``, may cache anything that depends only on the frozen base in
    :meth:`prepare`, and split a step's loss in two: :meth:`batch` (the rows a batch of row
    indices runs through the model, and what the loss needs beside the logits) and
    :meth:`loss_of` (the loss from those logits). :meth:`loss` composes them; the population
    engine runs many episodes' batches through one forward and calls :meth:`loss_of` per episode,
    so both paths share every line of the loss.
    """

    name: ClassVar[str]
    Config: ClassVar[type[ToolConfig]]
    fields: ClassVar[tuple[str, ...]]

    def __init__(self, config: ToolConfig, rows: list[dict], tokenizer) -> None:
        self.config = config
        self.rows = rows
        self.tokenizer = tokenizer

    def __len__(self) -> int:
        return len(self.rows)

    @classmethod
    def from_suite(cls, config: ToolConfig, suite: TaskSuite, tokenizer) -> Tool:
        """The tool on ``suite``'s rows for it (a tool that needs more of the suite, e.g. its reward,
        takes it here)."""
        return cls(config, suite.data[cls.name], tokenizer)

    def prepare(self, peft_model) -> None:
        """Cache what depends only on the base model (called once per model and suite, and again when a
        merge has changed the base: the references are then the merged model's)."""

    def to(self, device: torch.device | str) -> None:
        """Move the encoded rows to the model's device (called before :meth:`prepare`)."""
        from metactl.forward import EncodedPairs

        for name, value in vars(self).items():
            if isinstance(value, EncodedPairs):
                setattr(self, name, value.to(device))

    def units(self, index: torch.Tensor) -> float:
        """What :meth:`loss` averages over for these rows (rows by default; tokens for token means).

        Data-parallel runs weigh each process's slice of a batch by it, so the ranks' averaged
        gradient is the gradient of the whole batch's loss.
        """
        return float(len(index))

    @abstractmethod
    def batch(self, index: torch.Tensor) -> tuple[EncodedPairs, Any]:
        """The rows that rows ``index`` run through the model, and what :meth:`loss_of` needs beside
        the logits (e.g. cached reference log-probs)."""

    @abstractmethod
    def loss_of(self, logits: torch.Tensor, batch: EncodedPairs, extra: Any) -> torch.Tensor:
        """Differentiable loss from the model's logits on ``batch`` (``[rows, width, vocab]``)."""

    def loss(self, model, index: torch.Tensor) -> torch.Tensor:
        """Differentiable loss of the rows ``index`` under ``model`` (all adapters active)."""
        from metactl.forward import forward_logits

        batch, extra = self.batch(index)
        return self.loss_of(forward_logits(model, batch), batch, extra)

    def sample(self, gen: torch.Generator) -> torch.Tensor:
        return torch.randint(len(self), (min(self.config.batch_size, len(self)),), generator=gen)
