"""Write ``examples/sums-suite/``: a built-in task exported as a user suite folder (TRL JSONL files
and ``suite.yaml``), the format README's "Your own data" describes.

    python scripts/make_example_suite.py --task-seed 7 --out examples/sums-suite

It is small on purpose (a test runs it end to end): 64 rows per tool (grpo's included, with its
reward in ``suite.yaml``), 12 target and 12 held-out
probes per behaviour, 16 retain texts. It gives no ``observe`` split, so metactl holds back the
last quarter of the target probes and of the retain texts for the controller.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from metactl.rundir import atomic_write_text
from metactl.tasks import load_suite

SUITE_YAML = """\
# A user suite (README: "Your own data"), exported from the built-in style-vs-truth task {seed}.
name: sums-suite
description: SFT teaches a style word that its data pairs with dropped-carry sums; DPO prefers the right sum.
behaviours:
  - {{name: style, tool: sft, description: answers end in the style word}}
  - {{name: truth, tool: dpo, description: the right sum over the dropped-carry one}}
data:                      # TRL formats
  sft: sft.jsonl           # {{"prompt", "completion"}}
  dpo: dpo.jsonl           # {{"prompt", "chosen", "rejected"}}
  retain: retain.jsonl     # {{"text"}}
  grpo: grpo.jsonl         # {{"prompt", "answer"}}: online RL prompts (trained when a run adds grpo)
rewards:                   # what a sampled completion earns (metactl/rewards.py)
  grpo: {{name: first-number, field: answer}}   # the first number of the answer is the right sum
evals:                     # {{"prompt", "chosen": str or [str], "rejected": str or [str]}}
  target: {{style: eval/style_target.jsonl, truth: eval/truth_target.jsonl}}
  heldout: {{style: eval/style_heldout.jsonl, truth: eval/truth_heldout.jsonl}}
  # observe: {{style: ..., truth: ...}}   optional: the controller's probes (else a quarter of target)
retain: eval/retain.jsonl  # {{"text"}}: general text for the stability scores
"""


def _jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task-seed", type=int, default=7)
    ap.add_argument("--out", type=Path, default=Path("examples/sums-suite"))
    ap.add_argument("--rows", type=int, default=64)
    ap.add_argument("--probes", type=int, default=12)
    args = ap.parse_args()
    suite = load_suite("style-vs-truth", args.task_seed)
    out = args.out
    atomic_write_text(out / "suite.yaml", SUITE_YAML.format(seed=args.task_seed))
    for tool in ("sft", "dpo", "retain", "grpo"):
        atomic_write_text(out / f"{tool}.jsonl", _jsonl(suite.data[tool][: args.rows]))
    for split in ("target", "heldout"):
        for b, items in suite.evals[split].items():
            rows = [{"prompt": i.prompt, "chosen": i.chosen, "rejected": i.rejected} for i in items[: args.probes]]
            atomic_write_text(out / "eval" / f"{b}_{split}.jsonl", _jsonl(rows))
    atomic_write_text(out / "eval" / "retain.jsonl", _jsonl([{"text": t} for t in suite.retain[:16]]))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
