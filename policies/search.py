"""Search baselines over the bandit's schedule space: random search and Optuna TPE.

Both spend their episodes on the same environment as the bandit (``metactl/ScheduleBandit-v0``,
the same task draws, the same residual action space), start from the prior (their first
candidate is the zero action), and act with the best candidate they found.
"""

from __future__ import annotations

import json
from abc import abstractmethod
from pathlib import Path

import numpy as np

from metactl.envs import BANDIT_ENV_ID
from metactl.envs.spaces import apply_residual
from metactl.errors import ConfigError
from metactl.policies.base import EpisodeSink, Policy
from metactl.rundir import SEARCH_STATE, atomic_write_text, rng_from_state
from metactl.schedule import Schedule

STATE_FILE = SEARCH_STATE


class _Search(Policy):
    env_id = BANDIT_ENV_ID

    def setup(self, venv, tb_dir: Path | None) -> None:
        self.space = venv.get_attr("space", indices=[0])[0]
        self.prior = venv.get_attr("prior", indices=[0])[0]
        self.trials: list[tuple[np.ndarray, float]] = []
        self._needs_reset = True

    @abstractmethod
    def propose(self, n: int) -> list[np.ndarray]:
        """``n`` candidate actions for the next batch of episodes."""

    def observe(self, actions: list[np.ndarray], rewards: list[float]) -> None:
        pass

    def learn(self, venv, sink: EpisodeSink) -> None:
        if self._needs_reset:
            venv.reset()
            self._needs_reset = False
        actions = self.propose(venv.num_envs)
        _, rewards, _, infos = venv.step(np.stack(actions).astype(np.float32))
        for i, info in enumerate(infos):
            sink(i, info)
        self.trials += [(a, float(r)) for a, r in zip(actions, rewards)]
        self.observe(actions, [float(r) for r in rewards])

    def best_action(self) -> np.ndarray:
        if not self.trials:
            return np.zeros(self.space.dim)
        return max(self.trials, key=lambda t: t[1])[0]

    def actor(self) -> Schedule:
        return self.space.schedule(apply_residual(self.prior, self.best_action()), name=self.name)

    def _state(self) -> dict:
        return {}

    def _restore(self, state: dict) -> None:
        pass

    def save(self, path: Path) -> None:
        # Plain JSON, so loading a run dir executes nothing: the trials (action, reward) and what
        # the searcher needs to go on; the space and the prior come from the env at setup.
        trials = [[[float(x) for x in a], float(r)] for a, r in self.trials]
        atomic_write_text(Path(path) / STATE_FILE, json.dumps({"trials": trials, **self._state()}))

    def load(self, path: Path, venv=None) -> None:
        file = Path(path) / STATE_FILE
        try:
            state = json.loads(file.read_text())
            self.trials = [(np.asarray(a, dtype=np.float64), float(r)) for a, r in state["trials"]]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{file}: not a {self.name} search state ({type(exc).__name__}: {exc}).") from exc
        if any(a.shape != (self.space.dim,) for a, _ in self.trials):
            raise ConfigError(f"{file}: its actions do not have the env's {self.space.dim} dimensions.")
        self._restore(state)
        self._needs_reset = True


class RandomSearch(_Search):
    name = "random"
    help = "uniform random search over the bandit's schedule space; keeps the best episode"

    def setup(self, venv, tb_dir: Path | None) -> None:
        super().setup(venv, tb_dir)
        self.rng = np.random.default_rng(self.config.seed)
        venv.seed(self.config.seed)

    def propose(self, n: int) -> list[np.ndarray]:
        out = [self.rng.uniform(-1.0, 1.0, self.space.dim) for _ in range(n)]
        if not self.trials:
            out[0] = np.zeros(self.space.dim)  # the prior itself is the first candidate
        return out

    def _state(self) -> dict:
        return {"rng": self.rng.bit_generator.state}

    def _restore(self, state: dict) -> None:
        self.rng = rng_from_state(state["rng"])


class OptunaTPE(_Search):
    name = "optuna"
    help = "Optuna's TPE sampler over the bandit's schedule space; keeps the best trial"

    def setup(self, venv, tb_dir: Path | None) -> None:
        import optuna

        super().setup(venv, tb_dir)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        sampler = optuna.samplers.TPESampler(
            seed=self.config.seed, n_startup_trials=max(2, min(10, self.config.total_episodes // 4))
        )
        self.study = optuna.create_study(direction="maximize", sampler=sampler)
        self.study.enqueue_trial({f"a{j}": 0.0 for j in range(self.space.dim)})  # start at the prior
        self._asked: list = []
        venv.seed(self.config.seed)

    def propose(self, n: int) -> list[np.ndarray]:
        self._asked = [self.study.ask() for _ in range(n)]
        return [np.array([t.suggest_float(f"a{j}", -1.0, 1.0) for j in range(self.space.dim)]) for t in self._asked]

    def observe(self, actions: list[np.ndarray], rewards: list[float]) -> None:
        for trial, r in zip(self._asked, rewards):
            self.study.tell(trial, r)
        self._asked = []

    def _restore(self, state: dict) -> None:
        # The study is rebuilt from the trials (a pickled study could run code on load): TPE sees
        # the same history, its sampler re-seeded from the seed and the trial count, so a resumed
        # search goes on from what it knew, though not draw for draw as an uninterrupted one.
        import optuna

        dims = {f"a{j}": optuna.distributions.FloatDistribution(-1.0, 1.0) for j in range(self.space.dim)}
        sampler = optuna.samplers.TPESampler(
            seed=self.config.seed + len(self.trials),
            n_startup_trials=max(2, min(10, self.config.total_episodes // 4)),
        )
        self.study = optuna.create_study(direction="maximize", sampler=sampler)
        self.study.add_trials([
            optuna.trial.create_trial(params={f"a{j}": float(x) for j, x in enumerate(a)}, distributions=dims, value=r)
            for a, r in self.trials
        ])
        if not self.trials:
            self.study.enqueue_trial({f"a{j}": 0.0 for j in range(self.space.dim)})  # start at the prior
        self._asked = []


class TunedLR(OptunaTPE):
    """"Just tune the learning rates": the prior schedule (``env.prior``, default ``default``) as it is,
    with one learning-rate multiplier per tool that takes part in it searched by Optuna TPE
    (x1/R to xR, R = ``env.train_range``, 4 by default; every layer group and module kind alike).
    The baseline a learned conductor must beat to show that *how* tools are combined matters, not
    only how fast each one learns."""

    name = "tuned-lr"
    help = (
        "the prior schedule with each tool's learning rate searched by Optuna TPE (x1/R-xR, R = env.train_range); "
        "keeps the best"
    )

    def env_config(self, env):
        import dataclasses

        # The learning rates are its whole space: under share-only controls the bandit's schedule
        # space has none, and every trial would be the prior.
        return dataclasses.replace(env, controls="layer") if env.controls == "share" else env

    def setup(self, venv, tb_dir: Path | None) -> None:
        super().setup(venv, tb_dir)
        labels = self.space.labels()
        shares = self.prior[: self.space.phases * len(self.space.tools)].reshape(self.space.phases, -1)
        # Tools the prior never gives a step to would add dimensions that change nothing.
        self.tuned = [t for i, t in enumerate(self.space.tools) if (shares[:, i] > -1.0).any()]
        self.cells = {t: [j for j, lb in enumerate(labels) if lb.startswith(f"{t}.train.")] for t in self.tuned}
        if not all(self.cells.values()):
            raise ConfigError(
                f"tuned-lr: the env's schedule space has no learning-rate controls ({self.space.dim} dims, "
                "shares only?); it needs env.controls=layer or tool."
            )
        self._restore({})

    def _action(self, codes: dict[str, float]) -> np.ndarray:
        # The action is a residual decoded as clip(prior + 2a): a = code / 2 spans the train
        # control's whole range around the prior's own multiplier without clipping plateaus.
        a = np.zeros(self.space.dim)
        for t, code in codes.items():
            a[self.cells[t]] = code / 2.0
        return a

    def propose(self, n: int) -> list[np.ndarray]:
        self._asked = [self.study.ask() for _ in range(n)]
        return [self._action({t: trial.suggest_float(f"lr_{t}", -1.0, 1.0) for t in self.tuned})
                for trial in self._asked]

    def _restore(self, state: dict) -> None:
        import optuna

        dims = {f"lr_{t}": optuna.distributions.FloatDistribution(-1.0, 1.0) for t in self.tuned}
        sampler = optuna.samplers.TPESampler(
            seed=self.config.seed + len(self.trials),
            n_startup_trials=max(2, min(10, self.config.total_episodes // 4)),
        )
        self.study = optuna.create_study(direction="maximize", sampler=sampler)
        self.study.add_trials([
            optuna.trial.create_trial(
                params={f"lr_{t}": float(np.clip(2.0 * a[self.cells[t][0]], -1.0, 1.0)) for t in self.tuned},
                distributions=dims, value=r,
            )
            for a, r in self.trials
        ])
        if not self.trials:
            self.study.enqueue_trial({f"lr_{t}": 0.0 for t in self.tuned})  # start at the prior
        self._asked = []
