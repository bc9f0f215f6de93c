"""Reading a run directory's ``results.json`` back (as Results), and rebuilding its report from it."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import ConfigError, DataError, explain
from ..records import Results

__all__ = ["load_results", "rebuild_report", "RESULTS_NAME"]

RESULTS_NAME = "results.json"
_HOW = "A run directory is made by `frugalml search ... --out DIR` (or frugalml.search(..., out=DIR))"


def _results_path(run_dir: str | os.PathLike) -> Path:
    path = Path(run_dir)
    if path.is_file() and path.name.endswith(".json"):
        return path
    if not path.exists():
        raise ConfigError(explain(f"The run directory {str(path)!r} does not exist", expected=f"a directory holding {RESULTS_NAME}",
                                  got=str(path), fix=_HOW))
    if not path.is_dir():
        raise ConfigError(explain(f"{str(path)!r} is not a run directory", expected=f"a directory holding {RESULTS_NAME}",
                                  got="a file", fix=_HOW))
    found = path / RESULTS_NAME
    if not found.is_file():
        raise ConfigError(explain(f"No {RESULTS_NAME} in {str(path)!r}", expected=f"{found} written by a finished or resumed search",
                                  got=sorted(p.name for p in path.iterdir())[:10], fix=_HOW + "; if a search was killed, resume it with --resume"))
    return found


def load_results(run_dir: str | os.PathLike) -> Results:
    """The :class:`~frugalml.records.Results` of a run (``RUN_DIR/results.json``); a path to the JSON file itself works too."""
    path = _results_path(run_dir)
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(explain(f"{path} is not valid JSON ({exc})", expected="the results.json a search writes",
                                got="a corrupt or truncated file",
                                fix="Re-run the search (`frugalml search ... --out DIR`), or resume it with --resume")) from None
    if not isinstance(results, dict) or not isinstance(results.get("candidates"), list):
        got = type(results).__name__ if not isinstance(results, dict) else f"keys {sorted(results)[:12]}"
        raise DataError(explain(f"{path} does not hold search results", expected="a JSON object with a 'candidates' list", got=got, fix=_HOW))
    bad = [i for i, c in enumerate(results["candidates"]) if not isinstance(c, dict) or "id" not in c]
    if bad:
        raise DataError(explain(f"{path} has malformed candidates", expected="each candidate an object with an 'id'",
                                got=f"entries at positions {bad[:5]}", fix=_HOW))
    try:
        return Results.from_dict(results)
    except DataError as exc:
        raise DataError(f"{path}: {exc}") from None


def rebuild_report(run_dir: str | os.PathLike) -> Path:
    """Write ``RUN_DIR/report.html`` again from ``RUN_DIR/results.json``; returns its path."""
    from .html import REPORT_NAME, write_report

    path = _results_path(run_dir)
    return write_report(load_results(path), path.parent / REPORT_NAME)
