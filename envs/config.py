"""Settings of the environments (what an episode is), validated before any weights load."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from metactl.errors import ConfigError, check_choice, check_number, did_you_mean

if TYPE_CHECKING:
    from metactl.envs.spaces import PhaseControlSpace
    from metactl.schedule import Schedule
    from metactl.scoring import RewardConfig


# The observation's blocks, by the head of their labels (``cos/sft|dpo/0`` is in ``cos``): what
# ``env.hide`` can leave out, for ablations of what a controller reads (envs/observe.py).
OBS_BLOCKS = ("obs", "observe", "phase", "budget_left", "norm", "cos", "loss0", "gnorm0", "loss", "gnorm")


@dataclass
class EnvConfig:
    phases: int = field(default=4, metadata={"help": "phases per episode (phase env: env steps per episode)"})
    train_task_seeds: list[int] = field(
        default_factory=lambda: [0, 16],
        metadata={"help": "[first, end) range episodes draw task seeds from; evaluation uses seeds outside it"},
    )
    quick_probes: int = field(
        default=16,
        metadata={
            "help": "observe-split probes per behaviour (and retain texts) a controller reads between phases "
            "(0 = all); the observe split is never part of a reported score"
        },
    )
    interference_rows: int = field(
        default=8, metadata={"help": "rows per tool for the gradient-cosine (interference) reading"}
    )
    prior: str = field(
        default="default",
        metadata={
            "help": "schedule the zero action reproduces (policies act residually around it): a built-in name, "
            "a YAML path, or 'neutral'"
        },
    )
    controls: str = field(
        default="layer",
        metadata={
            "help": "what the phase env's action sets per tool: 'layer' (share, then train and output per module "
            "kind and layer group), 'tool' (share, one train, one output: fewer directions to explore) or 'share' "
            "(the shares alone: which tools run and how they interleave, learning rates and output scales held at "
            "the prior's). The bandit env and the searches over whole schedules (random, optuna) follow 'share' "
            "(each phase's shares alone, the same decisions made open loop); otherwise they set shares per phase "
            "and train and output per module kind and layer group, held for the whole run"
        },
    )
    diverged_penalty: float = field(
        default=1.0, metadata={"help": "an episode whose loss or score turns NaN ends with return -penalty"}
    )
    train_range: float = field(
        default=4.0,
        metadata={
            "help": "R: a train control (learning-rate multiplier) spans [1/R, R]; smaller keeps exploration away "
            "from steps that wreck the model, at the price of reach (searches over schedules use it too)"
        },
    )
    hide: list[str] = field(
        default_factory=list,
        metadata={
            "help": "observation blocks the controller does not see (ablations of what it reads): any of obs, "
            "observe (the observed composite), phase, budget_left, norm, cos, loss0, gnorm0, loss, gnorm "
            "(docs/controller.md says what each holds)"
        },
    )

    train_reward: dict[str, float] = field(
        default_factory=dict,
        metadata={
            "help": "weights of the score parts in the return the controller trains on (any of target, heldout, "
            "stability), replacing run.reward's for the return alone: every reported score, evaluation row and "
            "table keeps run.reward's composite. E.g. {heldout: 2.0} (--set env.train_reward.heldout=2) makes "
            "held-out generalisation count twice while the controller learns. {}: the reported composite"
        },
    )

    merge: list[str] = field(
        default_factory=list,
        metadata={
            "help": "tools whose merge the controller decides after every phase (one action component each): "
            "fold the adapter into the base weights, then restart it from zero (schedule 'merge'). Runs on an "
            "Engine per env (vec_env subproc or dummy): the population engine does not merge"
        },
    )

    def __post_init__(self) -> None:
        self.phases = int(check_number("env.phases", self.phases, low=1, high=64, integer=True))
        seeds = self.train_task_seeds
        if not (isinstance(seeds, (list, tuple)) and len(seeds) == 2):
            raise ConfigError(f"env.train_task_seeds: expected [first, end), e.g. [0, 16]; got {seeds!r}.")
        lo = int(check_number("env.train_task_seeds[0]", seeds[0], low=0, integer=True))
        hi = int(check_number("env.train_task_seeds[1]", seeds[1], low=0, integer=True))
        if hi <= lo:
            raise ConfigError(
                f"env.train_task_seeds: got [{lo}, {hi}); the end must be above the first seed, e.g. [{lo}, {lo + 16}]."
            )
        self.train_task_seeds = [lo, hi]
        self.quick_probes = int(check_number("env.quick_probes", self.quick_probes, low=0, high=10**6, integer=True))
        self.interference_rows = int(
            check_number("env.interference_rows", self.interference_rows, low=1, high=4096, integer=True)
        )
        self.train_range = check_number("env.train_range", self.train_range, low=1.0, high=1000.0, low_open=True)
        from metactl.envs.spaces import CONTROL_GRAINS, check_prior

        if self.prior != "neutral":
            from metactl.schedule import Schedule

            # read and checked here, before any weights load
            check_prior(Schedule.named(self.prior), self.train_range)

        if self.controls not in CONTROL_GRAINS:
            raise ConfigError(
                f"env.controls: got {self.controls!r}; expected one of {list(CONTROL_GRAINS)}."
                f"{did_you_mean(str(self.controls), CONTROL_GRAINS)}"
            )
        self.diverged_penalty = check_number("env.diverged_penalty", self.diverged_penalty, low=0.0)
        if not isinstance(self.hide, (list, tuple)):
            raise ConfigError(f"env.hide: expected a list of observation blocks, e.g. [gnorm0]; got {self.hide!r}.")
        self.hide = [check_choice("env.hide", str(block), OBS_BLOCKS) for block in self.hide]
        if not isinstance(self.train_reward, dict):
            raise ConfigError(
                f"env.train_reward: expected a mapping of score parts to weights, e.g. {{heldout: 2.0}}; "
                f"got {self.train_reward!r}."
            )
        from metactl.score_parts import REWARD_PARTS

        self.train_reward = {
            check_choice("env.train_reward", str(part), REWARD_PARTS):
                check_number(f"env.train_reward.{part}", w, low=0.0, high=1e3)
            for part, w in self.train_reward.items()
        }
        if not isinstance(self.merge, (list, tuple)):
            raise ConfigError(f"env.merge: expected a list of tools, e.g. [sft]; got {self.merge!r}.")
        from metactl.tools import TOOLS

        self.merge = [check_choice("env.merge", str(t), TOOLS) for t in self.merge]

    def return_reward(self, reported: RewardConfig) -> RewardConfig:
        """The weights an episode's return is made of: ``run.reward``'s, with ``env.train_reward``'s in place
        of those it names. Refuses a combination that weighs nothing (before any weights load)."""
        if not self.train_reward:
            return reported
        from dataclasses import replace

        try:
            return replace(reported, **self.train_reward)
        except ConfigError as exc:
            raise ConfigError(f"env.train_reward {self.train_reward} with run.reward's other weights: {exc}") from None

    def return_gain(self, reported: RewardConfig, scores: dict[str, float], base: dict[str, float]) -> float:
        """What an episode's return adds up to: the reported composite's gain over the base, or under
        ``env.train_reward`` the same score parts reweighted (the reported composite stays ``run.reward``'s)."""
        if not self.train_reward:
            return scores["composite"] - base["composite"]
        weights = self.return_reward(reported)
        return weights.composite(scores) - weights.composite(base)

    def merge_tools(self, tools: list[str]) -> tuple[str, ...]:
        """``env.merge`` in the run's tool order, each one a tool the run trains."""
        missing = [t for t in self.merge if t not in tools]
        if missing:
            raise ConfigError(
                f"env.merge: {missing[0]!r} is not a tool this run trains (its tools: {', '.join(tools)}); "
                f"drop it from env.merge or train it (--set run.tools.{missing[0]}={{}})."
            )
        return tuple(t for t in tools if t in self.merge)

    def prior_schedule(self, groups: int) -> Schedule | None:
        if self.prior == "neutral":
            return None
        from metactl.schedule import Schedule

        return Schedule.named(self.prior, groups)

    def phase_controls(self, tools: tuple[str, ...], groups: int) -> PhaseControlSpace:
        """What one phase's action sets under ``controls`` (the phase env's action space, per phase)."""
        from metactl.envs.spaces import PhaseControlSpace

        return PhaseControlSpace(tuple(tools), groups, tied=self.controls == "tool", train_range=self.train_range,
                                 shares_only=self.controls == "share", merge=self.merge_tools(list(tools)))

    def is_training_seed(self, task_seed: int) -> bool:
        return self.train_task_seeds[0] <= task_seed < self.train_task_seeds[1]


@dataclass
class RayConfig:
    """Where the env actors run and what each one reserves."""

    address: str | None = field(
        default=None,
        metadata={
            "help": "null: start a local Ray instance (shut down at the end); 'auto': join the cluster `ray start` "
            "made on this machine; 'HOST:PORT' or 'ray://HOST:10001': that cluster"
        },
    )
    num_cpus: int | None = field(
        default=None,
        metadata={"help": "logical CPUs of a local instance (null: every core); ignored when joining a cluster"},
    )
    cpus_per_env: float = field(default=1.0, metadata={"help": "CPUs each env actor reserves (fractions allowed)"})
    gpus_per_env: float = field(
        default=0.0,
        metadata={
            "help": "GPU share of each env actor: 0.25 puts four proxy envs on one GPU (Ray sets CUDA_VISIBLE_DEVICES)"
        },
    )
    max_restarts: int = field(
        default=3,
        metadata={
            "help": "times Ray restarts a dead env actor; its episode is reported truncated, "
            "and one more death fails the run"
        },
    )
    start_timeout_s: float = field(
        default=900.0,
        metadata={
            "help": "seconds to wait for every env actor to be placed and to build its env "
            "(a large model loads for minutes)"
        },
    )
    restart_timeout_s: float = field(
        default=300.0, metadata={"help": "seconds to wait for a restarted env actor (a lost node takes a while)"}
    )

    def __post_init__(self) -> None:
        if self.address is not None and (not isinstance(self.address, str) or not self.address.strip()):
            raise ConfigError(f"ray.address: expected null, 'auto' or 'HOST:PORT', got {self.address!r}.")
        if self.num_cpus is not None:
            self.num_cpus = int(check_number("ray.num_cpus", self.num_cpus, low=1, high=100_000, integer=True))
        self.cpus_per_env = check_number("ray.cpus_per_env", self.cpus_per_env, low=0.0, high=1024.0)
        self.gpus_per_env = check_number("ray.gpus_per_env", self.gpus_per_env, low=0.0, high=64.0)
        if self.cpus_per_env == 0 and self.gpus_per_env == 0:
            raise ConfigError(
                "ray.cpus_per_env and ray.gpus_per_env are both 0: an actor must reserve something, "
                "e.g. ray.cpus_per_env=1."
            )
        self.max_restarts = int(check_number("ray.max_restarts", self.max_restarts, low=0, high=10_000, integer=True))
        self.start_timeout_s = check_number("ray.start_timeout_s", self.start_timeout_s, low=0.0, low_open=True)
        self.restart_timeout_s = check_number("ray.restart_timeout_s", self.restart_timeout_s, low=0.0, low_open=True)

    def actor_options(self) -> dict[str, Any]:
        return {
            "num_cpus": self.cpus_per_env,
            "num_gpus": self.gpus_per_env,
            "max_restarts": self.max_restarts,
            "max_task_retries": 0,
        }
