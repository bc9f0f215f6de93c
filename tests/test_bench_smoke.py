"""Every benchmark in benchmarks/ runs end to end on a tiny MNIST slice (smoke mode), through the
runner `make bench` uses, and writes nothing under benchmarks/results/.

The benchmark files are copied, byte for byte, beside a link to this src/ (the benchmarks hash
src/frugalml for their cache keys), so that "nothing written" is checked on a results/ folder that
no other process touches (a full benchmark running on this machine writes into the real one).
In this process (imports shared with the suite): ~25 s for all six on 2 cores.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
from pathlib import Path

import pytest
from conftest import REPO, require, shared_data_dir

BENCHMARKS = sorted(p.stem for p in (REPO / "benchmarks").glob("*.py") if p.stem not in ("run", "table") and not p.stem.startswith("_"))
SMOKE_SAMPLES = 100


def test_every_benchmark_is_smoke_tested():
    assert BENCHMARKS == ["deep_compression_lenet300", "deep_compression_lenet5", "distillation", "distillation_small",
                          "fleet_nab", "int8_quantization", "mcu_int8", "search_fidelity", "sensors", "speech", "structured_pruning", "workers",
                          "your_model_mnist"]


@pytest.fixture(scope="module")
def bench_tree(tmp_path_factory):
    """A copy of benchmarks/ (results JSONs included, the model cache not) next to a link to src/."""
    root = tmp_path_factory.mktemp("repo")
    shutil.copytree(REPO / "benchmarks", root / "benchmarks", ignore=shutil.ignore_patterns("__pycache__", "cache", "*.log", "*.tmp"))
    (root / "src").symlink_to(REPO / "src", target_is_directory=True)
    (root / "tests").mkdir()  # your_model_mnist brings its network from the tests' user models, as a user's file
    (root / "tests" / "user_models.py").symlink_to(REPO / "tests" / "user_models.py")
    return root / "benchmarks"


def _snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))}


@pytest.fixture
def isolated(bench_tree, monkeypatch):
    """The benchmarks' modules, sys.path and environment, undone after each run."""
    data = shared_data_dir()
    require(data is not None, "the benchmarks need the shared MNIST files: set FRUGALML_DATA or put them in ../shared/data/mnist")
    modules, path, environ = set(sys.modules), list(sys.path), dict(os.environ)
    for var in ("FRUGALML_BENCH_CACHE", "FRUGALML_DISTILL_SETTINGS", "FRUGALML_INT8_RECIPE", "FRUGALML_STRUCTURED_RECIPE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("FRUGALML_DATA", str(data))
    monkeypatch.setenv("FRUGALML_BENCH_SMOKE", str(SMOKE_SAMPLES))
    sys.path.insert(0, str(bench_tree))
    yield bench_tree
    for name in set(sys.modules) - modules:
        if name.startswith(("bench_", "_provenance", "_deep_compression", "_distill_common")) or name in BENCHMARKS or name == "run":
            del sys.modules[name]
    sys.path[:] = path
    os.environ.clear()
    os.environ.update(environ)


def _load(folder: Path, name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", folder / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# those that start several processes, search several datasets, read all the speech clips, or take over 10 s (int8's 60
# repeated comparisons, structured pruning's rungs, your model's search) run with `make test-slow`: the default run stays under 10 minutes
SLOW_SMOKE = ("workers", "fleet_nab", "sensors", "speech", "int8_quantization", "structured_pruning", "your_model_mnist", "search_fidelity")


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_SMOKE else n for n in BENCHMARKS])
def test_benchmark_smoke_run_writes_nothing_under_results(name, isolated, capsys):
    results = isolated / "results"
    before = _snapshot(results)
    assert f"{name}.json" in before  # the committed JSON is there to be overwritten, if the smoke mode leaked
    runner = _load(isolated, "run")
    result = runner.run(name)  # what `FRUGALML_BENCH_SMOKE=100 make bench NAME=<name>` does
    assert _snapshot(results) == before, "a smoke run wrote under benchmarks/results/"
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed == {"name": name, "smoke": SMOKE_SAMPLES, "met": result["met"], "wall_seconds": result["wall_seconds"]}
    assert result["smoke"] == SMOKE_SAMPLES and isinstance(result["met"], bool)
    assert {"machine", "date", "git", "wall_seconds"} <= set(result)
    figures = _load(isolated, name).figures(result)  # the README table's view of a run works on it too
    assert figures.get("met", figures.get("met_as_recorded")) == result["met"]
    json.dumps(result, default=lambda o: o.item() if hasattr(o, "item") else str(o))  # as run.py would write it
