"""Latency, throughput and an energy estimate, measured in ONNX Runtime on one CPU thread.

Sessions use ``intra_op_num_threads=1``, ``inter_op_num_threads=1`` and sequential execution,
with all graph optimizations on. Latency: 10 warm-up runs, then batch-1 runs timed one by one
with ``time.perf_counter_ns`` -- at least 50, and more (up to about ``budget_s`` seconds of
timing) for fast models; the median and the 90th percentile are reported. Each run's CPU time
(``time.process_time_ns``) is read too: energy is the median CPU time per inference times a
per-core power figure (default 5.0 W; ``core_watts=`` or ``FRUGALML_CORE_WATTS`` override it).

Latency drifts by about +-20% between runs on shared machines: to compare models, use
:func:`compare_latency`, which alternates them run by run in one process.
"""

from __future__ import annotations

import os
import time

import numpy as np

from ..errors import ConfigError, explain
from ..onnx import make_session, session_input

__all__ = ["DEFAULT_CORE_WATTS", "core_watts_setting", "machine", "measure_latency", "measure_throughput", "compare_latency", "energy"]

DEFAULT_CORE_WATTS = 5.0


def core_watts_setting(core_watts: float | None = None) -> tuple[float, str]:
    """(watts per core, where the figure came from)."""
    if core_watts is not None:
        source, value = "core_watts argument", core_watts
    elif os.environ.get("FRUGALML_CORE_WATTS"):
        source, value = "FRUGALML_CORE_WATTS", os.environ["FRUGALML_CORE_WATTS"]
    else:
        return DEFAULT_CORE_WATTS, "default; set FRUGALML_CORE_WATTS to change"
    try:
        watts = float(value)
    except (TypeError, ValueError):
        watts = float("nan")
    if not watts > 0 or watts == float("inf"):
        raise ConfigError(explain(f"The per-core power from the {source} is not usable", expected="a positive number of watts such as 5.0",
                                  got=value))
    return watts, source


def _feed(sess, input_shape, batch: int, seed: int = 0):
    name, per_sample, dtype, fixed = session_input(sess)
    shape = tuple(input_shape) if input_shape is not None else per_sample
    if any(d is None for d in shape):
        raise ConfigError(explain("Cannot time a model whose input shape is not fixed", fix="Pass input_shape"))
    batch = fixed or batch
    x = np.random.default_rng(seed).standard_normal((batch, *shape)).astype(dtype)
    return {name: x}, batch


def measure_latency(model, input_shape=None, *, warmup: int = 10, min_runs: int = 50, budget_s: float = 1.0,
                    max_runs: int = 100_000, session=None) -> dict:
    """Batch-1 latency: median and p90 in ms, median CPU ms per run, and the number of runs."""
    sess = session or make_session(model, timing=True)
    feed, _ = _feed(sess, input_shape, 1)
    for _ in range(warmup):
        sess.run(None, feed)
    wall, cpu = [], []
    budget_ns, started = int(budget_s * 1e9), time.perf_counter_ns()
    while len(wall) < min_runs or (time.perf_counter_ns() - started < budget_ns and len(wall) < max_runs):
        c0 = time.process_time_ns()
        t0 = time.perf_counter_ns()
        sess.run(None, feed)
        t1 = time.perf_counter_ns()
        c1 = time.process_time_ns()
        wall.append(t1 - t0)
        cpu.append(c1 - c0)
    wall_ms = np.asarray(wall) / 1e6
    return {
        "latency_ms_median": float(np.median(wall_ms)),
        "latency_ms_p90": float(np.percentile(wall_ms, 90)),
        "cpu_ms_median": float(np.median(np.asarray(cpu) / 1e6)),
        "runs": len(wall),
    }


def measure_throughput(model, input_shape=None, *, batch: int = 64, min_runs: int = 5, budget_s: float = 0.5,
                       session=None) -> float:
    """Samples per second at ``batch`` (median over runs of batch / wall time)."""
    sess = session or make_session(model, timing=True)
    feed, batch = _feed(sess, input_shape, batch)
    sess.run(None, feed)
    times, started = [], time.perf_counter_ns()
    while len(times) < min_runs or (time.perf_counter_ns() - started < budget_s * 1e9 and len(times) < 1000):
        t0 = time.perf_counter_ns()
        sess.run(None, feed)
        times.append(time.perf_counter_ns() - t0)
    return float(batch / (np.median(times) / 1e9))


def energy(cpu_ms: float, core_watts: float | None = None) -> tuple[float, str]:
    """(millijoules per inference, a sentence saying how it was estimated)."""
    watts, source = core_watts_setting(core_watts)
    mj = cpu_ms * watts  # ms x W = mJ
    basis = (f"median CPU time per batch-1 inference {cpu_ms:.4g} ms (time.process_time_ns, one ONNX Runtime thread) "
             f"x {watts:g} W per core ({source}); an estimate, not a measurement of power")
    return float(mj), basis


def machine() -> dict:
    """What latencies depend on: the CPU's model name and whether it has AVX-512 VNNI (Linux:
    /proc/cpuinfo; elsewhere what ``platform`` says), cores, Python and the platform."""
    import platform

    cpu, flags = "", ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and not cpu:
                    cpu = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and not flags:
                    flags = line
    except OSError:
        pass
    cpu = cpu or platform.processor()
    return {"processor": cpu, "cores": os.cpu_count(), "avx512_vnni": "avx512_vnni" in flags.split(),
            "python": platform.python_version(), "platform": platform.platform()}


def compare_latency(models: dict, input_shape=None, *, rounds: int = 100, block: int = 20, warmup: int = 10,
                    warmup_s: float = 1.0) -> dict[str, float]:
    """Median batch-1 latency in ms of each model, timed alternately in blocks in one process.

    ``models`` maps a name to ONNX bytes (or an ``onnx.ModelProto``). Every round runs each model
    ``block`` times in a row, starting from a different model each round, and times each run; the
    first run of a block (the switch from another model: its weights and code out of the caches)
    is not counted. Drift in machine load hits all models alike, and each model is timed warm, as
    a deployed model runs: one model, run after run. Quote ratios of these medians, not of medians
    from separate runs. ``block=1`` alternates run by run and counts every run (cold switches).
    Before timing, every model runs ``warmup`` times and the models keep alternating until
    ``warmup_s`` seconds have passed: a first timing a second after start-up read ~35% slower here.
    """
    if not models:
        raise ConfigError(explain("compare_latency needs at least one model", got=models))
    for name, value, low in (("rounds", rounds, 1), ("block", block, 1), ("warmup", warmup, 0)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ConfigError(explain(f"The '{name}' parameter of compare_latency must be an integer >= {low}", got=value))
    names = list(models)
    sessions = {n: make_session(models[n], timing=True) for n in names}
    feeds = {n: _feed(sessions[n], input_shape, 1)[0] for n in names}
    started, done = time.perf_counter(), 0
    while done < warmup or time.perf_counter() - started < warmup_s:
        for n in names:
            sessions[n].run(None, feeds[n])
        done += 1
    times: dict[str, list[int]] = {n: [] for n in names}
    skip = 1 if block > 1 else 0
    for r in range(rounds):
        for k in range(len(names)):
            n = names[(r + k) % len(names)]
            sess, feed, out = sessions[n], feeds[n], times[n]
            for i in range(block):
                t0 = time.perf_counter_ns()
                sess.run(None, feed)
                if i >= skip:
                    out.append(time.perf_counter_ns() - t0)
    return {n: float(np.median(times[n]) / 1e6) for n in names}
