"""``ppo.search_episodes``: random search first, then PPO around the best schedule it found.

PPO explores with small Gaussian steps around its prior, so a decision far from the prior is never
tried: under the ``default`` prior no learned schedule ran DPO in the first half, and ``expert``
without it loses beyond noise (docs/schedule_ablation.md). Random search draws whole schedules
uniformly over the same residual space, so it reaches those regions, but keeps one open-loop
schedule chosen on single noisy episodes. The two stages share the budget: the search's episodes
(``RUN/search/``, a train-controller run of policy ``random`` of its own, unevaluated) come first,
and PPO spends the rest acting residually around the schedule the search kept, which becomes its
``env.prior``. Nothing hand-written enters: the search starts from ``env.prior`` (``default``) too.

It is the default (``ppo.search_episodes: auto``, half the budget): under the ``default`` prior
alone PPO never left the DPO-late region, and with the search first its held-out-family gain rose
from +1.264 to +1.377 over five seeds (docs/lever_rsppo.md, within seed noise).

``RUN/config.yaml`` keeps the config the user gave; :func:`acting_config` is the config the saved
controller acts under (its prior the searched schedule), and :func:`load_run_config` reads a run
dir's config that way, for everything that reloads a run.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from metactl.config import load_dataclass_config, read_config_file
from metactl.errors import ConfigError
from metactl.policies.config import ControllerConfig
from metactl.rundir import CONFIG, SCHEDULE, SEARCH_DIR

SEARCH_POLICY = "random"


def searches_first(cfg: ControllerConfig) -> bool:
    return cfg.policy == "ppo" and cfg.resolved_search_episodes() > 0


def search_config(cfg: ControllerConfig) -> ControllerConfig:
    """The search stage: the same episodes, tasks and seed, policy ``random`` for ``ppo.search_episodes``
    episodes, on the envs its policy runs on by default (the population engine runs PPO only)."""
    batched = cfg.resolved_vec_env() == "batched"
    return dataclasses.replace(
        cfg, policy=SEARCH_POLICY, total_episodes=cfg.resolved_search_episodes(), compare=[],
        vec_env="auto" if batched else cfg.vec_env, n_envs=0 if batched else cfg.n_envs,
        ppo=dataclasses.replace(cfg.ppo, search_episodes=0),
    )


def searched_prior(out: Path) -> Path:
    return Path(out) / SEARCH_DIR / SCHEDULE


def acting_config(cfg: ControllerConfig, out: Path) -> ControllerConfig:
    """The config ``out``'s controller trains and acts under: for a run that searched first, PPO's
    share of the budget around the searched schedule; any other config unchanged."""
    if not searches_first(cfg):
        return cfg
    return dataclasses.replace(
        cfg, total_episodes=cfg.total_episodes - cfg.resolved_search_episodes(),
        env=dataclasses.replace(cfg.env, prior=str(searched_prior(out))),
        ppo=dataclasses.replace(cfg.ppo, search_episodes=0),
    )


def load_run_config(run: Path, acting: bool = True, overrides: list[str] | None = None) -> ControllerConfig:
    """``run``'s ``config.yaml`` (then ``overrides``), as its controller acts (``acting``: the searched
    prior, :func:`acting_config`) or as the user gave it. A run dir written before the search stage
    existed has no ``ppo.search_episodes``: it ran PPO alone, so it reads as 0, not as today's default;
    one written before ``search.keep`` kept its search's best single episode."""
    data = read_config_file(Path(run) / CONFIG)
    ppo = data.get("ppo") or {}
    if isinstance(ppo, dict) and "search_episodes" not in ppo:
        data["ppo"] = {**ppo, "search_episodes": 0}
    if "search" not in data:  # written before search.keep existed: it kept the best single episode
        data["search"] = {"keep": "episode"}
    cfg = load_dataclass_config(ControllerConfig, None, overrides, base=data)
    if not acting:
        return cfg
    if searches_first(cfg) and not searched_prior(run).is_file():
        raise ConfigError(
            f"run {run}: its config searches first (ppo.search_episodes={cfg.ppo.search_episodes}, "
            f"{cfg.resolved_search_episodes()} episodes) and {searched_prior(run)} is missing, so the search stage "
            f"did not finish and no controller acts yet; `metactl train-controller --resume {run}` completes it."
        )
    return acting_config(cfg, Path(run))
