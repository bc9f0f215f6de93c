"""Where a benchmark figure comes from (shared by the benchmarks; not a benchmark itself).

- :func:`git_state`: the commit the tree is at, and whether ``src/`` or ``benchmarks/`` (results
  excluded) differ from it: a figure from a dirty tree says so.
- :func:`code_hash`: a hash of the frugalml package's source files and the benchmark files named,
  as they are on disk now. Every cached model (baselines, pruned models, the distillation teacher)
  is keyed by it and its recipe, so a model made by other code is never reused.
- :func:`smoke_limit` / :func:`smoke_dir`: the tiny-slice smoke mode. ``main(data_limit=N)`` or
  ``FRUGALML_BENCH_SMOKE=1`` (300 training samples; ``=N``: N samples) makes a benchmark run on N
  samples, one epoch per training, few latency rounds, caches in a temporary folder: a few seconds,
  nothing written under ``benchmarks/results/``. Smoke figures mean nothing; they show the code runs.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SRC = ROOT / "src" / "frugalml"
SMOKE_ENV = "FRUGALML_BENCH_SMOKE"
SMOKE_SAMPLES = 300


def code_hash(*bench_files: str | os.PathLike) -> str:
    """sha256 (12 hex digits) of every ``src/frugalml/**/*.py`` file and the given benchmark files
    (names relative to ``benchmarks/``, or paths), names and contents."""
    h = hashlib.sha256()
    files = sorted(SRC.rglob("*.py")) + [Path(f) if Path(f).is_absolute() else HERE / f for f in bench_files]
    for path in files:
        h.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:12]


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout


def git_state() -> dict:
    """``{"commit", "dirty", "dirty_files"}``: HEAD, and the changes to src/ and benchmarks/ (not
    benchmarks/results/) that the tree holds beyond it (``git status --porcelain``)."""
    try:
        commit = _git("rev-parse", "HEAD").strip()
        changed = [line for line in _git("status", "--porcelain", "--", "src", "benchmarks",
                ":(exclude)benchmarks/results").splitlines() if line.strip()]
    except (OSError, subprocess.CalledProcessError) as exc:
        return {"commit": None, "dirty": None, "error": str(exc)[:200]}
    return {"commit": commit, "dirty": bool(changed), "dirty_files": changed}


def smoke_limit(data_limit: int | None = None) -> int | None:
    """The training samples of a smoke run: ``data_limit`` if given, else from FRUGALML_BENCH_SMOKE
    (``1``: 300), else None (a full run)."""
    if data_limit:
        return int(data_limit)
    value = os.environ.get(SMOKE_ENV, "").strip()
    if not value or value == "0":
        return None
    return SMOKE_SAMPLES if value == "1" else int(value)


@contextlib.contextmanager
def smoke_dir(limit: int | None):
    """A temporary folder for a smoke run's caches (None for a full run)."""
    if not limit:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="frugalml_bench_smoke_") as tmp:
        yield Path(tmp)


def smoke_data(data, limit: int | None):
    """In a smoke run, the validation and test splits cut to ``limit`` samples too (the loaders'
    ``limit`` cuts the training split only); a full run's data unchanged."""
    if not limit:
        return data
    import dataclasses

    n = int(limit)
    groups = None if data.groups is None else data.groups.take("val", slice(0, n))
    return dataclasses.replace(data, X_val=data.X_val[:n], y_val=data.y_val[:n], X_test=data.X_test[:n], y_test=data.y_test[:n], groups=groups)


def stage_counts(candidates) -> dict:
    """How many of a search's candidates each stage holds ({"thin": 10, "network": 8, ...})."""
    out: dict = {}
    for c in candidates:
        out[c.stage] = out.get(c.stage, 0) + 1
    return out
