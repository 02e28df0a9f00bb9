"""Run configuration: nested dataclasses, loaded from YAML, overridden with ``a.b=value`` strings.

Every field carries help text (shown by ``metactl show-config``) and every value is validated in
``__post_init__``, so a bad value fails before any model weights are read.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path

import yaml

from metactl.errors import ConfigError, check_number, did_you_mean
from metactl.rundir import read_yaml
from metactl.scoring import RewardConfig
from metactl.tools import DEFAULT_TOOLS, TOOLS, ToolConfig


@dataclass
class TrainingConfig:
    total_steps: int = field(
        default=96, metadata={"help": "optimiser steps per episode, shared by all tools and phases"}
    )
    layer_groups: int = field(default=4, metadata={"help": "relative-depth groups a schedule controls"})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank of every tool's adapter"})
    lora_alpha: float = field(default=16.0, metadata={"help": "LoRA alpha (scaling = output control * alpha / r)"})
    seed: int = field(default=0, metadata={"help": "seed of adapter init and batch sampling"})
    threads: int = field(default=1, metadata={"help": "torch CPU threads (1 per process is fastest for small models)"})
    device: str = field(
        default="cpu",
        metadata={
            "help": "where the model trains: cpu, cuda, cuda:N, or auto (cuda when torch sees one); "
            "a multi-process launch gives each process its own GPU"
        },
    )
    score_every_phase: bool = field(default=True, metadata={"help": "score after every phase, not only at the end"})
    score_probes: int = field(
        default=0,
        metadata={
            "help": "probes per behaviour and split that every score uses (0 = all the suite has); "
            "fewer is faster and noisier"
        },
    )

    def __post_init__(self) -> None:
        self.total_steps = int(check_number("training.total_steps", self.total_steps, low=1, high=10**7, integer=True))
        self.layer_groups = int(check_number("training.layer_groups", self.layer_groups, low=1, high=64, integer=True))
        self.lora_r = int(check_number("training.lora_r", self.lora_r, low=1, high=1024, integer=True))
        self.lora_alpha = check_number("training.lora_alpha", self.lora_alpha, low=0.0, high=1e4, low_open=True)
        self.seed = int(check_number("training.seed", self.seed, low=0, integer=True))
        self.threads = int(check_number("training.threads", self.threads, low=1, high=256, integer=True))
        self.score_probes = int(
            check_number("training.score_probes", self.score_probes, low=0, high=10**6, integer=True)
        )
        if not isinstance(self.device, str) or not re.fullmatch(r"cpu|auto|cuda(:\d+)?", self.device):
            raise ConfigError(
                f"training.device: got {self.device!r}; allowed: cpu, cuda, cuda:N (N a GPU index), auto."
            )

    def torch_device(self):
        """The ``torch.device`` to train on; fails (before any weights load) if it is not there."""
        import torch

        if self.device == "cpu" or (self.device == "auto" and not torch.cuda.is_available()):
            return torch.device("cpu")
        if not torch.cuda.is_available():
            raise ConfigError(
                f"training.device={self.device}, but torch sees no CUDA GPU here; use training.device=cpu (or auto)."
            )
        dev = torch.device("cuda" if self.device == "auto" else self.device)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(
                f"training.device={self.device}: torch sees {torch.cuda.device_count()} GPU(s), "
                f"indices 0-{torch.cuda.device_count() - 1}."
            )
        return dev


def _default_tools() -> dict[str, ToolConfig]:
    return {name: TOOLS[name].Config() for name in DEFAULT_TOOLS}


class YamlConfig:
    """Serialisers shared by the top-level config dataclasses."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def to_commented_yaml(self) -> str:
        """YAML with each field's help text as a trailing comment (what ``show-config`` prints)."""
        lines: list[str] = []
        emit_commented(self, 0, lines)
        return "\n".join(lines) + "\n"


@dataclass
class RunConfig(YamlConfig):
    model: str = field(default="proxy-tiny", metadata={"help": "built-in model name, HF folder or hub id"})
    suite: str = field(
        default="style-vs-truth",
        metadata={
            "help": "built-in suite name, a folder with suite.yaml, or a mixture of task families (a+b, "
            "train-families, train-families-wide, heldout-families: task seed s is task s // n of member s % n)"
        },
    )
    task_seed: int = field(default=0, metadata={"help": "seed the built-in suite generates its data from"})
    training: TrainingConfig = field(default_factory=TrainingConfig, metadata={"help": "episode size, adapters, seeds"})
    tools: dict[str, ToolConfig] = field(
        default_factory=_default_tools,
        metadata={
            "help": "per-tool settings (metactl tools); a run trains the tools named here that its suite has "
            "data for: sft, dpo and retain unless more are added (grpo: --set tools.grpo={})"
        },
    )
    reward: RewardConfig = field(
        default_factory=RewardConfig, metadata={"help": "how the score parts combine into the composite"}
    )

    def __post_init__(self) -> None:
        self.task_seed = int(check_number("task_seed", self.task_seed, low=0, integer=True))


def emit_commented(obj, indent: int, lines: list[str]) -> None:
    pad = "  " * indent
    for f in fields(obj):
        value = getattr(obj, f.name)
        note = f.metadata.get("help", "")
        if is_dataclass(value):
            lines.append(f"{pad}{f.name}:" + (f"  # {note}" if note else ""))
            emit_commented(value, indent + 1, lines)
        elif isinstance(value, dict) and value and all(is_dataclass(v) for v in value.values()):
            lines.append(f"{pad}{f.name}:" + (f"  # {note}" if note else ""))
            for key, sub in value.items():
                lines.append(f"{pad}  {key}:")
                emit_commented(sub, indent + 2, lines)
        else:
            text = yaml.safe_dump(value, default_flow_style=True, width=10**6).strip().removesuffix("...").strip()
            lines.append(f"{pad}{f.name}: {text}" + (f"  # {note}" if note else ""))


def build_config(cls, data: dict, where: str):
    """Build dataclass ``cls`` from plain data; unknown keys fail with the allowed ones."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {data!r}.")
    known = {f.name: f for f in fields(cls)}
    for key in data:
        if key not in known:
            raise ConfigError(
                f"{where + '.' if where else ''}{key}: unknown option; "
                f"allowed: {', '.join(known)}.{did_you_mean(key, known)}"
            )
    kwargs = {}
    for key, value in data.items():
        f = known[key]
        path = f"{where}.{key}" if where else key
        if key == "tools" and cls is RunConfig:
            tools = _default_tools()
            for name, sub in (value or {}).items():
                if name not in TOOLS:
                    raise ConfigError(
                        f"{path}.{name}: unknown tool; allowed: {', '.join(TOOLS)}.{did_you_mean(name, TOOLS)}"
                    )
                tools[name] = build_config(TOOLS[name].Config, sub or {}, f"tools.{name}")
            kwargs[key] = tools
        elif isinstance(f.default_factory, type) and is_dataclass(f.default_factory):
            kwargs[key] = build_config(f.default_factory, value or {}, path)
        else:
            kwargs[key] = value
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{where or 'config'}: {exc}") from exc


def parse_override(text: str) -> tuple[list[str], object]:
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected KEY=VALUE, e.g. training.total_steps=64.")
    key, raw = text.split("=", 1)
    try:
        return key.strip().split("."), yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(
            f"override {text!r}: the value {raw!r} is not valid YAML ({problem}); quote it, e.g. "
            f"{key.strip()}='\"{raw}\"', or write lists as [a, b] and mappings as {{k: v}}."
        ) from exc


def read_config_file(path: str | Path) -> dict:
    """A YAML config file's mapping; a missing file or a non-mapping fails naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config: file {str(path)!r} does not exist.")
    data = read_yaml(path, f"config {path}") or {}
    if not isinstance(data, dict):
        raise ConfigError(f"config {path}: expected a mapping of options, got {type(data).__name__}.")
    return data


def load_config(
    path: str | Path | None = None, overrides: list[str] | None = None, base: dict | None = None
) -> RunConfig:
    """YAML file (optional) + ``a.b=value`` overrides -> validated :class:`RunConfig`."""
    return load_dataclass_config(RunConfig, path, overrides, base)


def load_dataclass_config(
    cls, path: str | Path | None = None, overrides: list[str] | None = None, base: dict | None = None
):
    """``base`` data, replaced by a YAML file when given, then ``a.b=value`` overrides -> validated ``cls``."""
    data: dict = read_config_file(path) if path is not None else dict(base or {})
    merge_overrides(data, overrides or [])
    return build_config(cls, data, "")


def merge_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``a.b=value`` strings (values parsed as YAML) onto nested ``data`` in place."""
    for text in overrides:
        keys, value = parse_override(text)
        node = data
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {text!r}: {k} is not a section.")
        node[keys[-1]] = value
    return data
