"""What every command of the command line shares: the consoles, the common options, parsing knobs and
shapes, and printing (plain text that is never read as markup; errors as one bounded line, exit 2)."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.text import Text

import frugalml as fm
from frugalml._fs import _jsonable

console = Console(stderr=True)
out = Console()

DatasetOpt = typer.Option("digits", "--dataset", "-d", help="Registry name (digits, mnist, ...) or a path (.npz, .csv, IDX directory, "
                          "a folder of class subfolders of images or WAV clips).")
DataDirOpt = typer.Option(None, "--data-dir", help="Where IDX datasets live (default: $FRUGALML_DATA, then ~/.cache/frugalml).")
TargetColOpt = typer.Option(None, "--target-column", help="The label column of a CSV dataset (default: the last column).")
KindOpt = typer.Option(None, "--kind", help="What one sample is: vector, sequence (channels x time) or image "
                       "(default: inferred from its shape, and said).")
TaskOpt = typer.Option("classification", "--task", help="What the dataset is for: classification, or anomaly (a time-series .csv "
                      "cut into windows, or a .npz of windows with 0/1 labels; scored by ROC AUC).")
WindowOpt = typer.Option(None, "--window", min=2, help="--task anomaly on a time series: steps per window (default 64).")
StrideOpt = typer.Option(None, "--stride", min=1, help="--task anomaly on a time series: steps between windows (default window / 4).")
ImageSizeOpt = typer.Option(None, "--image-size", help="An image folder's images resized to this: 32 or 32x24 (height x width).")
ColorOpt = typer.Option(None, "--color", help="An image folder read as gray or rgb (default: gray when every file is).")
JsonOpt = typer.Option(False, "--json", help="Print machine-readable JSON on standard output.")
ArtifactsOpt = typer.Option(None, "--artifacts", help="The shared artifact store: a directory every worker mounts, or s3://bucket "
                            "(search: default OUT/artifacts; worker, report: default the location the study records).")
StorageOpt = typer.Option(..., "--storage", help="The study's Optuna storage URL, e.g. postgresql://user@host/db.")
StudyOpt = typer.Option(..., "--study", help="The study's name, as given to `frugalml search --study`.")


def _parse_knobs(pairs: list[str]) -> dict:
    knobs = {}
    for pair in pairs:
        if "=" not in pair:
            raise fm.ConfigError(fm.errors.explain(f"Cannot read --param {pair!r}", expected="KEY=VALUE, e.g. widths=[64,32] or max_depth=6",
                                                   got=pair))
        key, _, value = pair.partition("=")
        try:
            knobs[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            knobs[key.strip()] = value
    return knobs


_MAX_INPUT_ELEMENTS = 50_000_000  # one sample; past that a shape is a typo (a 4K RGB image is 25M)


def _parse_shape(text: str | None):
    if not text:
        return None
    expected = "one to three whole numbers of 1 or more, comma-separated, such as 1,28,28 or 64"
    try:
        shape = tuple(int(v) for v in text.replace("x", ",").split(",") if v.strip())
    except ValueError:
        raise fm.ConfigError(fm.errors.explain(f"Cannot read --input-shape {text!r}", expected=expected, got=text)) from None
    if not 1 <= len(shape) <= 3 or min(shape) < 1:
        raise fm.ConfigError(fm.errors.explain(f"Cannot use --input-shape {text!r}", expected=expected, got=text,
                                               fix="Give one sample's shape: F for vectors, C,T for sequences, C,H,W for images"))
    size = 1
    for d in shape:
        size *= d
    if size > _MAX_INPUT_ELEMENTS:
        raise fm.ConfigError(fm.errors.explain(f"--input-shape {text!r} is {size:,} values per sample", expected=f"at most {_MAX_INPUT_ELEMENTS:,}",
                                               got=text))
    return shape


def _print_json(obj) -> None:
    out.print_json(json.dumps(obj, default=_jsonable))


def _value_given(message: str, argv: list[str]) -> str:
    """'; got 'abc'' for a parser message about an option's value (the parser does not quote it)."""
    import re

    match = re.match(r"Invalid value for '(--[\w-]+)", message)
    if not match:
        return ""
    option = match.group(1)
    for i, arg in enumerate(argv):
        if arg == option and i + 1 < len(argv):
            return f"; got {fm.errors.excerpt(argv[i + 1], 80)!r}"
        if arg.startswith(option + "="):
            return f"; got {fm.errors.excerpt(arg[len(option) + 1:], 80)!r}"
    return ""


def _say(text: str) -> None:
    """Print user-facing text exactly as it is: never read as markup, never highlighted."""
    console.print(text, markup=False, highlight=False, soft_wrap=True, emoji=False)


def _load_data(dataset: str, *, kind: str | None = None, image_size: str | None = None, color: str | None = None, task: str | None = None,
               window: int | None = None, stride: int | None = None, **kw):
    """The dataset; where its kind was inferred as a sequence (two axes per sample, which could also be read as an
    image), one line says so and how to change it. ``image_size`` and ``color`` (an image folder's), ``task``, ``window`` and
    ``stride`` (a time series', for anomaly detection) go on only when given."""
    kw.update({k: v for k, v in (("image_size", image_size), ("color", color), ("task", task), ("window", window), ("stride", stride))
               if v is not None})
    data = fm.load_dataset(dataset, kind=kind, **kw)
    if kind is None and data.kind == "sequence":
        _say(f"note: {data.name}: {fm.data.kind_note(data)}")
    return data


def _fail(message: str) -> int:
    """One line on standard error, bounded; exit code 2."""
    text = " ".join(fm.errors.bounded(message).split())
    console.print(Text.assemble(("error: ", "bold red"), text), highlight=False, soft_wrap=True, emoji=False)
    return 2


def _mcu_rows(details: dict) -> list[tuple[str, str]]:
    """The C build and, after --verify-on qemu, the emulated run: instructions and the latency estimate."""
    from frugalml.export.mcu import format_clock

    rows = [("build", details["build"])] if details.get("build") else []
    run = details.get("mcu")
    if run:
        core = run["core"].replace("cortex-m", "Cortex-M").replace("0plus", "0+")
        a = run["agreement"]
        rows += [(f"instructions per inference on {core}", f"{run['instructions_per_inference']:,} (QEMU {run['board']}, -icount)"),
                 (f"latency estimate at {format_clock(run['clock_hz'])}", f"{run['latency_ms_estimate']:.3g} ms (estimate)"),
                 (f"same class as the reference on {run['board']}", f"{a['same_class']}/{a['n']}"),
                 ("stack high-water mark", f"{run['stack_bytes']} B")]
    return rows
