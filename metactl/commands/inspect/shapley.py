"""Exact Shapley values over a small set of players, from any value function on coalitions.

A player is whatever can be switched off (a tool's adapter, a layer group's share of every
adapter); ``value(coalition)`` is a score of the model with only that coalition switched on.
With n players this evaluates all 2**n coalitions once each, so it is meant for n <= 4 or so
(3 tools: 8 scorings). The values satisfy efficiency exactly: they sum to
``value(all) - value(none)``, the total change the players made together.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Hashable, Sequence

Values = dict[str, float]
MAX_EXACT_PLAYERS = 8


def coalition_values(players: Sequence[Hashable], value: Callable[[frozenset], Values]) -> dict[frozenset, Values]:
    """``value`` of every subset of ``players`` (each evaluated once)."""
    if len(players) > MAX_EXACT_PLAYERS:
        raise ValueError(
            f"exact Shapley over {len(players)} players needs 2**{len(players)} evaluations; "
            f"at most {MAX_EXACT_PLAYERS} players are supported"
        )
    out = {}
    for k in range(len(players) + 1):
        for combo in itertools.combinations(players, k):
            key = frozenset(combo)
            out[key] = value(key)
    return out


def shapley(players: Sequence[Hashable], table: dict[frozenset, Values]) -> dict[Hashable, Values]:
    """Shapley value of each player for each score key in ``table``'s values."""
    n = len(players)
    keys = list(next(iter(table.values())))
    out: dict[Hashable, Values] = {}
    for p in players:
        others = [q for q in players if q != p]
        acc = dict.fromkeys(keys, 0.0)
        for k in range(n):
            weight = math.factorial(k) * math.factorial(n - k - 1) / math.factorial(n)
            for combo in itertools.combinations(others, k):
                without = table[frozenset(combo)]
                with_p = table[frozenset(combo) | {p}]
                for key in keys:
                    acc[key] += weight * (with_p[key] - without[key])
        out[p] = acc
    return out


def leave_one_out(players: Sequence[Hashable], table: dict[frozenset, Values]) -> dict[Hashable, Values]:
    """Score lost when each player alone is removed from the full coalition."""
    full = table[frozenset(players)]
    return {p: {k: full[k] - table[frozenset(players) - {p}][k] for k in full} for p in players}
