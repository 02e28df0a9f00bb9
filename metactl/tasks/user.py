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
    evals:                      # {"prompt", "chosen": str|[str], "rejected": str|[str]}
      target: {style: eval/style_target.jsonl, truth: eval/truth_target.jsonl}
      heldout: {style: eval/style_heldout.jsonl, truth: eval/truth_heldout.jsonl}
    retain: eval/retain.jsonl   # {"text"}: general text for the stability scores
"""

from __future__ import annotations

from pathlib import Path

import yaml

from metactl.errors import ConfigError, DataError, did_you_mean
from metactl.rundir import read_jsonl
from metactl.tasks.suite import EVAL_FIELDS, SPLITS, TOOL_FORMATS, Behaviour, EvalItem, TaskSuite

_KEYS = ("name", "description", "behaviours", "data", "evals", "retain")


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


def load_user_suite(folder: str | Path, task_seed: int = 0) -> TaskSuite:
    base = Path(folder)
    spec_path = base / "suite.yaml"
    if not spec_path.is_file():
        raise ConfigError(f"suite: {str(base)!r} is not a built-in suite name and has no suite.yaml.")
    spec = yaml.safe_load(spec_path.read_text()) or {}
    bad = [k for k in spec if k not in _KEYS]
    if bad:
        raise ConfigError(
            f"{spec_path}: unknown key {bad[0]!r}; allowed: {', '.join(_KEYS)}.{did_you_mean(bad[0], _KEYS)}"
        )
    data = {}
    for tool, rel in (spec.get("data") or {}).items():
        if tool not in TOOL_FORMATS:
            raise ConfigError(
                f"{spec_path}: data.{tool}: unknown tool; "
                f"allowed: {', '.join(TOOL_FORMATS)}.{did_you_mean(tool, TOOL_FORMATS)}"
            )
        data[tool] = _rows(base, rel, TOOL_FORMATS[tool], f"{tool} row")
    behaviours = [Behaviour(b["name"], b["tool"], b.get("description", "")) for b in spec.get("behaviours") or []]
    evals = {}
    for split in SPLITS:
        evals[split] = {}
        for name, rel in ((spec.get("evals") or {}).get(split) or {}).items():
            rows = _rows(base, rel, EVAL_FIELDS, "eval probe")
            evals[split][name] = [EvalItem(r["prompt"], _as_list(r["chosen"]), _as_list(r["rejected"])) for r in rows]
    retain = [r["text"] for r in _rows(base, spec.get("retain"), ("text",), "retain text")]
    return TaskSuite(
        name=spec.get("name", base.name),
        task_seed=task_seed,
        data=data,
        behaviours=behaviours,
        evals=evals,
        retain=retain,
        description=spec.get("description", ""),
    )
