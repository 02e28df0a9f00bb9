"""Tools by name. Each owns a peft LoRA adapter and a loss; see :class:`metactl.tools.base.Tool`."""

from __future__ import annotations

from metactl.errors import check_choice
from metactl.tools.base import Tool, ToolConfig
from metactl.tools.dpo import DPOConfig, DPOTool, dpo_loss
from metactl.tools.retain import RetainConfig, RetainTool
from metactl.tools.sft import SFTConfig, SFTTool

TOOLS: dict[str, type[Tool]] = {"sft": SFTTool, "dpo": DPOTool, "retain": RetainTool}


def register_tool(cls: type[Tool]) -> type[Tool]:
    TOOLS[cls.name] = cls
    return cls


def tool_class(name: str) -> type[Tool]:
    return TOOLS[check_choice("tool", name, TOOLS)]


__all__ = [
    "TOOLS", "DPOConfig", "DPOTool", "RetainConfig", "RetainTool", "SFTConfig", "SFTTool", "Tool",
    "ToolConfig", "dpo_loss", "register_tool", "tool_class",
]
