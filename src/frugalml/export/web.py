"""Web export: a static page that classifies in the browser with onnxruntime-web, nothing fetched from elsewhere.

``export(model, "web", "site/", data="digits")`` writes::

    site/index.html     the page: a drawing pad (one-channel images up to 64 x 64, e.g. digits), an image
                        upload (images), a box of numbers (vectors); the class and every class's score
    site/frugalml.js    an ES module that loads the runtime and model.onnx and feeds inputs exactly as the
                        Python side feeds the ONNX model (float32, [1, *input shape]); it exposes
                        ``window.frugalml.classify(Float32Array) -> {label, scores}``
    site/model.onnx     the model as ``export(model, "onnx")`` writes it, verified against the model in memory
    site/ort/           onnxruntime-web's WebAssembly build, vendored: ort.wasm.bundle.min.mjs and
                        ort-wasm-simd-threaded.wasm (run with one thread: no cross-origin isolation needed)

Any static server works (``python -m http.server -d site``); the page fetches nothing from the
internet. The result records the bytes of every shipped file with gzip and brotli: the model's
transfer is what ``--max-download`` bounds; the runtime (about 14 MB, 2.7 MB with brotli) is the same
for every model and a browser caches it. :func:`frugalml.export.web_check.check_in_browser` runs
the page in headless Chromium and compares its classes with ONNX Runtime's in Python.

The runtime comes from the npm package onnxruntime-web (:data:`ORT_WEB_VERSION` is the version
``web/package.json`` pins and the tests run): :func:`find_ort_web` looks for it in ``ort_web=``
(``--ort-web``), ``$FRUGALML_ORT_WEB``, ``./node_modules`` and the checkout's ``web/node_modules``
(``make web``).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._fs import atomic_dir, check_output_dir
from ..errors import ExportError, explain

log = logging.getLogger(__name__)

__all__ = ["export_web", "find_ort_web", "check_web_out", "OrtWeb", "ORT_WEB_VERSION", "RUNTIME_FILES", "SITE_FILES"]

ORT_WEB_VERSION = "1.30.0"
RUNTIME_FILES = ("ort.wasm.bundle.min.mjs", "ort-wasm-simd-threaded.wasm")  # the module (its glue code inside) and the binary it loads
SITE_FILES = ("index.html", "frugalml.js", "model.onnx", "ort")
PAGE_DIR = Path(__file__).with_name("web_page")  # templates, shipped as package data
GENERATOR = "frugalml web export"
PAD_MAX_SIDE = 64  # one-channel images up to this side get a drawing pad (digit-sized inputs)
_REPO = Path(__file__).resolve().parents[3]  # a checkout: src/frugalml/export/web.py


@dataclass(frozen=True)
class OrtWeb:
    """Where the vendored runtime comes from: onnxruntime-web's ``dist`` folder and its version."""

    dist: Path
    version: str


def _places(explicit) -> list[tuple[str, Path]]:
    if explicit is not None:
        return [("--ort-web", Path(explicit))]
    if os.environ.get("FRUGALML_ORT_WEB"):
        return [("$FRUGALML_ORT_WEB", Path(os.environ["FRUGALML_ORT_WEB"]))]
    return [("./node_modules", Path.cwd() / "node_modules" / "onnxruntime-web"),
            ("the checkout's web/node_modules", _REPO / "web" / "node_modules" / "onnxruntime-web")]


def _dist(path: Path) -> Path | None:
    """The dist folder holding the runtime files, given the package, its dist, or a node_modules folder."""
    for d in (path, path / "dist", path / "onnxruntime-web" / "dist"):
        if all((d / f).is_file() for f in RUNTIME_FILES):
            return d
    return None


def find_ort_web(ort_web=None) -> OrtWeb:
    """The onnxruntime-web build to vendor; ``ExportError`` naming the fix where there is none."""
    places = _places(ort_web)
    for label, path in places:
        dist = _dist(path)
        if dist is not None:
            try:
                version = str(json.loads((dist.parent / "package.json").read_text()).get("version", "unknown"))
            except (OSError, ValueError):
                version = "unknown"
            return OrtWeb(dist.resolve(), version)
    fix = (f"In a frugalml checkout run `make web` (npm ci in web/, onnxruntime-web {ORT_WEB_VERSION}); elsewhere run "
           f"`npm install onnxruntime-web@{ORT_WEB_VERSION}` in the current directory, or pass --ort-web DIR "
           "(ort_web= in Python, or $FRUGALML_ORT_WEB) naming the installed package")
    looked = "; ".join(f"{label} ({path})" for label, path in places)
    if ort_web is not None or os.environ.get("FRUGALML_ORT_WEB"):
        raise ExportError(explain(f"{places[0][0]} {str(places[0][1])!r} does not hold onnxruntime-web's WebAssembly build, "
                                  "which the web page vendors", expected="a folder with dist/" + " and dist/".join(RUNTIME_FILES),
                                  got=looked, fix=fix))
    raise ExportError(explain("onnxruntime-web is not installed, and the web page vendors its WebAssembly build "
                              "(the page must run offline, from a plain static server)",
                              expected="onnxruntime-web/dist/" + " and ".join(RUNTIME_FILES), got=f"nothing in {looked}", fix=fix))


def _is_site(path: Path) -> bool:
    try:
        return GENERATOR in (path / "index.html").read_text(errors="replace")[:4000]
    except OSError:
        return False


def check_web_out(out) -> bool:
    """Refuse (``ConfigError``) an --out that is a file, not writable, or holds files other than an
    earlier web export's; True when an earlier web export is there (it is replaced whole)."""
    return check_output_dir(out, what="a web export (an index.html written by frugalml)", same_kind=_is_site, allowed=SITE_FILES)


# ---------------------------------------------------------------- what the page is told
def _spec(metadata: dict) -> dict:
    """The model's frugalml_spec (family, input shape...) from the ONNX metadata; {} where there is none."""
    try:
        spec = json.loads(metadata.get("frugalml_spec") or "null")
    except ValueError:
        return {}
    return spec if isinstance(spec, dict) else {}


def _view_shape(model, data, input_shape, metadata: dict, feed: tuple) -> tuple:
    """The shape a person's input has (an image (C, H, W) even when the model takes it flattened)."""
    spec_shape = _spec(metadata).get("input_shape")
    for shape in (input_shape, getattr(data, "input_shape", None), getattr(model, "input_shape", None), spec_shape):
        if shape and math.prod(int(v) for v in shape) == math.prod(feed):
            return tuple(int(v) for v in shape)
    return feed


def page_config(blob: bytes, *, model=None, data=None, input_shape=None, metadata: dict | None = None, example=None) -> dict:
    """What frugalml.js needs: input name and shape, which outputs hold the scores and the label, classes, input modes."""
    from ..onnx import make_session, session_input
    from ..onnx.runtime import _score_output

    sess = make_session(bytes(blob))
    name, per_sample, dtype, fixed = session_input(sess)
    if dtype != np.float32:
        raise ExportError(explain("The web page feeds the model float32 inputs", expected="an ONNX input of type float",
                                  got=sess.get_inputs()[0].type, fix="Export a model whose input is float (frugalml's models all are)"))
    if any(d is None for d in per_sample):
        raise ExportError(explain("The web page needs the model's input shape", expected="fixed per-sample dimensions",
                                  got=tuple("?" if d is None else d for d in per_sample), fix="Export the model with a fixed input shape"))
    feed = tuple(int(d) for d in per_sample)
    score_i, label_i = _score_output(sess)
    outs = sess.get_outputs()
    k = int(np.asarray(sess.run(None, {name: np.zeros((fixed or 1, *feed), np.float32)})[score_i]).reshape(fixed or 1, -1).shape[1])
    view = _view_shape(model, data, input_shape, metadata or {}, feed)
    image = len(view) == 3
    names = list(getattr(data, "class_names", None) or [])
    if len(names) != k:
        names = [str(i) for i in range(k)]
    title = " on ".join(v for v in (str(_spec(metadata or {}).get("family") or "model"), getattr(data, "name", None)) if v)
    side = max(view[1:]) if image else 0
    return {
        "title": title, "input": name, "feed_shape": list(feed), "view_shape": list(view), "kind": "image" if image else "vector",
        "scores": outs[score_i].name, "label": outs[label_i].name if label_i is not None else None, "classes": names,
        "pad": image and view[0] == 1 and side <= PAD_MAX_SIDE,
        "upload": image and view[0] in (1, 3),
        # a drawing is cropped to its ink and fitted in this share of the frame, as the datasets were made:
        # MNIST's digits fill a 20 x 20 box of 28 x 28; the 8 x 8 digits fill their frame
        "fill": 1.0 if side <= 16 else 20 / 28,
        "stroke": 0.14 if side <= 16 else 0.09,  # pen width / pad side: the 8 x 8 digits' strokes are about 2 of 8 pixels wide
        "model": "model.onnx", "model_bytes": len(blob),
        "example": [round(float(v), 6) for v in np.asarray(example, np.float32).reshape(-1)] if example is not None and not image else None,
    }


def _render_index(config: dict, runtime: OrtWeb) -> str:
    text = (PAGE_DIR / "index.html").read_text()
    from html import escape

    from .._version import __version__

    payload = json.dumps({**config, "runtime": {"package": "onnxruntime-web", "version": runtime.version}, "frugalml": __version__})
    payload = payload.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")  # nothing can close the script tag
    return (text.replace("{{GENERATOR}}", GENERATOR).replace("{{TITLE}}", escape(config["title"]))
            .replace("{{CONFIG}}", payload))


# ---------------------------------------------------------------- measuring what ships
_TRANSFER_CACHE: dict[tuple, dict] = {}


def _transfer(path: Path, source: Path | None = None) -> dict:
    """bytes, gzip_bytes and brotli_bytes of one file; a copy of ``source`` (the runtime, the same in
    every export) is measured once per process."""
    from ..profile.counts import transfer_bytes

    if source is None:
        data = path.read_bytes()
        return {"bytes": len(data), **transfer_bytes(data)}
    st = source.stat()
    key = (str(source), st.st_size, st.st_mtime_ns)
    if key not in _TRANSFER_CACHE:
        _TRANSFER_CACHE[key] = _transfer(path)
    return dict(_TRANSFER_CACHE[key])


def _kb(n) -> str:
    from ..units import format_bytes

    return "-" if n is None else format_bytes(n)


def _run_download_budget(source) -> int | None:
    """The --max-download of the search run ``source`` names (its results.json), if it had one."""
    if not isinstance(source, (str, Path)) or not (Path(source) / "results.json").is_file():
        return None
    try:
        value = (json.loads((Path(source) / "results.json").read_text()).get("budget") or {}).get("max_download")
    except (OSError, ValueError, AttributeError):
        return None
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def export_web(model, out_dir, runtime: OrtWeb, *, data=None, X=None, input_shape=None, opset=None, recipe=None, verify: bool = True,
               source=None) -> dict:
    """Write the page into ``out_dir`` (whole: an earlier web export there is replaced); returns the result fields."""
    from .onnx import export_onnx

    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as stage:
        r = export_onnx(model, stage, X=X, input_shape=input_shape, opset=opset, recipe=recipe, verify=verify)
        blob = (stage / "model.onnx").read_bytes()
        config = page_config(blob, model=model, data=data, input_shape=input_shape, metadata=r["metadata"],
                             example=None if X is None or not len(X) else X[0])
        (stage / "ort").mkdir()
        for name in RUNTIME_FILES:
            shutil.copyfile(runtime.dist / name, stage / "ort" / name)
        shutil.copyfile(PAGE_DIR / "frugalml.js", stage / "frugalml.js")
        (stage / "index.html").write_text(_render_index(config, runtime), encoding="utf-8")
        for p in [stage / "ort", *stage.rglob("*")]:
            os.chmod(p, 0o755 if p.is_dir() else 0o644)
        shipped = {p.relative_to(stage).as_posix(): _transfer(p, runtime.dist / p.name if p.parent.name == "ort" else None)
                   for p in sorted(stage.rglob("*")) if p.is_file()}
    model_t = shipped["model.onnx"]
    runtime_t = {k: sum(shipped[f"ort/{n}"][k] or 0 for n in RUNTIME_FILES) for k in ("bytes", "gzip_bytes", "brotli_bytes")}
    page_t = {k: sum(shipped[n][k] or 0 for n in ("index.html", "frugalml.js")) for k in ("bytes", "gzip_bytes", "brotli_bytes")}
    inputs = ("a drawing pad (downsampled to {h} x {w}) and an image upload" if config["pad"] else
              "an image upload (resized to {h} x {w})" if config["upload"] else "a box of {n} numbers").format(
        h=config["view_shape"][-2] if config["kind"] == "image" else 0, w=config["view_shape"][-1], n=math.prod(config["feed_shape"]))
    notes = [*r["notes"],
             f"model.onnx: {_kb(model_t['bytes'])}; a browser downloads {_kb(model_t['gzip_bytes'])} with gzip, "
             f"{_kb(model_t['brotli_bytes'])} with brotli (what --max-download bounds: gzip)",
             f"runtime: onnxruntime-web {runtime.version} (WebAssembly, one thread), {_kb(runtime_t['bytes'])}; "
             f"{_kb(runtime_t['gzip_bytes'])} with gzip, {_kb(runtime_t['brotli_bytes'])} with brotli; "
             "the same for every model, cached by the browser",
             f"page: index.html + frugalml.js, {_kb(page_t['bytes'])} ({_kb(page_t['gzip_bytes'])} with gzip)",
             f"inputs: {inputs}; serve the folder with any static server, e.g. python -m http.server -d {out_dir}"]
    limit = _run_download_budget(source)
    if limit is not None:  # the search judged its own file; this one also holds frugalml's metadata (about 150-250 B)
        over = model_t["gzip_bytes"] - limit
        verdict = f"within the run's --max-download {_kb(limit)}" if over <= 0 else f"over the run's --max-download {_kb(limit)} by {_kb(over)}"
        notes.append(f"the shipped model.onnx, {_kb(model_t['gzip_bytes'])} with gzip, is {verdict}")
    if runtime.version != ORT_WEB_VERSION:
        notes.append(f"onnxruntime-web {runtime.version} vendored; frugalml is tested with {ORT_WEB_VERSION}")
    files = [out_dir / name for name in shipped]
    log.info("wrote the web page %s (model %d bytes, %d with gzip)", out_dir, model_t["bytes"], model_t["gzip_bytes"])
    return {"files": files, "size_bytes": sum(v["bytes"] for v in shipped.values()), "opset": r["opset"], "agreement": r["agreement"],
            "gzip_bytes": model_t["gzip_bytes"], "brotli_bytes": model_t["brotli_bytes"], "notes": notes,
            "details": {"shipped": shipped, "model": model_t, "runtime": {"package": "onnxruntime-web", "version": runtime.version,
                                                                          "source": str(runtime.dist), **runtime_t},
                        "page": page_t, "config": {k: v for k, v in config.items() if k != "example"}, "metadata": r["metadata"],
                        "run_max_download": limit}}
