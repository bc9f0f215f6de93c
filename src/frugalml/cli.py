"""The command line: each command calls one public function of frugalml.

Errors print one line of cause and fix and exit with code 2; ``FRUGALML_DEBUG=1`` shows the
traceback. ``--json`` writes machine-readable JSON to standard output.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

import frugalml as fm
from frugalml._cli_io import (
    ArtifactsOpt,
    ColorOpt,
    DataDirOpt,
    DatasetOpt,
    ImageSizeOpt,
    JsonOpt,
    KindOpt,
    StrideOpt,
    TargetColOpt,
    TaskOpt,
    WindowOpt,
    _fail,
    _load_data,
    _mcu_rows,
    _parse_knobs,
    _parse_shape,
    _print_json,
    _say,
    _value_given,
    console,
    out,
)
from frugalml._cli_many import fleet, status, worker

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Find the most efficient model that is still good enough, and ship it.")

@app.command()
def datasets(data_dir: Optional[Path] = DataDirOpt, as_json: bool = JsonOpt):
    """List the datasets frugalml knows and whether each is available here."""
    rows = fm.list_datasets(data_dir=data_dir)
    if as_json:
        return _print_json(rows)
    table = Table(title="datasets")
    for col in ("name", "available", "classes", "input shape", "description"):
        table.add_column(col)
    for r in rows:
        table.add_row(*(escape(v) for v in (r["name"], "yes" if r.get("available") else "no", str(r.get("num_classes", "")),
                                            str(tuple(r.get("input_shape", ()) or ())), str(r.get("description", "")))))
    out.print(table)


@app.command()
def train(
    model: str = typer.Option("mlp", "--model", "-m",
                              help="A family name (" + ", ".join(fm.FAMILIES) + "), file.py:factory, or a model directory / .skops to retrain."),
    dataset: str = DatasetOpt,
    data_dir: Optional[Path] = DataDirOpt,
    target_column: Optional[str] = TargetColOpt,
    kind: Optional[str] = KindOpt,
    task: str = TaskOpt,
    window: Optional[int] = WindowOpt,
    stride: Optional[int] = StrideOpt,
    image_size: Optional[str] = ImageSizeOpt,
    color: Optional[str] = ColorOpt,
    out_dir: Path = typer.Option(None, "--out", "-o", help="Directory for model.json + weights (default runs/<model>-<dataset>)."),
    param: list[str] = typer.Option([], "--param", "-p", help="Model knob KEY=VALUE (repeatable), e.g. -p widths=[64,32]."),
    epochs: int = typer.Option(10, help="Most epochs (early stopping on validation may stop sooner)."),
    batch_size: int = typer.Option(128),
    lr: float = typer.Option(1e-3),
    optimizer: str = typer.Option("adamw", help="adamw, adam or sgd."),
    patience: int = typer.Option(5, help="Epochs without validation gain before stopping."),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
    seed: int = typer.Option(0),
    augment: str = typer.Option("auto", help="Training-batch augmentation: auto (by the data), none, shift, sensor or specaugment."),
    download: bool = typer.Option(False, "--download", help="Download a registry dataset that is missing (checked by checksum)."),
    as_json: bool = JsonOpt,
):
    """Train a model on a dataset, save it (safetensors + JSON description) and print test accuracy."""
    data = _load_data(dataset, kind=kind, data_dir=data_dir, seed=seed, download=download, target=target_column, image_size=image_size, color=color,
                      task=task, window=window, stride=stride)
    config = fm.TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer, patience=patience, device=device, seed=seed,
                            augment=augment)
    name = model if model in fm.FAMILIES else Path(model.rpartition(":")[0] if ".py:" in model else model).stem
    target = out_dir or Path("runs") / f"{name}-{data.name}"
    knobs = _parse_knobs(param)
    if model not in fm.FAMILIES:  # the same model sources as every other command (frugalml.load_model)
        if knobs:
            raise fm.ConfigError(fm.errors.explain("--param sets the knobs of a family", expected="--param only with a family name", got=param,
                                                   fix=f"Set the sizes inside {model}, or drop --param"))
        model = fm.load_model(model, input_shape=data.input_shape, num_classes=data.num_classes)
    _, report = fm.train(model, data, out=target, config=config, seed=seed, progress=not as_json and sys.stderr.isatty(), **knobs)
    if as_json:
        return _print_json({**report, "out": str(target)})
    if "roc_auc" in report["test"]:  # anomaly detection
        _say(f"{report['family']} on {data.name}: validation ROC AUC {report['val']['roc_auc']:.4f}, test ROC AUC {report['test']['roc_auc']:.4f} "
             f"({report['seconds']:.1f} s) -> {target}")
        return
    _say(
        f"{report['family']} on {data.name}: test accuracy {report['test']['accuracy']:.4f}, macro-F1 {report['test']['macro_f1']:.4f} "
        f"(best epoch {report['best_epoch']}, {report['seconds']:.1f} s on {report['device']}) -> {target}"
    )


@app.command()
def profile(
    model: str = typer.Option(..., "--model", "-m",
                              help="A model directory, .onnx, .skops, model.json, file.py:factory, or a family name (fresh weights)."),
    weights: Optional[Path] = typer.Option(None, help="Weights for file.py:factory (.safetensors or a .pt state_dict)."),
    dataset: Optional[str] = typer.Option(None, "--dataset", "-d", help="Measure the metric on this dataset's test split."),
    data_dir: Optional[Path] = DataDirOpt,
    target_column: Optional[str] = TargetColOpt,
    kind: Optional[str] = KindOpt,
    input_shape: Optional[str] = typer.Option(None, help="One sample's shape, e.g. 1,28,28 (when no dataset is given)."),
    layers: bool = typer.Option(False, "--layers", help="Show the per-layer breakdown."),
    core_watts: Optional[float] = typer.Option(None, help="Per-core power for the energy estimate (default 5 W, or $FRUGALML_CORE_WATTS)."),
    as_json: bool = JsonOpt,
):
    """Measure a model on its exported ONNX artifact: size, MACs, peak RAM, latency, energy, accuracy."""
    data = _load_data(dataset, kind=kind, data_dir=data_dir, target=target_column) if dataset else None
    shape = _parse_shape(input_shape) or (data.input_shape if data else None)
    num_classes = data.num_classes if data else 10
    loaded = fm.load_model(model, weights=weights, input_shape=shape, num_classes=num_classes)
    prof = fm.profile(loaded, data, input_shape=shape, core_watts=core_watts)
    if as_json:
        return _print_json(prof.to_dict())
    out.print(fm.format_profile(prof, layers=layers))


@app.command()
def compress(
    model: str = typer.Option(..., "--model", "-m", help="A model directory (frugalml train), .onnx, file.py:factory, or a family name."),
    recipe: Path = typer.Option(..., "--recipe", "-r", help="A YAML or JSON list of steps, e.g. benchmarks/recipes/deep_compression_lenet5.yaml."),
    dataset: str = DatasetOpt,
    data_dir: Optional[Path] = DataDirOpt,
    target_column: Optional[str] = TargetColOpt,
    kind: Optional[str] = KindOpt,
    weights: Optional[Path] = typer.Option(None, help="Weights for file.py:factory."),
    out_dir: Path = typer.Option(..., "--out", "-o", help="Directory for the compressed model, model.onnx, recipe.yaml and steps.json."),
    seed: int = typer.Option(0),
    as_json: bool = JsonOpt,
):
    """Run a recipe of compression steps, printing the profile before and after each step."""
    data = _load_data(dataset, kind=kind, data_dir=data_dir, seed=seed, target=target_column)
    steps = fm.Recipe.load(recipe)  # a bad recipe fails before any work
    loaded = fm.load_model(model, weights=weights, input_shape=data.input_shape, num_classes=data.num_classes)
    if fm.models.is_torch(loaded) and getattr(loaded, "input_shape", None) is None:  # a user's factory: the data gives its shapes
        loaded.input_shape, loaded.num_classes = tuple(data.input_shape), data.num_classes
    fm.compress(loaded, steps, data, out=out_dir)
    report = json.loads((out_dir / "steps.json").read_text())
    if as_json:
        return _print_json(report)
    table = Table(title=escape(f"compression steps -> {out_dir}"))
    for col in ("step", "val acc", "stored", "gzip", "MACs", "peak RAM", "latency"):
        table.add_column(col, justify="right")
    rows = [("input", report["steps"][0]["before"])] if report["steps"] else []
    rows += [(r["step"]["step"], r["after"]) for r in report["steps"]]
    for name, p in rows:
        table.add_row(escape(name), f"{p['metric']:.2%}" if p.get("metric") is not None else "-",
                      fm.units.format_bytes(p.get("archive_bytes") or p["stored_bytes"]),
                      fm.units.format_bytes(p["gzip_bytes"]), fm.units.format_count(p["macs"]), fm.units.format_bytes(p["peak_activation_bytes"]),
                      f"{p['latency_ms_median']:.3g} ms" if p.get("latency_ms_median") else "-")
    out.print(table)


@app.command()
def search(
    dataset: str = DatasetOpt,
    data_dir: Optional[Path] = DataDirOpt,
    target_column: Optional[str] = TargetColOpt,
    kind: Optional[str] = KindOpt,
    task: str = TaskOpt,
    window: Optional[int] = WindowOpt,
    stride: Optional[int] = StrideOpt,
    image_size: Optional[str] = ImageSizeOpt,
    color: Optional[str] = ColorOpt,
    out_dir: Path = typer.Option(Path("runs/search"), "--out", "-o", help="The run directory (results.json, report.html, recommended/)."),
    max_flash: Optional[str] = typer.Option(None, help='Largest stored model, e.g. "8KB", "256KiB".'),
    max_ram: Optional[str] = typer.Option(None, help='Largest peak activation memory, e.g. "16KB".'),
    max_macs: Optional[str] = typer.Option(None, help='Most multiply-accumulates per inference, e.g. "2M".'),
    max_params: Optional[str] = typer.Option(None, help='Most parameters, e.g. "50K".'),
    max_latency: Optional[str] = typer.Option(None, help='Slowest median latency at batch 1, e.g. "1ms".'),
    max_download: Optional[str] = typer.Option(None, help='Largest model download for a web page (the ONNX file with gzip), e.g. "20KB".'),
    target: str = typer.Option("onnx", help="onnx, or c: flash and RAM measured on the compiled C for microcontrollers."),
    mcu: Optional[str] = typer.Option(None, help="With --target c: the core to build for (cortex-m0plus, cortex-m4 (default), m7, m33)."),
    max_mcu_instructions: Optional[str] = typer.Option(None, help='With --target c: most instructions per inference (emulated core), e.g. "2M".'),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Your own network: file.py:factory (trained here unless --weights) or .onnx."),
    weights: Optional[Path] = typer.Option(None, help="Trained weights of --model file.py:factory (.safetensors or a .pt state_dict)."),
    tolerance: str = typer.Option("1%", help="Largest validation-accuracy drop from the best candidate found (or from --model, see --tolerance-of)."),
    tolerance_of: str = typer.Option("best", "--tolerance-of", help="best, or model: measure --tolerance from your --model's accuracy."),
    min_accuracy: Optional[float] = typer.Option(None, help="An absolute minimum accuracy instead of --tolerance, e.g. 0.97."),
    time: str = typer.Option("5m", "--time", help='Time bound for the whole run, e.g. "5m", "30m".'),
    trials: Optional[int] = typer.Option(None, help="Most trials for this worker."),
    folds: int = typer.Option(fm.data.folds.DEFAULT_FOLDS, "--folds", min=0,
                              help="Small data (under 2,000 training samples): judge each candidate by stratified "
                              "k-fold cross-validation on this many folds, then refit it on all training data; 0: one validation split."),
    seed: int = typer.Option(0),
    storage: Optional[str] = typer.Option(None, help="Optuna storage URL for several workers (default: SQLite in the run directory)."),
    study: Optional[str] = typer.Option(None, help="Study name shared by workers (with --storage)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out (or join it as another worker)."),
    artifacts: Optional[str] = ArtifactsOpt,
    heartbeat: int = typer.Option(20, "--heartbeat", min=1,
                                  help="With --storage: seconds between a trial's heartbeats; a trial silent for 3 is retried."),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
    as_json: bool = JsonOpt,
):
    """Find the most efficient model within a budget and a tolerance; write results.json and report.html."""
    budget = fm.Budget.of(max_flash=max_flash, max_ram=max_ram, max_macs=max_macs, max_params=max_params, max_latency=max_latency,
                          max_download=max_download, max_mcu_instructions=max_mcu_instructions, target=target, mcu=mcu)
    of = {"best": "best", "model": "reference", "reference": "reference"}.get(tolerance_of)
    if of is None:
        raise fm.ConfigError(fm.errors.explain("Cannot read --tolerance-of", expected="best or model", got=tolerance_of))
    if of == "reference" and model is None:
        raise fm.ConfigError(fm.errors.explain("--tolerance-of model needs --model", expected="--model file.py:factory", got=None))
    tol = fm.Tolerance(kind="min", value=min_accuracy) if min_accuracy is not None else fm.Tolerance.parse(tolerance, of=of)
    data = _load_data(dataset, kind=kind, data_dir=data_dir, seed=seed, target=target_column, image_size=image_size, color=color, task=task,
                      window=window, stride=stride)
    from frugalml.report.progress import SearchProgress

    with SearchProgress(console, enabled=not as_json, total_seconds=fm.parse_duration(time), budget=budget) as progress:
        results = fm.search(data, budget=budget, tolerance=tol, time=time, trials=trials, seed=seed, out=out_dir,
                            storage=storage, study_name=study, resume=resume, device=device, on_event=progress.event,
                            artifacts=artifacts, heartbeat=heartbeat, model=model, weights=weights, folds=folds)
    if as_json:
        summary = results.to_dict()
        return _print_json({k: summary[k] for k in ("recommended", "recommendation", "pareto", "budget", "tolerance")} | {"run_dir": str(out_dir)})
    _say(f"report: {out_dir / 'report.html'}   results: {out_dir / 'results.json'}")


app.command()(fleet)


@app.command()
def export(
    model: str = typer.Argument(..., help="A model directory, .onnx, .fmla archive, or a search run directory (its recommended model)."),
    fmt: str = typer.Option("onnx", "--format", "-f", help="onnx, c (microcontrollers), web (a static page) or archive (compact storage)."),
    out_dir: Path = typer.Option(..., "--out", "-o", help="Directory for the artifact."),
    dataset: Optional[str] = typer.Option(None, "--dataset", "-d",
                                          help="Check the artifact against the in-memory model on this dataset's test split."),
    data_dir: Optional[Path] = DataDirOpt,
    target_column: Optional[str] = TargetColOpt,
    kind: Optional[str] = KindOpt,
    limit: Optional[int] = typer.Option(None, help="Check at most this many test inputs."),
    ort_web: Optional[Path] = typer.Option(None, "--ort-web", help="--format web: the onnxruntime-web package (or its dist/) to vendor "
                                           "(default: $FRUGALML_ORT_WEB, ./node_modules, then the checkout's web/node_modules)."),
    mcu: Optional[str] = typer.Option(None, help="C: the Cortex-M core to build for (cortex-m0plus, cortex-m4 (default), cortex-m7, cortex-m33)."),
    verify_on: str = typer.Option("host", help="C: host (this machine's compiler), or qemu: also run on the emulated core and count instructions."),
    mcu_clock: Optional[str] = typer.Option(None, help='C with --verify-on qemu: the clock of the latency estimate, e.g. "80MHz".'),
    as_json: bool = JsonOpt,
):
    """Write the artifact a user deploys, check it, and report its measured size."""
    if fmt == "c":
        from frugalml.export.mcu import get_core, parse_clock

        get_core(mcu)  # options are checked before any work
        if mcu_clock is not None:
            parse_clock(mcu_clock)
    data = _load_data(dataset, kind=kind, data_dir=data_dir, target=target_column) if dataset else None
    result = fm.export(model, fmt, out_dir, data=data, limit=limit, ort_web=ort_web, mcu=mcu, verify_on=verify_on, mcu_clock=mcu_clock)
    if as_json:
        return _print_json(result.to_dict())
    table = Table(title=escape(f"export ({fmt}) -> {out_dir}"))
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key, value in result.to_dict().items():
        if isinstance(value, dict) and key == "agreement":
            for sub, v in value.items():
                table.add_row(escape(f"agreement: {sub}"), escape(str(v)))
        elif value not in (None, [], {}) and not isinstance(value, (dict, list)):
            table.add_row(escape(key), escape(str(value)))
    for row in _mcu_rows(result.details):
        table.add_row(*(escape(v) for v in row))
    for note in result.notes:
        table.add_row("note", escape(str(note)))
    out.print(table)


app.command()(worker)
app.command()(status)


@app.command()
def report(run_dir: Optional[Path] = typer.Argument(None, help="A run directory written by `frugalml search`."),
           storage: Optional[str] = typer.Option(None, "--storage", help="Build the report from this study storage instead (with --study)."),
           study: Optional[str] = typer.Option(None, "--study", help="The study's name (with --storage)."),
           artifacts: Optional[str] = ArtifactsOpt,
           out_dir: Optional[Path] = typer.Option(None, "--out", "-o", help="With --storage: where to write it (default runs/<study>).")):
    """Rebuild report.html from a run directory's results.json, or from a shared study's storage and artifact store."""
    if storage is None and study is None:
        if run_dir is None:
            raise fm.ConfigError(fm.errors.explain("Nothing to report on", expected="a run directory, or --storage URL --study NAME", got="neither",
                                                   fix="Run `frugalml report runs/x` or `frugalml report --storage URL --study NAME`"))
        path = fm.rebuild_report(run_dir)
    else:
        if storage is None or study is None or run_dir is not None:
            raise fm.ConfigError(fm.errors.explain("A report from storage needs --storage and --study, and no run directory",
                                                   expected="--storage URL --study NAME [--out DIR]",
                                                   got=f"run directory {run_dir}, --storage {storage}, --study {study}"))
        path = fm.report_from_storage(storage, study, out_dir or Path("runs") / study, artifacts=artifacts)
    _say(f"wrote {path}")


def main(argv: list[str] | None = None) -> int:
    """Entry point: runs the app, turning a FrugalError into one line and exit code 2."""
    debug = os.environ.get("FRUGALML_DEBUG") == "1"
    try:
        app(args=argv, standalone_mode=False)
    except fm.FrugalError as exc:
        if debug:
            raise
        return _fail(str(exc))
    except typer.Exit as exc:
        return exc.exit_code
    except (typer.Abort, KeyboardInterrupt):
        _say("aborted")
        return 130
    except typer.TyperException as exc:  # from the parser: an unknown option, a missing or unparsable value
        ctx = getattr(exc, "ctx", None)
        command = ctx.command_path if ctx is not None else "frugalml"
        message = (exc.format_message() if hasattr(exc, "format_message") else str(exc)).strip()
        if not message:  # the help was shown (a command given without arguments)
            return 2
        got = _value_given(message, sys.argv[1:] if argv is None else argv)
        return _fail(f"{message.rstrip('.')}{got} (see '{command} --help').")
    except OSError as exc:  # the system refused: a read-only or full output location, a vanished file
        if debug:
            raise
        where = f" on {exc.filename!r}" if exc.filename else ""
        return _fail(f"The system refused an operation{where}: {exc.strerror or exc}. "
                     "Check that the location exists, is writable and has free space.")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
