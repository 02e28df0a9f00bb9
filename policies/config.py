"""What a controller is trained with (``train-controller``'s config): the policy, its episode
budget, the env and the run. The RL layer reads it (policies build their learners from it).

Same conventions as :mod:`metactl.config`: nested dataclasses with help text per field, each
validated in ``__post_init__`` so a bad value fails before any weights load.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from metactl.config import RunConfig, YamlConfig, load_dataclass_config
from metactl.envs.config import EnvConfig, RayConfig
from metactl.errors import ConfigError, check_choice, check_number, did_you_mean
from metactl.schedule import Schedule

AVERAGED = "averaged"  # in ``compare``: the learned policy's phase controls averaged into one fixed schedule
ENVELOPED = "enveloped"  # in ``compare``: the learned policy closed loop, clipped into its training envelope
GUARDED = "guarded"  # in ``compare``: closed loop where its readings look like training ones, else its mean action
GUARDED_HOLD = "guarded-hold"  # the same, holding the mean action for the rest of an episode once it took it
CLOSED_LOOP_WRAPPERS = (ENVELOPED, GUARDED, GUARDED_HOLD)  # compare entries that wrap the trained closed loop
MADE_FROM_POLICY = (AVERAGED, *CLOSED_LOOP_WRAPPERS)  # compare entries made from the trained policy, not schedule names
CURRICULA = ("none", "family", "task")  # ppo.curriculum: how training tasks are drawn (policies/curriculum.py)
SEARCH_AUTO = "auto"  # ppo.search_episodes: half the budget searched first for ppo (resolved_search_episodes)
SEARCH_KEEPS = ("episode", "reevaluated")  # search.keep: how random/optuna (and ppo's search stage) pick a schedule


@dataclass
class PPOConfig:
    learning_rate: float = field(default=1e-3, metadata={"help": "Adam step size of the policy and value nets"})
    episodes_per_update: int = field(
        default=8, metadata={"help": "episodes collected (across all envs) between two policy updates"}
    )
    n_epochs: int = field(default=10, metadata={"help": "passes over each rollout per update"})
    batch_size: int = field(default=32, metadata={"help": "minibatch size in env steps"})
    gamma: float = field(
        default=1.0, metadata={"help": "discount; 1 keeps the potential-based return equal to final minus base"}
    )
    gae_lambda: float = field(default=0.95, metadata={"help": "GAE bias/variance trade-off"})
    clip_range: float = field(default=0.2, metadata={"help": "PPO ratio clip"})
    ent_coef: float = field(default=0.0, metadata={"help": "entropy bonus"})
    log_std_init: float = field(
        default=-1.5,
        metadata={
            "help": "initial log std of the Gaussian policy (residual actions: small keeps rollouts near the prior)"
        },
    )
    share_log_std_init: float | None = field(
        default=None,
        metadata={
            "help": "initial log std of the share actions only (whether and how much each tool trains in a phase); "
            "null: log_std_init. Above log_std_init, the policy tries turning tools on and off (the prior's "
            "structure) without also trying harsher learning rates and output scales"
        },
    )
    net_arch: list[int] = field(
        default_factory=lambda: [64, 64], metadata={"help": "hidden sizes of the policy and value MLPs"}
    )
    use_sde: bool = field(
        default=False,
        metadata={
            "help": "state-dependent exploration (gSDE, SB3's use_sde): the noise is a linear map of the policy's "
            "last hidden layer, drawn once per rollout and env, so an episode's phases are perturbed consistently "
            "and how much depends on the state. log_std_init then sets the log std of that map's entries: an "
            "action's std is about |hidden| * exp(log_std_init), |hidden| about 5.3 at init for [64, 64] "
            "(docs/sde_init_std.md), so -3.2 starts as wide as the plain Gaussian's -1.5"
        },
    )
    group_size: int = field(
        default=1,
        metadata={
            "help": "episodes run on the same task and episode seed (same data order, same adapter init), each "
            "with its own sampled actions; an episode's advantage is its return minus the mean return of the rest "
            "of its group (leave-one-out, as RLOO and GRPO), so task difficulty and batch luck cancel out of the "
            "policy gradient (docs/controller.md, levers). 1: PPO's advantage from its learned value. 0: 2 when the "
            "envs are even in number (the default 8), else 1. Must divide the number of envs"
        },
    )

    antithetic: bool = field(
        default=False,
        metadata={
            "help": "mirrored exploration: with group_size 2, the second episode of each pair (same task and "
            "episode seed) takes the first's exploration noise negated, so the pair's return difference is a "
            "central difference along the noise and the rest of the return cancels (antithetic sampling, as in "
            "evolution strategies; policies/antithetic.py). Needs group_size 2 and use_sde false"
        },
    )

    obs_noise: float = field(
        default=0.0,
        metadata={
            "help": "while training, Gaussian noise on what the policy reads, in units of each observation entry's "
            "running std (the phase and budget left stay exact; a mirrored pair shares the draw); evaluation and "
            "transfer read clean observations. Regularises reactions to readings that differ between task "
            "families (policies/obs_noise.py). 0: off"
        },
    )

    smooth: float = field(
        default=0.0,
        metadata={
            "help": "while training, weight of a penalty on how far the policy's mean action moves when what it reads "
            "is perturbed (CAPS' spatial smoothness, arXiv 2012.06644), in KL units: the mean KL between the "
            "policy's Gaussians at each minibatch reading and at that reading perturbed by smooth_noise x each "
            "entry's spread (policies/smooth.py). The policy still reacts where reacting pays more. 0: off"
        },
    )
    smooth_noise: float = field(
        default=0.5,
        metadata={
            "help": "ppo.smooth's perturbation, in units of each observation entry's spread over the minibatch (the "
            "phase and budget left stay exact)"
        },
    )

    weight_average: float = field(
        default=0.0,
        metadata={
            "help": "fraction of the run's updates, counted from its end, whose policy weights are averaged into "
            "the saved controller (stochastic weight averaging: 0.33 of 12 updates averages the weights after "
            "updates 9-12). Training is unchanged; the mean replaces the last update's weights once, before the "
            "controller acts (policies/weight_average.py). 0: the last update's weights"
        },
    )

    search_episodes: int | str = field(
        default=SEARCH_AUTO,
        metadata={
            "help": "episodes of the budget spent first on random search over whole share schedules around env.prior "
            "(the 'random' policy, open loop; kept in RUN/search/); PPO then trains on the rest, acting residually "
            "around the best schedule that search found instead of env.prior: global exploration first, then "
            "closed-loop refinement. 'auto': half of total_episodes for policy ppo, when the other half still holds "
            "one PPO update and env.merge is empty, else 0. 0: PPO around env.prior from the first episode"
        },
    )

    curriculum: str = field(
        default="none",
        metadata={
            "help": "which training tasks are drawn more often (prioritized level replay, arXiv 2010.03934; "
            "policies/curriculum.py): 'family' draws the families of the training suite more often the higher they "
            "rank by the mean absolute advantage of their episodes in the last rollout that drew them (a "
            "single-family suite: its task seeds), 'task' ranks the task seeds themselves. 'none': every task "
            "seed equally often"
        },
    )
    curriculum_temperature: float = field(
        default=1.0,
        metadata={
            "help": "PLR's temperature: the level ranked r gets weight r^(-1/temperature) before the uniform mix; "
            "small values draw the top level almost always, large ones nearly uniformly"
        },
    )
    curriculum_uniform: float = field(
        default=0.25,
        metadata={"help": "share of the draw that stays uniform over the levels, so no level is starved"},
    )

    def __post_init__(self) -> None:
        self.learning_rate = check_number("ppo.learning_rate", self.learning_rate, low=0.0, high=1.0, low_open=True)
        self.episodes_per_update = int(
            check_number("ppo.episodes_per_update", self.episodes_per_update, low=1, high=10**6, integer=True)
        )
        self.n_epochs = int(check_number("ppo.n_epochs", self.n_epochs, low=1, high=1000, integer=True))
        self.batch_size = int(check_number("ppo.batch_size", self.batch_size, low=1, high=10**6, integer=True))
        self.gamma = check_number("ppo.gamma", self.gamma, low=0.0, high=1.0)
        self.gae_lambda = check_number("ppo.gae_lambda", self.gae_lambda, low=0.0, high=1.0)
        self.clip_range = check_number("ppo.clip_range", self.clip_range, low=0.0, high=10.0, low_open=True)
        self.ent_coef = check_number("ppo.ent_coef", self.ent_coef, low=0.0, high=10.0)
        self.log_std_init = check_number("ppo.log_std_init", self.log_std_init, low=-10.0, high=2.0)
        if self.share_log_std_init is not None:
            self.share_log_std_init = check_number(
                "ppo.share_log_std_init", self.share_log_std_init, low=-10.0, high=2.0
            )
        if not isinstance(self.net_arch, list) or not self.net_arch:
            raise ConfigError(
                f"ppo.net_arch: expected a non-empty list of layer sizes, e.g. [64, 64]; got {self.net_arch!r}."
            )
        self.net_arch = [
            int(check_number(f"ppo.net_arch[{i}]", v, low=1, high=65536, integer=True))
            for i, v in enumerate(self.net_arch)
        ]
        self.obs_noise = check_number("ppo.obs_noise", self.obs_noise, low=0.0, high=10.0)
        self.smooth = check_number("ppo.smooth", self.smooth, low=0.0, high=1000.0)
        self.smooth_noise = check_number("ppo.smooth_noise", self.smooth_noise, low=0.0, high=10.0, low_open=True)
        self.weight_average = check_number("ppo.weight_average", self.weight_average, low=0.0, high=1.0)
        if self.search_episodes != SEARCH_AUTO:
            if isinstance(self.search_episodes, str):
                raise ConfigError(
                    f"ppo.search_episodes: {self.search_episodes!r} is neither {SEARCH_AUTO!r} nor a number of "
                    f"episodes; allowed: {SEARCH_AUTO!r} (half the budget for ppo) or 0 to total_episodes - "
                    "ppo.episodes_per_update (0: no search)."
                    + did_you_mean(self.search_episodes.lower(), [SEARCH_AUTO])
                )
            self.search_episodes = int(
                check_number("ppo.search_episodes", self.search_episodes, low=0, high=10**7, integer=True)
            )
        self.curriculum = check_choice("ppo.curriculum", self.curriculum, CURRICULA)
        self.curriculum_temperature = check_number(
            "ppo.curriculum_temperature", self.curriculum_temperature, low=0.0, high=100.0, low_open=True
        )
        self.curriculum_uniform = check_number("ppo.curriculum_uniform", self.curriculum_uniform, low=0.0, high=1.0)
        self.group_size = int(check_number("ppo.group_size", self.group_size, low=0, high=4096, integer=True))
        if not isinstance(self.use_sde, bool):
            raise ConfigError(f"ppo.use_sde: expected true or false, got {self.use_sde!r}.")
        if not isinstance(self.antithetic, bool):
            raise ConfigError(f"ppo.antithetic: expected true or false, got {self.antithetic!r}.")
        if self.antithetic and self.use_sde:
            raise ConfigError(
                "ppo.antithetic: mirrors the plain Gaussian's per-step noise; gSDE (ppo.use_sde) draws its noise "
                "once per episode from the hidden layer, which this does not mirror. Set one of them to false."
            )


@dataclass
class SearchConfig:
    """How the search policies (``random``, ``optuna``, ``tuned-lr``, and ppo's search stage) choose the
    schedule they keep from their episodes."""

    keep: str = field(
        default="episode",
        metadata={
            "help": "'episode': the candidate of the single best episode (its gain over base). 'reevaluated': each "
            "gain less the median gain of its task family's new candidates; the best candidates run again on other "
            "draws (search.reevaluate of the budget, 2 more episodes each) and the best mean of those is kept; "
            "on a mixture of families the best single episode mostly picks the highest-gain family's luckiest draw"
        },
    )
    reevaluate: float = field(
        default=0.34,
        metadata={
            "help": "with keep=reevaluated: the share of the episodes spent running the best candidates again (about "
            "a third: of 48, 16 episodes for the best 8)"
        },
    )

    def __post_init__(self) -> None:
        self.keep = check_choice("search.keep", self.keep, SEARCH_KEEPS)
        self.reevaluate = check_number("search.reevaluate", self.reevaluate, low=0.0, high=0.9)


@dataclass
class ControllerConfig(YamlConfig):
    policy: str = field(
        default="ppo",
        metadata={
            "help": "what learns or searches (metactl policies): ppo, bandit, random, optuna, tuned-lr, or a fixed "
            "schedule: default, expert, alright, maxright, mix"
        },
    )
    total_episodes: int = field(
        default=64, metadata={"help": "proxy episodes the policy may use (rounded up to whole updates)"}
    )
    n_envs: int = field(
        default=0,
        metadata={
            "help": "episodes run in parallel: K under vec_env batched, else one process or Ray actor each "
            "(0: 8 under batched, 2 otherwise)"
        },
    )
    vec_env: str = field(
        default="auto",
        metadata={
            "help": "what runs the envs: batched (policy ppo: the n_envs episodes batched on population engines, "
            "batched_processes of them), subproc (one local process each), "
            "ray (one Ray actor each, any node of a cluster: see ray), dummy (this process), "
            "auto (batched for policy ppo on a model it runs, else subproc for n_envs > 1)"
        },
    )
    batched_processes: int = field(
        default=0,
        metadata={
            "help": "vec_env batched: processes the n_envs episodes are split over, each one population engine with "
            "run.training.threads threads (0: one per CPU core on cpu, one on a GPU; never more than n_envs)"
        },
    )
    seed: int = field(default=0, metadata={"help": "controller seed (policy init, task draws, exploration)"})
    eval_task_seeds: list[int] = field(
        default_factory=lambda: [1000, 1001],
        metadata={"help": "held-out task seeds the final table is measured on (outside env.train_task_seeds); each "
                          "costs one episode per method, suite and eval episode (two, to fit the default command in "
                          "about 15 minutes; scripts/controller_report.py measures on 1000-1002, 3 episode seeds "
                          "each)"},
    )
    eval_episodes: int = field(
        default=1,
        metadata={
            "help": "episode seeds per held-out task (run.training.seed and the next ones): the same seeds for every "
            "method, so differences are paired; 3+ separates methods from episode-seed noise"
        },
    )
    eval_suites: list[str] = field(
        default_factory=list,
        metadata={
            "help": "suites evaluated besides run.suite, at the same eval_task_seeds, each reported apart: e.g. "
            "heldout-families, task families the controller never trained on (same tools as run.suite)"
        },
    )
    schedule_task_seed: int = field(
        default=3000,
        metadata={
            "help": "task the greedy schedule.yaml (and adapters/) is taken on: outside the training range, the "
            "held-out table's tasks and transfer's default comparison tasks (1000-1002)"
        },
    )
    compare: list[str] = field(
        default_factory=lambda: ["default", "expert", "alright", "maxright", "mix", "averaged"],
        metadata={
            "help": "schedules the final table compares against (built-in names or YAML paths); 'averaged': a "
            "closed-loop policy's phase controls on training tasks averaged into one fixed schedule (skipped for "
            "open-loop policies, whose schedule is fixed already); 'enveloped': the closed-loop policy (ppo) "
            "acting with each action clipped, phase by phase, into the range it took on those training tasks; "
            "'guarded': the closed-loop policy (ppo) acting where its observation lies as near a training task's "
            "at that phase as those tasks lie to each other, and on its mean action there elsewhere; "
            "'guarded-hold': the same, keeping to the mean actions for the rest of an episode once it fell back"
        },
    )
    checkpoint_every: int = field(
        default=1, metadata={"help": "checkpoint after this many updates (or search batches)"}
    )
    env: EnvConfig = field(default_factory=EnvConfig, metadata={"help": "what an episode is"})
    ppo: PPOConfig = field(default_factory=PPOConfig, metadata={"help": "PPO settings (policies ppo and bandit)"})
    search: SearchConfig = field(
        default_factory=SearchConfig,
        metadata={"help": "how random, optuna and tuned-lr (and ppo's search stage) pick the schedule they keep"},
    )
    ray: RayConfig = field(
        default_factory=RayConfig, metadata={"help": "where env actors run and what they reserve (vec_env: ray)"}
    )
    run: RunConfig = field(
        default_factory=RunConfig, metadata={"help": "the model, suite, training and reward of every episode"}
    )

    def __post_init__(self) -> None:

        # The policy name is checked where policies are built (metactl.policies.policy_class).
        self.total_episodes = int(check_number("total_episodes", self.total_episodes, low=1, high=10**7, integer=True))
        self.n_envs = int(check_number("n_envs", self.n_envs, low=0, high=4096, integer=True))
        from metactl.envs.vector import VEC_ENVS

        check_choice("vec_env", self.vec_env, VEC_ENVS)
        self.batched_processes = int(
            check_number("batched_processes", self.batched_processes, low=0, high=4096, integer=True)
        )
        if self.vec_env == "ray":
            from metactl.envs.ray_vec_env import require_ray

            require_ray()
            device = self.run.training.device
            if self.ray.gpus_per_env > 0 and device == "cpu":
                raise ConfigError(
                    f"ray.gpus_per_env={self.ray.gpus_per_env:g} reserves GPU for each env, "
                    "but run.training.device=cpu trains on the CPU; "
                    "set run.training.device=cuda (or ray.gpus_per_env=0)."
                )
            if self.ray.gpus_per_env == 0 and device != "cpu":
                # Ray leaves CUDA_VISIBLE_DEVICES alone for actors that reserve no GPU: every env
                # would land on the same GPU unaccounted for.
                raise ConfigError(
                    f"run.training.device={device} with ray.gpus_per_env=0: the env actors would all use GPU 0 without "
                    "reserving it; give each a share, e.g. ray.gpus_per_env=0.25, or set run.training.device=cpu."
                )
        self.seed = int(check_number("seed", self.seed, low=0, integer=True))
        self.checkpoint_every = int(check_number("checkpoint_every", self.checkpoint_every, low=1, integer=True))
        if not isinstance(self.eval_task_seeds, list) or not self.eval_task_seeds:
            raise ConfigError(
                f"eval_task_seeds: expected a non-empty list of task seeds, got {self.eval_task_seeds!r}."
            )
        self.eval_task_seeds = [
            int(check_number(f"eval_task_seeds[{i}]", s, low=0, integer=True))
            for i, s in enumerate(self.eval_task_seeds)
        ]
        self.env.return_reward(self.run.reward)  # a return that weighs nothing is refused here, not in an env
        inside = [s for s in self.eval_task_seeds if self.env.is_training_seed(s)]
        if inside:
            lo, hi = self.env.train_task_seeds
            raise ConfigError(
                f"eval_task_seeds: {inside} lie inside env.train_task_seeds [{lo}, {hi}); held-out evaluation needs "
                f"seeds outside it, e.g. [{hi + 1000}, {hi + 1001}]."
            )
        self.eval_episodes = int(check_number("eval_episodes", self.eval_episodes, low=1, high=1000, integer=True))
        if not isinstance(self.eval_suites, list):
            raise ConfigError(f"eval_suites: expected a list of suite names, got {self.eval_suites!r}.")
        from metactl.tasks import check_suite_name

        for i, name in enumerate(self.eval_suites):
            if not isinstance(name, str):
                raise ConfigError(f"eval_suites[{i}]: expected a suite name, got {name!r}.")
            check_suite_name(name, f"eval_suites[{i}]")
        self.eval_suites = [s for s in self.eval_suites if s != self.run.suite]  # run.suite is always evaluated
        self.schedule_task_seed = int(check_number("schedule_task_seed", self.schedule_task_seed, low=0, integer=True))
        if self.env.is_training_seed(self.schedule_task_seed) or self.schedule_task_seed in self.eval_task_seeds:
            raise ConfigError(
                f"schedule_task_seed: {self.schedule_task_seed} is a training or held-out evaluation task; the "
                "schedule a run keeps must come from a task nothing else scores it on (e.g. 3000)."
            )
        from metactl.policies import POLICIES

        g = self.ppo.group_size
        uses_ppo = getattr(POLICIES.get(self.policy), "uses_ppo", False)
        if uses_ppo and g > 1 and (n := self.resolved_n_envs()) % g:  # 0 (auto) always fits
            raise ConfigError(
                f"ppo.group_size: {g} does not divide the {n} envs (n_envs), so a group would span two rounds of "
                f"episodes; set n_envs to a multiple of {g} (e.g. {g * (n // g + 1)}), or ppo.group_size=1 (no groups)"
                + (" and ppo.antithetic=false (mirrored noise needs the pairs)." if self.ppo.antithetic else ".")
            )
        if self.ppo.search_episodes != SEARCH_AUTO and self.ppo.search_episodes:
            self._check_search_start()
        if uses_ppo and self.ppo.antithetic and self.resolved_group_size() != 2:
            raise ConfigError(
                f"ppo.antithetic: mirrors the noise within pairs of episodes on the same task and seed, so it needs "
                f"ppo.group_size=2 (got {self.ppo.group_size}, resolved {self.resolved_group_size()}); set "
                f"ppo.group_size=2 with an even n_envs, or ppo.antithetic=false."
            )
        if not isinstance(self.compare, list):
            raise ConfigError(f"compare: expected a list of schedule names, got {self.compare!r}.")
        for name in self.compare:
            if name not in MADE_FROM_POLICY:  # made by train-controller from the trained closed loop
                Schedule.named(name)  # read and checked now, not after the training budget
        merging = self.merges()
        if merging and self.resolved_vec_env() == "batched":
            raise ConfigError(
                f"vec_env: batched (the population engine) does not merge adapters, but {merging[0]} does; set "
                "vec_env=subproc (vec_env: auto picks it when env.merge is set)."
            )
        for wrapper in [w for w in CLOSED_LOOP_WRAPPERS if w in self.compare]:
            # Checked now: the envelope and the guard are taken after the training budget is spent.
            if self.policy != "ppo":
                raise ConfigError(
                    f"compare: {wrapper!r} wraps a closed-loop policy's actions phase by phase, and policy "
                    f"{self.policy!r} takes none (only ppo acts per phase); drop {wrapper!r} or use policy=ppo."
                )
            if {"phase", "budget_left"} <= set(self.env.hide):
                raise ConfigError(
                    f"compare: {wrapper!r} reads the phase from the observation's clock, but env.hide lists both "
                    f"phase and budget_left ({self.env.hide}); show one of them, or drop {wrapper!r}."
                )

    def resolved_vec_env(self, env_id: str | None = None) -> str:
        """``vec_env`` with ``auto`` resolved for ``env_id`` (default: the policy's env): ``batched`` for
        the phase env on a model the population engine runs, else ``subproc`` for several envs and
        ``dummy`` for one."""
        if self.vec_env != "auto":
            return self.vec_env
        from metactl.envs import PHASE_ENV_ID
        from metactl.policies import policy_class
        from metactl.population import runs_model

        if (env_id or policy_class(self.policy).env_id) == PHASE_ENV_ID and runs_model(self.run.model) \
                and not self.merges():  # the population engine's episodes share one base: no merges
            return "batched"
        return "subproc" if (self.n_envs or 2) > 1 else "dummy"

    def merges(self) -> list[str]:
        """What in this run merges adapters: ``env.merge``'s decisions, compare schedules that merge."""
        from metactl.schedule import Schedule

        found = [f"env.merge={self.env.merge}"] if self.env.merge else []
        return found + [f"compare schedule {name!r}" for name in self.compare
                        if name not in MADE_FROM_POLICY and Schedule.named(name).merges]

    def resolved_n_envs(self, vec_env: str | None = None) -> int:
        """``n_envs`` with 0 resolved for ``vec_env`` (default: the resolved one): 8 episodes under
        ``batched`` (one PPO rollout per round), else 2."""
        if self.n_envs:
            return self.n_envs
        return 8 if (vec_env or self.resolved_vec_env()) == "batched" else 2

    def resolved_search_episodes(self) -> int:
        """``ppo.search_episodes`` with ``auto`` resolved: half the budget (rounded down) for policy ppo
        when the other half holds at least one PPO update and nothing merges (the searched schedule
        becomes a prior, which may not merge), else 0."""
        n = self.ppo.search_episodes
        if n != SEARCH_AUTO:
            return int(n)
        half = self.total_episodes // 2
        fits = self.total_episodes - half >= self.ppo.episodes_per_update
        return half if self.policy == "ppo" and fits and not self.env.merge else 0

    def _check_search_start(self) -> None:
        n, total = self.ppo.search_episodes, self.total_episodes
        if self.policy != "ppo":
            raise ConfigError(
                f"ppo.search_episodes: {n} episodes of search before PPO are for policy 'ppo' (the phase-env "
                f"controller); policy {self.policy!r} does not start from a search. Set ppo.search_episodes=0."
            )
        if total - n < self.ppo.episodes_per_update:
            raise ConfigError(
                f"ppo.search_episodes: {n} of total_episodes={total} leaves {max(total - n, 0)} for PPO, fewer than "
                f"one update (ppo.episodes_per_update={self.ppo.episodes_per_update}); allowed: 0 to "
                f"{total - self.ppo.episodes_per_update}, e.g. {total // 2}."
            )
        if self.env.merge:
            raise ConfigError(
                f"ppo.search_episodes: the schedule the search finds becomes PPO's prior, and a prior may not merge, "
                f"so it cannot be combined with env.merge={self.env.merge}; set env.merge=[] or ppo.search_episodes=0."
            )

    def resolved_group_size(self) -> int:
        """``ppo.group_size`` with 0 resolved: pairs when the envs come in an even number, else none."""
        if self.ppo.group_size:
            return self.ppo.group_size
        return 2 if self.resolved_n_envs() % 2 == 0 else 1

    def processes(self) -> int:
        """Processes ``vec_env: batched`` splits the episodes over (``batched_processes`` resolved)."""
        n = self.resolved_n_envs()
        if self.batched_processes:
            return min(self.batched_processes, n)
        if self.run.training.torch_device().type != "cpu":  # one process drives a GPU; auto without one is cpu
            return 1
        import os

        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        return max(1, min(cores, n))


def load_controller_config(path: str | Path | None = None, overrides: list[str] | None = None) -> ControllerConfig:
    """YAML file (optional) + ``a.b=value`` overrides -> validated :class:`ControllerConfig`."""
    return load_dataclass_config(ControllerConfig, path, overrides)
