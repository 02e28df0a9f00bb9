"""Search baselines over the bandit's schedule space: random search and Optuna TPE.

Both spend their episodes on the same environment as the bandit (``metactl/ScheduleBandit-v0``,
the same task draws, the same residual action space), start from the prior (their first
candidate is the zero action), and act with the best candidate they found.
"""

from __future__ import annotations

import json
from abc import abstractmethod
from pathlib import Path
from typing import NamedTuple

import numpy as np

from metactl.envs import BANDIT_ENV_ID
from metactl.envs.spaces import apply_residual
from metactl.errors import ConfigError
from metactl.policies.base import EpisodeSink, Policy
from metactl.rundir import SEARCH_STATE, atomic_write_text, rng_from_state
from metactl.schedule import Schedule
from metactl.tasks.mixture import family

STATE_FILE = SEARCH_STATE
RERUNS = 2  # more episodes for each candidate run again under search.keep=reevaluated


class Trial(NamedTuple):
    action: np.ndarray
    reward: float
    group: str  # the task family the episode drew (a mixture's member suite; the suite itself otherwise)
    rerun_of: int  # -1: a new candidate; else the index of the trial whose action it runs again


def _center(values: list[float]) -> float:
    # The median: a diverged episode's penalty would otherwise set its family's whole level.
    return float(np.median(np.asarray(values, dtype=np.float64)))


class _Search(Policy):
    env_id = BANDIT_ENV_ID

    def setup(self, venv, tb_dir: Path | None) -> None:
        self.space = venv.get_attr("space", indices=[0])[0]
        self.prior = venv.get_attr("prior", indices=[0])[0]
        self.trials: list[Trial] = []
        self._needs_reset = True

    @abstractmethod
    def propose(self, n: int) -> list[np.ndarray]:
        """``n`` candidate actions for the next batch of episodes."""

    def observe(self, actions: list[np.ndarray], rewards: list[float]) -> None:
        pass

    def budget(self) -> tuple[int, int]:
        """(episodes of new candidates, candidates run again ``RERUNS`` more times each)."""
        total, search = self.config.total_episodes, self.config.search
        rerun = int(total * search.reevaluate) // RERUNS if search.keep == "reevaluated" else 0
        return total - rerun * RERUNS, rerun

    def learn(self, venv, sink: EpisodeSink) -> None:
        if self._needs_reset:
            venv.reset()
            self._needs_reset = False
        fresh, rerun = self.budget()
        done, n = len(self.trials), venv.num_envs
        # A batch is all new candidates or all reruns, so the ranking the reruns follow is the whole
        # set of new candidates (the new phase may run over into the rerun budget by n - 1 episodes).
        m = n if rerun == 0 or done < fresh else 0
        new = self.propose(m) if m else []
        top = self.top(rerun) if m < n else []
        sources = [-1] * m + [top[min((done + i - fresh) // RERUNS, len(top) - 1)] for i in range(m, n)]
        actions = new + [self.trials[j].action for j in sources[m:]]
        _, rewards, _, infos = venv.step(np.stack(actions).astype(np.float32))
        for i, info in enumerate(infos):
            sink(i, info)
        self.trials += [
            Trial(np.asarray(a, dtype=np.float64), float(r), family(self.config.run.suite, int(info["task_seed"])), j)
            for a, r, info, j in zip(actions, rewards, infos, sources)
        ]
        self.observe(new, [float(r) for r in rewards[:m]])

    def fresh_trials(self) -> list[Trial]:
        return [t for t in self.trials if t.rerun_of < 0]

    def centred(self) -> list[float]:
        """Each trial's reward less its family's median over the new candidates: families reach different
        gains, so raw gains rank the family an episode drew more than the schedule. Not scaled, since the
        reported gain averages families in the same units."""
        fresh = self.fresh_trials()
        by_group: dict[str, list[float]] = {}
        for t in fresh:
            by_group.setdefault(t.group, []).append(t.reward)
        centers = {g: _center(v) for g, v in by_group.items()}
        overall = _center([t.reward for t in fresh]) if fresh else 0.0
        return [t.reward - centers.get(t.group, overall) for t in self.trials]

    def top(self, k: int) -> list[int]:
        """The ``k`` new candidates with the highest centred reward (ties: the earlier)."""
        z = self.centred()
        fresh = [i for i, t in enumerate(self.trials) if t.rerun_of < 0]
        return sorted(fresh, key=lambda i: (-z[i], i))[:k]

    def best_index(self) -> int:
        if self.config.search.keep == "episode":
            return max(range(len(self.trials)), key=lambda i: (self.trials[i].reward, -i))
        z = self.centred()
        runs: dict[int, list[float]] = {}
        for i, t in enumerate(self.trials):
            runs.setdefault(i if t.rerun_of < 0 else t.rerun_of, []).append(z[i])
        # A candidate run again is judged on all its episodes; until some are, on its one.
        most = max(len(v) for v in runs.values())
        return max((c for c, v in runs.items() if len(v) == most), key=lambda c: (float(np.mean(runs[c])), -c))

    def best_action(self) -> np.ndarray:
        if not self.trials:
            return np.zeros(self.space.dim)
        return self.trials[self.best_index()].action

    def actor(self) -> Schedule:
        return self.space.schedule(apply_residual(self.prior, self.best_action()), name=self.name)

    def _state(self) -> dict:
        return {}

    def _restore(self, state: dict) -> None:
        pass

    def save(self, path: Path) -> None:
        # Plain JSON, so loading a run dir executes nothing: the trials (action, reward, family, the
        # trial it reruns) and what the searcher needs to go on; the space and the prior come from
        # the env at setup.
        trials = [[[float(x) for x in t.action], t.reward, t.group, t.rerun_of] for t in self.trials]
        atomic_write_text(Path(path) / STATE_FILE, json.dumps({"trials": trials, **self._state()}))

    def load(self, path: Path, venv=None) -> None:
        file = Path(path) / STATE_FILE
        try:
            state = json.loads(file.read_text())
            # A state written before families were recorded holds [action, reward]: new candidates.
            self.trials = [
                Trial(np.asarray(row[0], dtype=np.float64), float(row[1]),
                      str(row[2]) if len(row) > 2 else "", int(row[3]) if len(row) > 3 else -1)
                for row in state["trials"]
            ]
        except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
            raise ConfigError(f"{file}: not a {self.name} search state ({type(exc).__name__}: {exc}).") from exc
        if any(t.action.shape != (self.space.dim,) for t in self.trials):
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
            for a, r, *_ in self.fresh_trials()
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
            for a, r, *_ in self.fresh_trials()
        ])
        if not self.trials:
            self.study.enqueue_trial({f"lr_{t}": 0.0 for t in self.tuned})  # start at the prior
        self._asked = []
