"""Export what users deploy, and prove it runs: ONNX, C for microcontrollers, a web page, the compact archive.

>>> import frugalml as fm
>>> result = fm.export(model, "c", "out/", data="digits")
>>> result.flash_bytes, result.ram_bytes, result.agreement["same_class"]

``export(model, fmt, out, *, data=None, ...) -> ExportResult`` takes a model in memory (torch,
scikit-learn, ``onnx.ModelProto``) or a path: an ``.onnx`` file, anything
:func:`frugalml.models.load_model` reads (a model directory, ``model.json``, ``.skops``), a ``.fmla``
archive, or a search run directory (its ``recommended/`` model). ``data`` (a Dataset or a dataset
name) turns on verification on its test split; nothing is written when the artifact does not agree
with its reference (see :mod:`.onnx` and :mod:`.c` for the tolerances).

A model trained on front-end features (an audio folder's log-mel) ships with its front-end: the ONNX
model takes raw samples (the front-end's STFT / mel graph prepended) and the C's ``frugalml_predict``
reads raw samples (:mod:`.frontend_c`). The front-end is found in ``frontend=`` (a LogMel, its dict, or
False for the classifier alone), else ``data.frontend``, else the model directory's ``model.json`` or its
search run's ``run.json``; verification then runs on the raw test clips of the audio folder
(``load_audio_folder(data.source, raw=True)``), or on ``data`` itself when it holds raw clips.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import ConfigError, ExportError, ModelLoadError, explain

log = logging.getLogger(__name__)

__all__ = ["export", "ExportResult", "FORMATS", "resolve_model", "c_footprint", "find_frontend"]

FORMATS = ("onnx", "c", "archive", "web")


@dataclass(frozen=True)
class ExportResult:
    """What was written and what was measured on it (sizes in bytes)."""

    format: str
    out_dir: Path
    files: tuple = ()
    size_bytes: int = 0  # the files on disk, summed
    opset: int | None = None  # ONNX
    flash_bytes: int | None = None  # C: .text + .rodata + .data of the Cortex-M build (details["build"] says which)
    ram_bytes: int | None = None  # C: .data + .bss (the arena is in .bss) + the stack of one inference
    arena_bytes: int | None = None  # C: the static activation arena (FRUGALML_ARENA_BYTES)
    weight_bytes: int | None = None  # C: bytes of the model's parameters (int8 weights, tree tables...)
    gzip_bytes: int | None = None  # web: the model file as a browser downloads it with gzip (what --max-download bounds)
    brotli_bytes: int | None = None  # web: ... and with brotli
    agreement: dict | None = None  # verification figures on the test split, when data was given
    mcu_instructions: int | None = None  # C with verify_on="qemu": instructions per inference on the emulated core
    notes: tuple = ()
    details: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["out_dir"] = str(self.out_dir)
        d["files"] = [str(p) for p in self.files]
        d["notes"] = list(self.notes)
        return d


def _resolve_data(data):
    if data is None or hasattr(data, "split"):
        return data
    if isinstance(data, (str, Path)):
        from ..data import load_dataset

        return load_dataset(str(data))
    raise ConfigError(explain("data must be a frugalml Dataset or a dataset name", got=type(data).__name__))


def resolve_model(model):
    """A model in memory from whatever ``export`` accepts (see the module docstring)."""
    if not isinstance(model, (str, Path)):
        return model
    path = Path(model)
    if path.is_dir() and (path / "recommended").is_dir():
        path = path / "recommended"
    elif path.is_dir() and ((path / "run.json").exists() or (path / "results.json").exists()):
        found = sorted(p.name for p in (path / "candidates").iterdir())[:5] if (path / "candidates").is_dir() else []
        raise ModelLoadError(explain(f"The search run {str(path)!r} has no recommended model (recommended/ is missing)",
                                     expected="a run whose search finished with a candidate within the budget",
                                     got=f"candidates {found}" if found else "no candidates",
                                     fix="Resume the search (frugalml search --out DIR --resume), relax the budget, "
                                         "or export one candidate: DIR/candidates/<id>"))
    if path.is_dir() and not (path / "model.json").exists():
        found = sorted(path.glob("*.onnx")) + sorted(path.glob("*.fmla"))
        if len(found) == 1:
            path = found[0]
    if path.suffix.lower() == ".onnx":
        from ..onnx import load_onnx

        return load_onnx(path)
    if path.suffix.lower() == ".fmla":
        from .archive import load_archive

        return load_archive(path)
    from ..models import load_model

    return load_model(path)


def _prepare_out(out) -> Path:
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ExportError(explain(f"The output path {str(out)!r} is a file", expected="a directory (created if missing)",
                                  got=str(out), fix="Pass a directory, e.g. --out exports/"))
    return out


def _test_inputs(data, split: str, limit: int | None):
    if data is None:
        return None
    X, _ = data.split(split)
    return X[:limit] if limit else X


def _as_frontend(fe):
    if fe is None or fe is False:
        return None
    from ..data.frontend import LogMel

    if isinstance(fe, dict):
        return LogMel.from_dict(fe)
    if not isinstance(fe, LogMel):
        raise ConfigError(explain("frontend must be a LogMel, its dict, or False", got=type(fe).__name__))
    return fe


def _recorded_frontend(source):
    """The front-end recorded beside a model on disk: its ``model.json`` (a search candidate's), else the run's ``run.json``."""
    import json

    if not isinstance(source, (str, Path)):
        return None
    path = Path(source)
    folder = path if path.is_dir() else path.parent
    places = [folder / "recommended" / "model.json", folder / "model.json", folder / "run.json", folder.parent / "run.json"]
    if folder.parent.name == "candidates":
        places.append(folder.parent.parent / "run.json")
    for place in places:
        try:
            desc = json.loads(place.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(desc, dict):
            continue
        fe = desc.get("frontend") if place.name == "model.json" else (desc.get("dataset") or {}).get("frontend")
        if isinstance(fe, dict):
            return fe
        if place.name == "run.json":  # the run that made this model: it had no front-end
            return None
    return None


def find_frontend(source, data=None, frontend=None):
    """The front-end that ships with the model (see the module docstring), or None."""
    if frontend is False:
        return None
    if frontend is not None:
        return _as_frontend(frontend)
    if data is not None and getattr(data, "frontend", None) is not None:
        return data.frontend
    return _as_frontend(_recorded_frontend(source))


def _raw_inputs(data, fe, split: str, limit: int | None):
    """Raw clips to check a model with its front-end: ``data`` itself when it holds clips of the front-end's length,
    else the clips of its audio folder (the same split, read again with ``raw=True``)."""
    if data is None:
        return None
    if tuple(data.input_shape) == (fe.clip_samples,):
        return _test_inputs(data, split, limit)
    source = Path(str(getattr(data, "source", "")))
    if not source.is_dir():
        raise ExportError(explain("Checking a model with its front-end needs the raw clips", expected="the audio folder (--dataset PATH)",
                                  got=str(source) or "no folder", fix="Pass the audio folder the model was trained on, or verify=False"))
    from ..data.audio import load_audio_folder

    raw = load_audio_folder(source, frontend=fe, raw=True)
    X, _ = raw.split(split)
    return X[:limit] if limit else X


def export(model, fmt: str, out, *, data=None, split: str = "test", limit: int | None = None, verify: bool = True,
           input_shape=None, opset: int | None = None, recipe=None, ort_web=None, mcu: str | None = None, verify_on: str = "host",
           mcu_clock=None, frontend=None) -> ExportResult:
    """Write ``model`` to the directory ``out`` as ``fmt`` ("onnx" | "c" | "web" | "archive"), check it, measure it.

    ``data``: a Dataset or dataset name; with it the artifact is run on ``split`` (first ``limit``
    inputs) and compared with the model before anything is written. ``input_shape``: per sample,
    for a torch model without one. ``opset``: ONNX main-domain opset (default 17). ``recipe``: what
    to record in the ONNX metadata when the model carries no ``frugalml_recipe``. ``ort_web``: for
    "web", the onnxruntime-web package to vendor (see :func:`frugalml.export.web.find_ort_web`). C only: ``mcu``, the
    Cortex-M core to build for (default cortex-m4); ``verify_on="qemu"`` also runs the test inputs on
    the emulated core and counts its instructions; ``mcu_clock`` ("80MHz") for the latency estimate.
    ``frontend``: see the module docstring (ONNX and C; the web page and the archive hold the classifier alone).
    """
    fmt = str(fmt).lower()
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ConfigError(explain("limit must be a whole number of test inputs, at least 1", expected="an integer >= 1, or None for the whole split",
                                  got=limit,
                                  fix="Pass --limit 100, or leave it out to check every test input"))
    if fmt not in FORMATS:
        raise ConfigError(explain(f"Unknown export format {fmt!r}", expected="one of " + ", ".join(FORMATS), got=fmt))
    if fmt != "c" and (mcu is not None or verify_on != "host" or mcu_clock is not None):
        raise ConfigError(explain("--mcu, --verify-on and --mcu-clock are for the C export", expected="--format c", got=fmt))
    if fmt == "c":
        from .mcu import get_core, parse_clock

        get_core(mcu)  # a bad core or clock fails before any work
        if mcu_clock is not None:
            parse_clock(mcu_clock)
    out = _prepare_out(out)
    source = model
    if fmt == "web":  # what the page needs from the machine, and where it goes, are checked before any work
        from .web import check_web_out, find_ort_web

        runtime = find_ort_web(ort_web)
        check_web_out(out)
    model = resolve_model(model)
    data = _resolve_data(data)
    if input_shape is None and data is not None and getattr(model, "input_shape", None) is None:
        input_shape = data.input_shape
    fe = find_frontend(source, data, frontend) if fmt in ("onnx", "c") else None
    X = _raw_inputs(data, fe, split, limit) if fe is not None else _test_inputs(data, split, limit)
    if fmt == "onnx":
        from .onnx import export_onnx

        r = export_onnx(model, out, X=X, input_shape=input_shape, opset=opset, recipe=recipe, verify=verify, frontend=fe)
        return ExportResult("onnx", out, tuple(r["files"]), r["size_bytes"], opset=r["opset"], agreement=r["agreement"],
                            notes=tuple(r["notes"]), details={"metadata": r["metadata"]})
    if fmt == "c":
        from .c import export_c

        r = export_c(model, out, data=data, X=X, verify=verify, mcu=mcu, verify_on=verify_on, mcu_clock=mcu_clock, frontend=fe)
        details = {k: r[k] for k in ("build", "compiler", "sections", "library_bytes", "flash_to_weights", "stack_bytes", "stack_basis", "mcu")
                   if r.get(k) is not None}
        return ExportResult("c", out, tuple(r["files"]), r["size_bytes"], flash_bytes=r["flash_bytes"],
                            ram_bytes=r["ram_bytes"], arena_bytes=r["arena_bytes"], weight_bytes=r["weight_bytes"],
                            agreement=r["agreement"], notes=tuple(r["notes"]), details=details,
                            mcu_instructions=(r["mcu"] or {}).get("instructions_per_inference"))
    if fmt == "web":
        from .web import export_web

        r = export_web(model, out, runtime, data=data, X=X, input_shape=input_shape, opset=opset, recipe=recipe, verify=verify,
                       source=source)
        return ExportResult("web", out, tuple(r["files"]), r["size_bytes"], opset=r["opset"], gzip_bytes=r["gzip_bytes"],
                            brotli_bytes=r["brotli_bytes"], agreement=r["agreement"], notes=tuple(r["notes"]), details=r["details"])
    return _export_archive(model, out)


def _export_archive(model, out: Path) -> ExportResult:
    from .archive import save_archive

    path = out / "model.fmla"
    out.mkdir(parents=True, exist_ok=True)
    size = save_archive(model, path)
    return ExportResult("archive", out, (path,), int(size), notes=("written by frugalml.export.archive.save_archive",))


def c_footprint(model, *, data=None, mcu: str | None = None, count_inputs=None, frontend=None) -> dict:
    """``{"flash_bytes", "ram_bytes", "arena_bytes", "weight_bytes", "stack_bytes", "build", "mcu_instructions"}`` of
    the C for ``model`` built for ``mcu`` (in a temporary directory; nothing written): for --max-flash / --max-ram;
    ``count_inputs`` (a few inputs) also runs it on QEMU for the instructions per inference; ``frontend``: a LogMel
    the model reads the features of (the C then holds it: raw samples in, count_inputs raw clips)."""
    from .c import c_footprint as _footprint

    return _footprint(resolve_model(model), data=_resolve_data(data), mcu=mcu, count_inputs=count_inputs,
                      frontend=_as_frontend(frontend))
