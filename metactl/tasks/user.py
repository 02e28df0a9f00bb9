"""User-provided suites: a folder with ``suite.yaml`` pointing at JSONL files or ``datasets`` folders.

::

    name: my-suite
    behaviours:
      - {name: style, tool: sft, description: answers in my house style}
      - {name: truth, tool: dpo}
    data:                       # TRL formats
      sft: sft.jsonl            # {"prompt", "completion"}
      dpo: dpo.jsonl            # {"prompt", "chosen", "rejected"}
      retain: retain.jsonl      # {"text"} (optional)
      grpo: grpo.jsonl          # {"prompt", ...} (optional; online RL, needs rewards.grpo)
    rewards:                    # what a sampled completion earns (metactl.rewards), per sampling tool
      grpo: {name: contains, field: answer}   # or {name: regex, value: "ok[.]$"}
    evals:                      # {"prompt", "chosen": str|[str], "rejected": str|[str]}
      target: {style: eval/style_target.jsonl, truth: eval/truth_target.jsonl}
      heldout: {style: eval/style_heldout.jsonl, truth: eval/truth_heldout.jsonl}
      observe: {style: eval/style_observe.jsonl, truth: eval/truth_observe.jsonl}   # optional
    retain: eval/retain.jsonl   # {"text"}: general text for the stability scores
    observe_retain: eval/retain_observe.jsonl                                        # optional

``target`` and ``heldout`` probes and ``retain`` texts feed the reported scores. ``observe`` is what
a controller reads between phases (training-distribution probes that no reported score uses; no
prompt in common with a reported probe). Without it, the last ``OBSERVE_SHARE`` (a quarter,
rounded up) of each behaviour's target probes is held back as its observe probes, and likewise
of the retain texts; the target scores then use the rest.
"""

from __future__ import annotations

import math
from pathlib import Path

from metactl.errors import ConfigError, DataError, did_you_mean
from metactl.rewards import RewardSpec
from metactl.rundir import read_jsonl, read_yaml
from metactl.tasks.suite import (
    EVAL_FIELDS,
    OBSERVE,
    OBSERVE_SHARE,
    SAMPLING_TOOLS,
    SPLITS,
    TOOL_FORMATS,
    Behaviour,
    EvalItem,
    TaskSuite,
)

_KEYS = ("name", "description", "behaviours", "data", "evals", "retain", "observe_retain", "rewards")
_EVAL_SPLITS = (*SPLITS, OBSERVE)


def _rows(base: Path, rel: object, required: tuple[str, ...], kind: str) -> list[dict]:
    if not isinstance(rel, str):
        raise ConfigError(f"{base / 'suite.yaml'}: expected a file path for {kind}, got {rel!r}.")
    path = base / rel
    if path.is_dir():
        # A `datasets` folder saved with `Dataset.save_to_disk`.
        from datasets import load_from_disk

        ds = load_from_disk(str(path))
        missing = [k for k in required if k not in ds.column_names]
        if missing:
            raise DataError(f"{path}: {kind} dataset is missing column {missing[0]!r} (needs {', '.join(required)}).")
        return [dict(r) for r in ds]
    return read_jsonl(path, required, kind)


def _as_list(v: object) -> list[str]:
    return [v] if isinstance(v, str) else list(v)


def _probes(base: Path, rel: object) -> list[EvalItem]:
    items = []
    for i, r in enumerate(_rows(base, rel, EVAL_FIELDS, "eval probe"), start=1):
        chosen, rejected = _as_list(r["chosen"]), _as_list(r["rejected"])
        for side, completions in (("chosen", chosen), ("rejected", rejected)):
            if not completions or any(not isinstance(c, str) or not c for c in completions):
                raise DataError(
                    f"{base / str(rel)}:{i}: {side} needs at least one non-empty completion, got {r[side]!r}; "
                    "a probe compares the model's probability of its chosen and rejected completions."
                )
        items.append(EvalItem(r["prompt"], chosen, rejected))
    return items


def _hold_back(items: list, share: float = OBSERVE_SHARE) -> tuple[list, list]:
    """(kept, held back): the last ``ceil(share * n)`` items, at least one, are held back."""
    n = max(1, math.ceil(share * len(items)))
    return items[:-n], items[-n:]


def read_spec(folder: str | Path) -> tuple[Path, dict]:
    """``suite.yaml`` as a checked mapping; YAML errors name the file and line."""
    base = Path(folder)
    spec_path = base / "suite.yaml"
    if not spec_path.is_file():
        raise ConfigError(f"suite: {str(base)!r} is not a built-in suite name and has no suite.yaml.")
    spec = read_yaml(spec_path) or {}
    if not isinstance(spec, dict):
        raise ConfigError(f"{spec_path}: expected a mapping with behaviours, data, evals and retain.")
    bad = [k for k in spec if k not in _KEYS]
    if bad:
        raise ConfigError(
            f"{spec_path}: unknown key {bad[0]!r}; allowed: {', '.join(_KEYS)}.{did_you_mean(bad[0], _KEYS)}"
        )
    return spec_path, spec


def load_user_suite(folder: str | Path, task_seed: int = 0) -> TaskSuite:
    spec_path, spec = read_spec(folder)
    base = spec_path.parent
    rewards = {}
    raw_rewards = spec.get("rewards") or {}
    if not isinstance(raw_rewards, dict):
        raise ConfigError(
            f"{spec_path}: rewards: expected a mapping such as {{grpo: {{name: contains, field: answer}}}}."
        )
    for tool, raw in raw_rewards.items():
        if tool not in SAMPLING_TOOLS:
            raise ConfigError(
                f"{spec_path}: rewards.{tool}: only tools that sample their own completions take a reward "
                f"({', '.join(SAMPLING_TOOLS)}).{did_you_mean(str(tool), SAMPLING_TOOLS)}"
            )
        rewards[tool] = RewardSpec.parse(raw, f"{spec_path}: rewards.{tool}")
    data = {}
    for tool, rel in (spec.get("data") or {}).items():
        if tool not in TOOL_FORMATS:
            raise ConfigError(
                f"{spec_path}: data.{tool}: unknown tool; "
                f"allowed: {', '.join(TOOL_FORMATS)}.{did_you_mean(tool, TOOL_FORMATS)}"
            )
        data[tool] = _rows(base, rel, TOOL_FORMATS[tool], f"{tool} row")
        if tool in rewards:
            rewards[tool].check_rows(data[tool], str(base / str(rel)))
    behaviours = []
    for i, b in enumerate(spec.get("behaviours") or []):
        if not isinstance(b, dict) or "name" not in b or "tool" not in b:
            raise ConfigError(f"{spec_path}: behaviours[{i}]: expected {{name: ..., tool: ...}}, got {b!r}.")
        if b["tool"] not in TOOL_FORMATS:
            raise ConfigError(
                f"{spec_path}: behaviours[{i}].tool: unknown tool {b['tool']!r}; allowed: "
                f"{', '.join(TOOL_FORMATS)}.{did_you_mean(str(b['tool']), TOOL_FORMATS)}"
            )
        behaviours.append(Behaviour(b["name"], b["tool"], b.get("description", "")))
    spec_evals = spec.get("evals") or {}
    bad = [k for k in spec_evals if k not in _EVAL_SPLITS]
    if bad:
        raise ConfigError(
            f"{spec_path}: evals.{bad[0]}: unknown split; allowed: {', '.join(_EVAL_SPLITS)}."
            f"{did_you_mean(str(bad[0]), _EVAL_SPLITS)}"
        )
    evals = {split: {name: _probes(base, rel) for name, rel in (spec_evals.get(split) or {}).items()}
             for split in SPLITS}
    retain = [r["text"] for r in _rows(base, spec.get("retain"), ("text",), "retain text")]
    if spec_evals.get(OBSERVE):
        observe = {name: _probes(base, rel) for name, rel in spec_evals[OBSERVE].items()}
    else:  # held back from the target probes, which then score on the rest
        observe = {}
        for name, items in evals["target"].items():
            if len(items) < 2:
                raise ConfigError(
                    f"{spec_path}: evals.target.{name} has {len(items)} probe; with no evals.observe split, "
                    f"{OBSERVE_SHARE:.0%} of the target probes are held back for the controller, so give at "
                    "least 2 (or an evals.observe file)."
                )
            evals["target"][name], observe[name] = _hold_back(items)
    if spec.get("observe_retain"):
        observe_retain = [r["text"] for r in _rows(base, spec["observe_retain"], ("text",), "retain text")]
    else:
        if len(retain) < 2:
            raise ConfigError(
                f"{spec_path}: retain has {len(retain)} text; with no observe_retain file, {OBSERVE_SHARE:.0%} of "
                "the retain texts are held back for the controller, so give at least 2."
            )
        retain, observe_retain = _hold_back(retain)
    return TaskSuite(
        name=spec.get("name", base.name),
        task_seed=task_seed,
        data=data,
        behaviours=behaviours,
        evals=evals,
        retain=retain,
        observe=observe,
        observe_retain=observe_retain,
        description=spec.get("description", ""),
        rewards=rewards,
    )
