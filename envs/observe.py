"""What a controller sees: fixed-size, bounded float32 vectors built from the engine's state.

Only what a user could read while training, and only what any suite gives: the observe split's
scores (training-distribution probes and retain texts that no reported score uses) now and before
training, progress, adapter norms, and the interference reading (gradient cosines between tools,
each tool's loss and gradient norm on a fixed batch) relative to its value at the episode's start.
No held-out or test probe is ever in it, and nothing a task generator knows about itself (its
knobs): a controller trained on some task families must be able to act on a suite it never saw.

Entries are unit-free where the raw value depends on the model or the suite (the LHOPT lesson,
arXiv 2106.00958): scores are accuracies in [0, 1], losses and gradient norms enter as log-ratios
to their starting values, and the tools' starting gradient norms as log-ratios to their mean.
Behaviours are named by the tool that produces them (``sft``, ``dpo``), not by what they are
called in one suite, so two suites with the same tools give the same layout.
"""

from __future__ import annotations

import math

import numpy as np
from gymnasium import spaces

from metactl.errors import ConfigError
from metactl.interference import NOISE_FLOOR, pair_names
from metactl.runner import Engine
from metactl.tasks.suite import OBSERVE, TaskSuite

OBSERVED_COMPOSITE = f"{OBSERVE}/composite"  # the observe split's composite: the shaping potential
NORM_BOUND = 5.0
LOG_RATIO_BOUND = 5.0
LOSS_BOUND = 5.0  # nats; a tool's starting loss is clipped here
LOSS_FLOOR = 1e-3  # nats; losses below it count as it in log-ratios
GNORM_FLOOR = 1e-3  # of the tools' mean starting gradient norm, likewise


def behaviour_tools(suite: TaskSuite) -> list[str]:
    """The tool producing each behaviour, in the suite's order; a suite where two behaviours share a
    tool cannot be observed by tool (the layout would be ambiguous)."""
    tools = [b.tool for b in suite.behaviours]
    if len(set(tools)) != len(tools):
        raise ConfigError(
            f"suite {suite.name!r}: behaviours {[b.name for b in suite.behaviours]} are produced by tools {tools}; "
            "a controller observes each behaviour by its tool, so each tool may produce at most one behaviour."
        )
    return tools


def score_keys(suite: TaskSuite) -> list[str]:
    """The keys of the observe-split scores read: per behaviour, then stability and CKA (all in [0, 1])."""
    return [f"{OBSERVE}/{b.name}" for b in suite.behaviours] + [f"{OBSERVE}/stability", f"{OBSERVE}/cka"]


def block_of(label: str) -> str:
    return label.split("/")[0].split("=")[0]


def observation_labels(
    suite: TaskSuite, tools: list[str], groups: int, phases: int, with_progress: bool = True,
    hide: tuple[str, ...] | list[str] = (),
) -> list[str]:
    """The name of every observation entry, in order, less the blocks in ``hide``; computable before
    any weights load, so a transfer can check that a controller's inputs mean the same thing on
    another model or suite."""
    return [x for x in _all_labels(suite, tools, groups, phases, with_progress) if block_of(x) not in hide]


def _all_labels(suite: TaskSuite, tools: list[str], groups: int, phases: int, with_progress: bool) -> list[str]:
    produced = behaviour_tools(suite)
    labels = [f"obs/{t}" for t in produced] + ["obs/stability", "obs/cka", OBSERVED_COMPOSITE]
    if with_progress:
        labels += [f"obs/{t}-base" for t in produced] + [f"obs/{t}-gain" for t in produced]
        labels += [f"phase={i}" for i in range(phases)] + ["budget_left"]
        labels += [f"norm/{t}/{g}" for t in tools for g in range(groups)]
        labels += [f"cos/{p}/{g}" for p in pair_names(tools) for g in range(groups)]
        labels += [f"loss0/{t}" for t in tools] + [f"gnorm0/{t}" for t in tools]
        labels += [f"loss/{t}" for t in tools] + [f"gnorm/{t}" for t in tools]
    return labels


def layout_hint(labels: list[str]) -> str:
    """What a suite must have to give ``labels``: its tools and which tool produces each behaviour."""
    produced = [x.split("/")[1] for x in labels if x.startswith("obs/") and x.split("/")[1] not in
                ("stability", "cka", "composite") and "-" not in x]
    tools = sorted({x.split("/")[1] for x in labels if x.startswith("loss0/")})
    layout = f"behaviours produced by {', '.join(produced)}"
    return f"{layout}; data for the tools {', '.join(tools)}" if tools else layout


def _log_ratio(now: float, start: float, floor: float) -> float:
    # The floor keeps a reading that starts at zero (retain's KL to the base, and its gradient)
    # from turning every later value into an infinite ratio.
    return math.log(max(now, floor) / max(start, floor))


class Observer:
    """Encodes scores, progress, adapter norms and the interference reading.

    Layout (each block's bounds): the observe-split accuracy of each behaviour, its stability and
    CKA, the composite / its maximum (:meth:`metactl.scoring.RewardConfig.observed_composite`),
    all in [0, 1]. With progress (the phase env): each behaviour's accuracy before training and its
    gain since ([-1, 1]); a one-hot phase index and the fraction of budget left; ``log1p`` of each
    tool's update norm per layer group ([0, 5]); the gradient cosine per tool pair per group
    ([-1, 1]); each tool's loss on the interference rows before training ([0, 5] nats) and its
    gradient norm's log-ratio to the tools' mean then ([-5, 5]); each tool's loss and gradient norm
    now as log-ratios to those starting values ([-5, 5]). Every value is clipped into its bounds so
    observations always lie in the space.
    """

    def __init__(
        self, engine: Engine, phases: int, with_progress: bool = True, hide: tuple[str, ...] | list[str] = ()
    ) -> None:
        self.engine = engine
        self.phases = phases
        suite = engine.task.suite
        self.tools = list(engine.tool_names)
        self.groups = engine.layer_map.groups
        self.pairs = pair_names(self.tools)
        self.with_progress = with_progress
        w = engine.config.reward
        self.max_composite = w.target + w.heldout + w.stability
        every = _all_labels(suite, self.tools, self.groups, phases, with_progress)
        self.keep = np.array([block_of(x) not in hide for x in every])
        self.labels = [x for x, k in zip(every, self.keep) if k]
        signed = {"cos": 1.0, "gnorm0": LOG_RATIO_BOUND, "loss": LOG_RATIO_BOUND, "gnorm": LOG_RATIO_BOUND}
        upper = {"norm": NORM_BOUND, "loss0": LOSS_BOUND}
        lo_hi = []
        for label in every:
            head = block_of(label)
            if label.endswith("-gain"):
                lo_hi.append((-1.0, 1.0))
            elif head in signed:
                lo_hi.append((-signed[head], signed[head]))
            else:
                lo_hi.append((0.0, upper.get(head, 1.0)))
        self.low = np.array([lo for lo, _ in lo_hi], dtype=np.float32)[self.keep]
        self.high = np.array([hi for _, hi in lo_hi], dtype=np.float32)[self.keep]

    @property
    def space(self) -> spaces.Box:
        return spaces.Box(self.low, self.high, dtype=np.float32)

    def __call__(
        self,
        scores: dict[str, float],
        phase: int = 0,
        norms: dict[str, list[float]] | None = None,
        reading: dict[str, list[float]] | None = None,
        base: dict[str, float] | None = None,
        start: dict[str, list[float]] | None = None,
    ) -> np.ndarray:
        """``scores``: the observe split's now; ``base``: before training (default: ``scores``);
        ``reading``: the interference reading now; ``start``: at the episode's start (default: ``reading``)."""
        keys = score_keys(self.engine.task.suite)
        vec = [scores[k] for k in keys] + [scores[OBSERVED_COMPOSITE] / self.max_composite]
        if self.with_progress:
            base = base or scores
            behaviours = keys[:-2]
            vec += [base[k] for k in behaviours] + [scores[k] - base[k] for k in behaviours]
            vec += [1.0 if i == phase else 0.0 for i in range(self.phases)] + [1.0 - phase / self.phases]
            norms = norms or {}
            vec += [math.log1p(v) for t in self.tools for v in norms.get(t, [0.0] * self.groups)]
            reading = reading or {}
            start = start or reading
            vec += [c for p in self.pairs for c in reading.get(p, [0.0] * self.groups)]
            vec += [start.get(f"loss/{t}", [0.0])[0] for t in self.tools]
            g0 = {t: sum(start.get(f"gnorm/{t}", [0.0])) for t in self.tools}
            # The mean is over the tools whose gradient is real: retain's is rounding noise (~1e-8 of
            # the others') at the start, and in a geometric mean it would drag the mean down so far
            # that every other tool's ratio saturates at the bound and says nothing.
            top = max(g0.values(), default=0.0)
            pulling = [v for v in g0.values() if v > NOISE_FLOOR * top]
            mean = math.exp(sum(math.log(v) for v in pulling) / len(pulling)) if pulling else 1.0
            floor = GNORM_FLOOR * mean
            vec += [_log_ratio(g0[t], mean, floor) for t in self.tools]
            loss = {t: (reading.get(f"loss/{t}", [0.0])[0], start.get(f"loss/{t}", [0.0])[0]) for t in self.tools}
            vec += [_log_ratio(*loss[t], LOSS_FLOOR) for t in self.tools]
            vec += [_log_ratio(sum(reading.get(f"gnorm/{t}", [0.0])), g0[t], floor) for t in self.tools]
        arr = np.nan_to_num(np.array(vec, dtype=np.float32), nan=0.0)[self.keep]
        return np.clip(arr, self.low, self.high)
