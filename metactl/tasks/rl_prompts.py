"""The ``grpo`` tool's data in the built-in suites: prompt-only rows and a verifiable reward.

Every built-in family already asks its SFT questions in a form whose right answer can be
computed: a sum in the proxy world, a verb's past tense in the English one. The RL tool samples
its own answers to those same prompts and is rewarded when the answer is right:

- proxy families: ``first-number``, the first integer of the completion equals the sum (whatever
  style or refusal word is wrapped around it);
- English families: ``first-word``, the completion's first word is the verb's true past tense
  (``contains`` would reward ``thinked, just as you thought.``).

Where DPO teaches the truth (seven of the nine families) the reward agrees with it and pulls
against whatever error or refusal SFT teaches: the conflict whose order effects the tool is there
to measure. In ``keep-vs-wrap`` it opposes DPO (whose chosen answer is the wrapped sum); in
``style-clash`` both of DPO's answers are right and it takes no side. The rows are derived from
the SFT rows (no random draw), so adding them changes no other part of a task.
"""

from __future__ import annotations

import dataclasses
import functools
import re

from metactl import proxy_language as world
from metactl.rewards import RewardSpec
from metactl.tasks.suite import TaskSuite

RL_TOOL = "grpo"
PROXY_REWARD = RewardSpec("first-number", field="answer")
ENGLISH_REWARD = RewardSpec("first-word", field="answer")

_SUMS = [
    re.compile(re.escape(t).replace(r"\{a\}", r"(\d+)").replace(r"\{b\}", r"(\d+)"))
    for t in world.SUM_TEMPLATES.values()
]
_VERB = re.compile(r"past tense of (\w+)\?|\(to (\w+)\)")


def proxy_answer(prompt: str) -> str | None:
    """The sum a proxy prompt asks for (its last sum template), or None."""
    found = [m for pattern in _SUMS for m in pattern.finditer(prompt)]
    if not found:
        return None
    last = max(found, key=lambda m: m.start())
    return str(int(last.group(1)) + int(last.group(2)))


@functools.cache
def _pasts() -> dict[str, str]:
    from metactl.tasks.english import IRREGULAR, REGULAR

    return {v[0]: v[1] for v in (*IRREGULAR, *REGULAR)}


def english_answer(prompt: str) -> str | None:
    """The true past tense of the verb an English prompt asks about, or None."""
    m = _VERB.search(prompt)
    verb = m and (m.group(1) or m.group(2))
    return _pasts().get(verb) if verb else None


def with_rl_prompts(suite: TaskSuite, world_name: str) -> TaskSuite:
    """``suite`` with ``grpo`` rows (each SFT prompt whose answer is computable, and that answer)
    and the world's reward; unchanged when no SFT prompt has one."""
    answer, reward = (english_answer, ENGLISH_REWARD) if world_name == "english" else (proxy_answer, PROXY_REWARD)
    rows = []
    for row in suite.data.get("sft", []):
        ref = answer(row["prompt"])
        if ref is not None:
            rows.append({"prompt": row["prompt"], "answer": ref})
    if not rows:
        return suite
    return dataclasses.replace(suite, data={**suite.data, RL_TOOL: rows}, rewards={**suite.rewards, RL_TOOL: reward})
