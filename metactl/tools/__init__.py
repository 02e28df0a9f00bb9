"""Tools by name. Each owns a peft LoRA adapter and a loss; see :class:`metactl.tools.base.Tool`."""

from __future__ import annotations

from metactl.errors import check_choice
from metactl.tools.base import Tool, ToolConfig
from metactl.tools.dpo import DPOConfig, DPOTool, dpo_loss
from metactl.tools.grpo import GRPOConfig, GRPOTool, grpo_loss
from metactl.tools.retain import RetainConfig, RetainTool
from metactl.tools.sft import SFTConfig, SFTTool

TOOLS: dict[str, type[Tool]] = {"sft": SFTTool, "dpo": DPOTool, "retain": RetainTool, "grpo": GRPOTool}
# The tools a run trains unless its config names more (``tools:`` keys); grpo is opt-in: it samples,
# so it costs far more per step, and every built-in suite would otherwise change its layout.
DEFAULT_TOOLS: tuple[str, ...] = ("sft", "dpo", "retain")


def register_tool(cls: type[Tool]) -> type[Tool]:
    TOOLS[cls.name] = cls
    return cls


def tool_class(name: str) -> type[Tool]:
    return TOOLS[check_choice("tool", name, TOOLS)]


__all__ = [
    "DEFAULT_TOOLS", "TOOLS", "DPOConfig", "DPOTool", "GRPOConfig", "GRPOTool", "RetainConfig", "RetainTool",
    "SFTConfig", "SFTTool", "Tool", "ToolConfig", "dpo_loss", "grpo_loss", "register_tool", "tool_class",
]
