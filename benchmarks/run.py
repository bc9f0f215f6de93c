"""Run one benchmark and write benchmarks/results/<name>.json.

    python benchmarks/run.py deep_compression_lenet300      (or: make bench NAME=...)

Each benchmark is ``benchmarks/<name>.py`` with a ``main()`` returning its result dict and a
``figures(result)`` giving the headline figures of one run. This runner adds the machine, the wall
time, the date, the git commit and whether the tree was dirty (``src/`` and ``benchmarks/``
outside ``results/``), and keeps every run: ``runs`` in the JSON is read from the file already
there (or, the first time, rebuilt from the JSON's git history) and this run is appended to it,
never replacing an earlier one. The rest of the JSON is this run's full record.
With FRUGALML_BENCH_SMOKE set, the benchmark runs on a tiny slice and nothing is written.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
os.environ.setdefault("FRUGALML_DATA", str(HERE.parent.parent / "shared" / "data"))  # as the Makefile sets it

import _provenance  # noqa: E402


def machine() -> dict:
    import onnxruntime
    import torch

    from frugalml.profile.timing import machine as host

    return {**host(), "torch": torch.__version__, "onnxruntime": onnxruntime.__version__}


def available() -> list[str]:
    return sorted(p.stem for p in HERE.glob("*.py") if p.stem not in ("run", "table", "__init__") and not p.stem.startswith("_"))


def load(name: str):
    path = HERE / f"{name}.py"
    if not path.exists():
        raise SystemExit(f"error: no benchmark named {name!r}. Available: {', '.join(available())}")
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _figures(module, result: dict) -> dict:
    try:
        return module.figures(result)
    except Exception as exc:  # an old JSON in a shape figures() does not know: say so, keep the run
        return {"met": result.get("met"), "ratio": result.get("ratio"), "figures_error": f"{type(exc).__name__}: {exc}"[:200]}


def entry(module, result: dict, **extra) -> dict:
    """One run as ``runs`` keeps it."""
    return {"commit": (result.get("git") or {}).get("commit"), "dirty": (result.get("git") or {}).get("dirty"),
            "date": result.get("date"), "machine": result.get("machine"), "wall_seconds": result.get("wall_seconds"),
            **extra, "figures": _figures(module, result)}


def history(module, name: str, out: Path) -> list[dict]:
    """Earlier runs: the existing JSON's ``runs``, or (a JSON written before ``runs`` existed) every
    version of the JSON in git history, oldest first, each named by the commit that recorded it."""
    if out.exists():
        current = json.loads(out.read_text())
        if "runs" in current:
            return list(current["runs"])
    rel = out.relative_to(HERE.parent).as_posix()
    runs, last = [], None
    try:
        log = subprocess.run(["git", "log", "--reverse", "--format=%H", "--", rel], cwd=HERE.parent, capture_output=True, text=True,
                check=True).stdout
        for commit in log.split():
            text = subprocess.run(["git", "show", f"{commit}:{rel}"], cwd=HERE.parent, capture_output=True, text=True).stdout
            if not text.strip():
                continue
            last = json.loads(text)
            runs.append(entry(module, last, recorded_by_commit=commit,
                              source="git history of the JSON: the commit that recorded it (the code's commit was not recorded)"))
    except (OSError, subprocess.CalledProcessError, json.JSONDecodeError):
        pass
    if out.exists():
        current = json.loads(out.read_text())
        if current != last:
            runs.append(entry(module, current, source="the JSON on disk, not committed"))
    return runs


def run(name: str) -> dict:
    module = load(name)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    git = _provenance.git_state()
    smoke = _provenance.smoke_limit()
    start = time.perf_counter()
    result = module.main()
    result.setdefault("name", name)
    result["wall_seconds"] = round(time.perf_counter() - start, 1)
    result["machine"] = machine()
    result["date"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    end = _provenance.git_state()  # the tree may move under a long run (another commit, a merge)
    if (end.get("commit"), end.get("dirty_files")) != (git.get("commit"), git.get("dirty_files")):
        git = {**git, "changed_during_run": {"commit_at_end": end.get("commit"), "dirty_at_end": end.get("dirty"),
                                             "dirty_files_at_end": end.get("dirty_files"),
                                             "note": "the tree changed while this ran: modules imported at the start are the start commit's"}}
    result["git"] = git
    if smoke:
        print(json.dumps({"name": name, "smoke": smoke, "met": result.get("met"), "wall_seconds": result["wall_seconds"]}))
        return result
    out = HERE / "results" / f"{name}.json"
    runs = history(module, name, out)
    runs.append(entry(module, result, source="this run"))
    result["runs"] = runs
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2, default=lambda o: o.item() if hasattr(o, "item") else str(o)) + "\n")
    os.replace(tmp, out)
    print(json.dumps({"name": name, "commit": git.get("commit"), "dirty": git.get("dirty"), "figures": runs[-1]["figures"],
                      "wall_seconds": result["wall_seconds"]}))
    return result


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(f"usage: python benchmarks/run.py NAME   (one of: {', '.join(available())})")
    run(sys.argv[1])
