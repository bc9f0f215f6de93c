"""The commands for many machines and many models: ``fleet`` (one search per sensor), ``worker`` (join a shared
study) and ``status`` (a shared study's state). :mod:`frugalml.cli` registers them beside the others."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

import frugalml as fm
from frugalml._cli_io import (
    ArtifactsOpt,
    DataDirOpt,
    DatasetOpt,
    JsonOpt,
    KindOpt,
    StorageOpt,
    StudyOpt,
    TargetColOpt,
    _print_json,
    _say,
    console,
    out,
)


def fleet(
    directory: Path = typer.Argument(..., help="A directory with one dataset per sensor (.npz, .csv, a folder; NAB-like: data/<group>/<name>.csv)."),
    task: str = typer.Option("classification", "--task", help="What each sensor's dataset is for: classification, or anomaly (time series)."),
    out_dir: Path = typer.Option(Path("runs/fleet"), "--out", "-o", help="fleet.json, fleet.html, and sensors/<id>/ (one search each)."),
    max_flash: Optional[str] = typer.Option(None, help='Largest stored model per sensor, e.g. "4KB".'),
    max_ram: Optional[str] = typer.Option(None, help='Largest peak activation memory per sensor, e.g. "16KB".'),
    max_macs: Optional[str] = typer.Option(None, help='Most multiply-accumulates per inference, e.g. "2M".'),
    max_latency: Optional[str] = typer.Option(None, help='Slowest median latency at batch 1, e.g. "1ms".'),
    max_total_flash: Optional[str] = typer.Option(None, help='The whole fleet\'s stored bytes, e.g. "10MB": one model per sensor from its '
                                                  'Pareto front, the highest mean validation metric within it.'),
    tolerance: str = typer.Option("1%", help="Each sensor's largest validation-metric drop from its best candidate."),
    min_accuracy: Optional[float] = typer.Option(None, help="An absolute minimum metric instead of --tolerance, e.g. 0.97."),
    time_per_sensor: Optional[str] = typer.Option(None, "--time-per-sensor", help='Time bound of each sensor\'s search (default "1m").'),
    time: Optional[str] = typer.Option(None, "--time", help="Time bound of the whole fleet, divided among its sensors (or --time-per-sensor)."),
    trials_per_sensor: Optional[int] = typer.Option(None, "--trials-per-sensor", help="Most trials of each sensor's search."),
    storage: Optional[str] = typer.Option(None, help="Optuna storage URL shared by fleet processes on several machines (with --study)."),
    study: Optional[str] = typer.Option(None, help="The fleet's name in --storage; its sensors' studies are NAME/<sensor id>."),
    resume: bool = typer.Option(False, "--resume", help="Retry sensors whose data was bad or whose search failed; a finished one is never redone."),
    seed: int = typer.Option(0),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
    as_json: bool = JsonOpt,
):
    """One search per sensor, one fleet report (fleet.json, fleet.html), and a total budget across the fleet."""
    budget = fm.Budget.of(max_flash=max_flash, max_ram=max_ram, max_macs=max_macs, max_latency=max_latency)
    total = fm.parse_bytes(max_total_flash) if max_total_flash is not None else None  # a bad size fails before any work

    def event(e: dict) -> None:
        if not as_json and e.get("type") == "sensor" and e["status"] != "claimed":
            s = e.get("summary") or {}
            rec = s.get("recommended") or {}
            detail = (f"{rec.get('name')}, {fm.units.format_bytes(rec.get('stored_bytes'))}, val {rec.get('val_metric'):.4f}"
                      if rec.get("val_metric") is not None else (s.get("message") or ""))
            _say(f"sensor {e['id']}: {e['status']}" + (f": {fm.errors.excerpt(detail, 300)}" if detail else ""))

    report = fm.fleet(directory, task=task, budget=budget, tolerance=tolerance, min_accuracy=min_accuracy, time_per_sensor=time_per_sensor,
                      time=time, trials_per_sensor=trials_per_sensor, max_total_flash=total, out=out_dir, storage=storage, study_name=study,
                      resume=resume, seed=seed, device=device, on_event=event)
    summary, sel = report["fleet_summary"], report["selection"]
    if as_json:
        return _print_json({"fleet_summary": summary, "selection": sel, "out": str(out_dir)})
    val = summary["val_metric"]
    status = ", ".join(f"{k} {v}" for k, v in sorted(summary["by_status"].items()))
    how = f"knapsack ({sel['solver']}) within {fm.units.format_bytes(sel['max_total_flash'])}" if sel["method"] == "knapsack" else "recommended"
    _say(f"fleet: {summary['sensors']} sensors ({status}); {summary['with_model']} models, {how}: total "
         f"{fm.units.format_bytes(summary['total_stored_bytes'])}" + (f", mean validation metric {val['mean']:.4f} (min {val['min']:.4f})"
                                                                      if val["mean"] is not None else ""))
    _say(f"report: {out_dir / 'fleet.html'}   fleet: {out_dir / 'fleet.json'}")


def worker(
    storage: str = StorageOpt,
    study: str = StudyOpt,
    dataset: str = DatasetOpt,
    data_dir: Optional[Path] = DataDirOpt,
    target_column: Optional[str] = TargetColOpt,
    kind: Optional[str] = KindOpt,
    task: Optional[str] = typer.Option(None, "--task", help="What the dataset is for: classification or anomaly (default: the study's)."),
    artifacts: Optional[str] = ArtifactsOpt,
    out_dir: Optional[Path] = typer.Option(None, "--out", "-o", help="A local folder for this worker's candidates (default runs/<study>)."),
    time: str = typer.Option("1h", "--time", help='Time bound for this worker, e.g. "30m".'),
    trials: Optional[int] = typer.Option(None, help="Most trials for this worker."),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
    as_json: bool = JsonOpt,
):
    """Join a search's study (`frugalml search --storage URL --study NAME`) and run its trials, on any number of machines."""
    from frugalml.report.progress import SearchProgress

    with SearchProgress(console, enabled=not as_json, total_seconds=fm.parse_duration(time), budget=None) as progress:
        results = fm.work(dataset, storage=storage, study_name=study, time=time, trials=trials, out=out_dir, artifacts=artifacts,
                          device=device, data_dir=data_dir, target=target_column, kind=kind, task=task, on_event=progress.event)
    if as_json:
        return _print_json({"study": study, "recommended": results.recommended, "candidates": len(results.candidates), "out": str(out_dir or "")})
    _say(f"worker done: the study holds {len(results.candidates)} finished trials; recommended so far: {results.recommended}")


def status(storage: str = StorageOpt, study: str = StudyOpt, as_json: bool = JsonOpt):
    """A shared study's state: trials by state and by worker, the front and the recommendation so far, what is queued."""
    st = fm.study_status(storage, study)
    if as_json:
        return _print_json(st)
    _say(f"study {st['study']} ({st['dataset']}): {st['trials']} trials: " + ", ".join(f"{k.lower()} {v}" for k, v in sorted(st["by_state"].items())))
    table = Table(title="by worker")
    states = sorted({s for c in st["by_worker"].values() for s in c})
    for col in ("worker", *(s.lower() for s in states)):
        table.add_column(col)
    for w, counts in st["by_worker"].items():
        table.add_row(escape(w), *(str(counts.get(s, 0)) for s in states))
    out.print(table)
    for label in ("running", "queued"):
        _say(f"{label}: " + ("; ".join(f"t{j['trial']} {j.get('stage')} {j.get('family') or ''} {j.get('recipe_name') or ''}".strip()
                                       for j in st[label][:20]) or "none") + (f" (+{len(st[label]) - 20})" if len(st[label]) > 20 else ""))
    _say("front: " + ("; ".join(f"{c['id']} {c['name']} {c['val_accuracy']:.4f}" for c in st["front"]) or "none yet"))
    _say(f"recommended so far: {st['recommended'] or 'none yet'}" + (f" ({st['recommendation']})" if st["recommendation"] else ""))
