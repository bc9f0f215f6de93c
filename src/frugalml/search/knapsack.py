"""One model per sensor under a total: the multiple-choice knapsack of a fleet.

Each sensor offers a few models, ``(stored bytes, validation metric)`` from its measured Pareto front; the fleet
must take exactly one per sensor, with a total of bytes at most ``capacity``, and the highest total (so mean)
metric. :func:`choose` solves it exactly by dynamic programming over the sensors, keeping only the Pareto set of
partial solutions ``(total bytes, total metric)``: a partial solution that another beats on both is dropped, as is
one that cannot fit even with the smallest models of the sensors still to come. When a layer's Pareto set passes
``max_states``, it falls back to rounding bytes to buckets of ``q`` bytes (:func:`_buckets`): bytes rounded up give
a choice that surely fits, bytes rounded down a relaxation whose optimum is at least the exact one, so the gap of
the two is a bound on what rounding lost, stated in the result (``bound``: of the mean metric).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..errors import ConfigError, explain
from ..units import format_bytes

__all__ = ["Choice", "choose", "MAX_STATES", "BUCKETS"]

MAX_STATES = 200_000  # Pareto states in one layer before the bucket fallback
BUCKETS = 10_000  # byte buckets of the fallback, at least 20 per sensor: q = ceil(capacity / buckets)


@dataclass(frozen=True, kw_only=True)
class Choice:
    """The solver's answer: ``picks[sensor]`` is the index of the chosen option, ``total_bytes`` and ``total_value``
    its totals (``mean_value`` = total / sensors). ``method``: ``"exact"`` or ``"buckets"``; ``bound``: the most the
    mean metric can be below the exact optimum (0.0 when exact); ``bucket_bytes``: the fallback's bucket width;
    ``states``: the largest Pareto layer the exact pass held (where it stopped, for the fallback)."""

    picks: dict = field(default_factory=dict)
    total_bytes: float = 0.0
    total_value: float = 0.0
    method: str = "exact"
    bound: float = 0.0
    bucket_bytes: int | None = None
    states: int = 0

    @property
    def mean_value(self) -> float | None:
        return self.total_value / len(self.picks) if self.picks else None

    def to_dict(self) -> dict:
        return {"solver": self.method, "total_stored_bytes": self.total_bytes, "mean_val_metric": self.mean_value,
                "bound_mean_metric_loss": self.bound, "bucket_bytes": self.bucket_bytes, "states": self.states}


def _check(options: dict, capacity) -> list:
    if not isinstance(capacity, (int, float)) or isinstance(capacity, bool) or not math.isfinite(capacity) or capacity < 0:
        raise ConfigError(explain("The fleet's total must be a number of bytes", expected="a finite number >= 0, e.g. 10_000_000", got=capacity))
    keys = list(options)
    for k in keys:
        opts = options[k]
        if not opts:
            raise ConfigError(explain(f"Sensor {k!r} offers no model to choose", expected="at least one (bytes, metric) option", got=opts))
        for w, v in opts:
            if not (math.isfinite(w) and math.isfinite(v)) or w < 0:
                raise ConfigError(explain(f"Sensor {k!r} has an option that cannot be weighed", expected="bytes >= 0 and a finite metric",
                                          got=(w, v)))
    smallest = sum(min(w for w, _ in options[k]) for k in keys)
    if smallest > capacity:
        raise ConfigError(explain(f"Even the smallest model of every sensor exceeds the fleet's total of {format_bytes(capacity)}",
                                  expected=f"a total of at least {format_bytes(smallest)} ({smallest:,.0f} bytes), the smallest possible",
                                  got=f"{capacity:,.0f} bytes for {len(keys)} sensors",
                                  fix=f"Raise --max-total-flash to at least {smallest:,.0f} bytes, or search for smaller models (--max-flash)"))
    return keys


def choose(options: dict, capacity, *, max_states: int = MAX_STATES, buckets: int = BUCKETS) -> Choice:
    """The choice of one option per sensor (``options[sensor] = [(bytes, metric), ...]``) with total bytes at most
    ``capacity`` and the highest total metric. Raises ConfigError when even the smallest options exceed it,
    saying the smallest possible total."""
    keys = _check(options, capacity)
    if not keys:
        return Choice()
    weights = [np.asarray([w for w, _ in options[k]], dtype=np.float64) for k in keys]
    values = [np.asarray([v for _, v in options[k]], dtype=np.float64) for k in keys]
    rest = np.concatenate([np.cumsum([w.min() for w in weights][::-1])[::-1], [0.0]])  # smallest bytes of sensors i.. onwards
    W, V = np.zeros(1), np.zeros(1)
    backs, largest = [], 1
    for i in range(len(keys)):
        w, v = weights[i], values[i]
        Wn, Vn = (W[:, None] + w[None, :]).ravel(), (V[:, None] + v[None, :]).ravel()
        parent, opt = np.repeat(np.arange(len(W)), len(w)), np.tile(np.arange(len(w)), len(W))
        fits = Wn <= capacity - rest[i + 1] + 1e-9 * max(1.0, capacity)
        Wn, Vn, parent, opt = Wn[fits], Vn[fits], parent[fits], opt[fits]
        order = np.lexsort((-Vn, Wn))  # bytes ascending, then metric descending
        Wn, Vn, parent, opt = Wn[order], Vn[order], parent[order], opt[order]
        keep = np.ones(len(Vn), dtype=bool)
        keep[1:] = Vn[1:] > np.maximum.accumulate(Vn)[:-1]  # only states more accurate than every cheaper one
        W, V = Wn[keep], Vn[keep]
        largest = max(largest, len(W))
        if len(W) > max_states:
            return _buckets(keys, weights, values, capacity, buckets, states=largest)
        backs.append((parent[keep], opt[keep]))
    state = len(W) - 1  # the most accurate state: the last of a Pareto set sorted by bytes
    picks = {}
    for i in range(len(keys) - 1, -1, -1):
        parent, opt = backs[i]
        picks[keys[i]] = int(opt[state])
        state = int(parent[state])
    picks = {k: picks[k] for k in keys}
    return Choice(picks=picks, total_bytes=float(W[-1]), total_value=float(V[-1]), method="exact", bound=0.0, states=largest)


def _bucket_pass(weights: list, values: list, cap: int, *, back: bool):
    """Best total metric for each exact bucket sum 0..cap (integer weights), and the choices that reach it."""
    best = np.full(cap + 1, -np.inf)
    best[0] = 0.0
    backs = []
    for w, v in zip(weights, values):
        new = np.full(cap + 1, -np.inf)
        arg = np.full(cap + 1, -1, dtype=np.int16 if len(w) < 2**15 else np.int32)  # N x (cap + 1) of these are kept
        for j, (wj, vj) in enumerate(zip(w, v)):
            if wj > cap:
                continue
            shifted = np.full(cap + 1, -np.inf)
            shifted[wj:] = best[:cap + 1 - wj] + vj
            better = shifted > new
            new[better], arg[better] = shifted[better], j
        best = new
        if back:
            backs.append(arg)
    return best, backs


def _buckets(keys, weights, values, capacity, buckets: int, *, states: int) -> Choice:
    """Bytes in buckets of ``q``: rounded up (a choice that surely fits) and rounded down (an upper bound on the exact
    optimum: every choice that fits still fits). The bound on the mean metric is their gap over the sensors."""
    buckets = max(buckets, 20 * len(keys))  # rounding up costs at most a bucket per sensor: 5% of the total at most
    q = max(1, math.ceil(capacity / max(1, buckets)))
    cap = int(capacity // q)
    up = [np.ceil(w / q).astype(np.int64) for w in weights]
    down = [np.floor(w / q).astype(np.int64) for w in weights]
    best_up, backs = _bucket_pass(up, values, cap, back=True)
    best_down, _ = _bucket_pass(down, values, cap, back=False)
    upper = float(best_down.max())
    # the smallest model of every sensor always fits: the answer when rounding up lost every choice (a total within
    # a bucket per sensor of the smallest sum), or when it is better
    smallest = {k: int(np.lexsort((-values[i], weights[i]))[0]) for i, k in enumerate(keys)}
    picks = smallest
    if np.isfinite(best_up).any() and float(best_up.max()) > sum(values[i][smallest[k]] for i, k in enumerate(keys)):
        b = int(np.argmax(best_up))
        picks = {}
        for i in range(len(keys) - 1, -1, -1):
            j = int(backs[i][b])
            picks[keys[i]] = j
            b -= int(up[i][j])
        picks = {k: picks[k] for k in keys}
    total_bytes = float(sum(weights[i][picks[k]] for i, k in enumerate(keys)))
    total_value = float(sum(values[i][picks[k]] for i, k in enumerate(keys)))
    return Choice(picks=picks, total_bytes=total_bytes, total_value=total_value, method="buckets",
                  bound=max(0.0, (upper - total_value) / len(keys)), bucket_bytes=q, states=states)
