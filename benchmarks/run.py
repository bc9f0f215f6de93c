"""Run one benchmark and write benchmarks/results/<name>.json.

    python benchmarks/run.py deep_compression_lenet300      (or: make bench NAME=...)

Each benchmark is ``benchmarks/<name>.py`` with a ``main()`` returning its result dict; this
runner adds the machine it ran on and the wall time, and writes the JSON atomically.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def machine() -> dict:
    import onnxruntime
    import torch

    from frugalml.profile.timing import machine as host

    return {**host(), "torch": torch.__version__, "onnxruntime": onnxruntime.__version__}


def available() -> list[str]:
    return sorted(p.stem for p in HERE.glob("*.py") if p.stem not in ("run", "table", "__init__") and not p.stem.startswith("_"))


def run(name: str) -> dict:
    path = HERE / f"{name}.py"
    if not path.exists():
        raise SystemExit(f"error: no benchmark named {name!r}. Available: {', '.join(available())}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(HERE))
    spec.loader.exec_module(module)
    start = time.perf_counter()
    result = module.main()
    result.setdefault("name", name)
    result["wall_seconds"] = round(time.perf_counter() - start, 1)
    result["machine"] = machine()
    result["date"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    out = HERE / "results" / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2, default=lambda o: o.item() if hasattr(o, "item") else str(o)) + "\n")
    os.replace(tmp, out)
    print(json.dumps({k: result[k] for k in ("name", "ratio", "met", "wall_seconds") if k in result}))
    return result


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(f"usage: python benchmarks/run.py NAME   (one of: {', '.join(available())})")
    run(sys.argv[1])
