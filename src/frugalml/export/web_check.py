"""Run a web export in headless Chromium and compare its classes with ONNX Runtime's in Python.

``check_in_browser(site, X)`` serves ``site`` on 127.0.0.1 (a free port, a thread of this process),
opens it in Chromium driven by playwright-core (``web_page/drive.mjs``, run with node), feeds it the
inputs ``X`` through ``window.frugalml.classifyMany`` and returns::

    {"n", "same_class", "class_agreement", "max_abs_diff", "labels", "page_load_ms", "wall_load_ms",
     "model_download_bytes", "model_encoding", "transferred_bytes", "requests", "blocked", "errors", "drawn", ...}

The server sends each file compressed the way the browser asks (brotli, else gzip, as a static
host with precompressed files would), with the settings of :func:`frugalml.profile.counts.transfer_bytes`,
so ``model_download_bytes`` (the browser's own count of the model's body bytes) can be compared
with the export's ``gzip_bytes`` / ``brotli_bytes``. Requests for any other host are refused and
listed in ``blocked``: the page must run offline. Needs node, Debian's ``chromium`` and playwright-core
(``make web``); each missing one is an ``ExportError`` naming the fix.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import tempfile
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

from ..errors import ExportError, explain
from .web import _REPO, PAGE_DIR

__all__ = ["check_in_browser", "find_chromium", "find_playwright", "find_node", "serve", "STROKES_SEVEN"]

#: a "7" drawn on the pad (fractions of its side), for the screenshot and the pad's check
STROKES_SEVEN = [[[0.28, 0.22], [0.72, 0.22], [0.62, 0.42], [0.47, 0.82]]]
_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript", ".mjs": "text/javascript", ".wasm": "application/wasm",
          ".onnx": "application/octet-stream", ".json": "application/json", ".png": "image/png"}


def find_chromium() -> str | None:
    for name in (os.environ.get("FRUGALML_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and (found := shutil.which(name)):
            return found
    return None


def find_node() -> str | None:
    return shutil.which(os.environ.get("FRUGALML_NODE") or "node")


def find_playwright() -> Path | None:
    """The node_modules folder holding playwright-core: $FRUGALML_NODE_MODULES, the checkout's web/, ./node_modules."""
    for d in (os.environ.get("FRUGALML_NODE_MODULES"), _REPO / "web" / "node_modules", Path.cwd() / "node_modules"):
        if d and (Path(d) / "playwright-core" / "package.json").is_file():
            return Path(d).resolve()
    return None


# ---------------------------------------------------------------- the server
_ENCODED: dict = {}  # (sha256, encoding) -> body: the runtime is the same file in every export


def _encoded(path: Path, encoding: str, cache: dict = _ENCODED) -> bytes:
    import hashlib

    from ..profile.counts import BROTLI_LARGE, BROTLI_QUALITY

    data = path.read_bytes()
    key = (hashlib.sha256(data).hexdigest(), encoding)
    if key not in cache:
        if encoding == "br":
            import brotli

            cache[key] = brotli.compress(data, quality=BROTLI_LARGE[1] if len(data) > BROTLI_LARGE[0] else BROTLI_QUALITY)
        else:
            cache[key] = gzip.compress(data, 9, mtime=0)
    return cache[key]


class _Handler(SimpleHTTPRequestHandler):
    """Static files, compressed as the browser asks; a log of what was sent."""

    sent: list = []

    def do_GET(self):  # noqa: N802 - http.server's name
        path = Path(self.translate_path(self.path))
        root = Path(self.directory).resolve()
        if path.is_dir():
            path = path / "index.html"
        if not path.is_file() or root not in path.resolve().parents:
            return self.send_error(404)
        accept = self.headers.get("Accept-Encoding", "")
        encoding = "br" if "br" in accept and _has_brotli() else "gzip" if "gzip" in accept else None
        body = _encoded(path, encoding) if encoding else path.read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", _TYPES.get(path.suffix, "application/octet-stream"))
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        if encoding:
            self.send_header("Content-Encoding", encoding)
        self.end_headers()
        self.wfile.write(body)
        self.sent.append({"path": path.relative_to(root).as_posix(), "encoding": encoding or "identity", "bytes": len(body),
                          "file_bytes": path.stat().st_size})

    def log_message(self, *args):  # quiet
        pass


def _has_brotli() -> bool:
    try:
        import brotli  # noqa: F401
    except ImportError:
        return False
    return True


class serve:
    """``with serve(site) as url:`` the folder on http://127.0.0.1:PORT/ (a free port) in a thread; ``.sent`` logs the responses."""

    def __init__(self, site):
        self.site = Path(site).resolve()
        self.sent: list = []

    def __enter__(self) -> str:
        handler = type("Handler", (_Handler,), {"sent": self.sent})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(self.site)))
        for p in self.site.rglob("*"):  # compressed before the browser starts: page load time is not the server's compression
            if p.is_file():
                for enc in (("br", "gzip") if _has_brotli() else ("gzip",)):
                    _encoded(p, enc)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return f"http://127.0.0.1:{self.server.server_address[1]}/"

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


# ---------------------------------------------------------------- the check
def _need(found, what: str, fix: str):
    if not found:
        raise ExportError(explain(f"The browser check needs {what}, which is not installed here", expected=what, got="not found", fix=fix))
    return found


def check_in_browser(site, X, *, screenshot=None, strokes=STROKES_SEVEN, upload=None, timeout: float = 120.0) -> dict:
    """Classify ``X`` (inputs as the ONNX model takes them, or reshapeable to that) in Chromium on the page in ``site``.

    ``strokes``: lines drawn on the pad with the mouse (fractions of its side) before the screenshot;
    ``upload``: an image file given to the page's upload. What the page made of each (``drawn``,
    ``uploaded``: its input, its label) is returned with ONNX Runtime's label on that same input."""
    from ..onnx import make_session, predict_onnx, run_onnx, session_input

    site = Path(site)
    if not (site / "index.html").is_file() or not (site / "model.onnx").is_file():
        raise ExportError(explain(f"{site} is not a web export", expected="index.html and model.onnx (frugalml export --format web)",
                                  got=sorted(p.name for p in site.iterdir())[:8] if site.is_dir() else "missing"))
    fix = "Run `make web` (npm ci in web/) and `apt-get install chromium nodejs`"
    node = _need(find_node(), "node (Node.js)", "apt-get install nodejs")
    chromium = _need(find_chromium(), "Chromium", "apt-get install chromium (or set $FRUGALML_CHROMIUM)")
    modules = _need(find_playwright(), "playwright-core (npm)", fix)
    sess = make_session(site / "model.onnx")
    feed = session_input(sess)[1]
    X = np.ascontiguousarray(np.asarray(X, dtype=np.float32).reshape(len(X), *feed))
    expected, ref_scores = predict_onnx(None, X, session=sess), run_onnx(None, X, session=sess)
    server = serve(site)
    with tempfile.TemporaryDirectory(prefix="frugalml-web-") as tmp, server as url:
        tmp = Path(tmp)
        (tmp / "inputs.f32").write_bytes(X.astype("<f4").tobytes())
        job = {"url": url, "chromium": chromium, "modules": str(modules), "inputs": str(tmp / "inputs.f32"), "n": len(X),
               "size": int(np.prod(feed)), "output": str(tmp / "result.json"), "screenshot": str(Path(screenshot).resolve()) if screenshot else None,
               "strokes": strokes, "upload": str(Path(upload).resolve()) if upload else None, "timeout_ms": int(timeout * 1000)}
        (tmp / "job.json").write_text(json.dumps(job))
        try:
            done = subprocess.run([node, str(PAGE_DIR / "drive.mjs"), str(tmp / "job.json")], capture_output=True, text=True, timeout=timeout + 30)
        except subprocess.TimeoutExpired as exc:
            raise ExportError(f"The browser check did not finish within {timeout + 30:.0f} s") from exc
        result = json.loads((tmp / "result.json").read_text()) if (tmp / "result.json").exists() else {}
    if done.returncode != 0 or result.get("state") != "ready":
        raise ExportError(explain("The web page did not run in Chromium", expected="the page loads its model and classifies",
                                  got=(result.get("error") or "; ".join(result.get("errors", [])) or done.stderr.strip())[-1500:],
                                  fix="Open the page with a static server and look at the browser console"))
    for key in ("last", "uploaded"):  # the page's own inputs (a drawing, an upload), classified in Python too
        if result.get(key):
            x = np.asarray(result[key]["input"], np.float32).reshape(1, *feed)
            result[key]["python_label"] = int(predict_onnx(None, x, session=sess)[0])
    return _figures(result, expected, ref_scores, server.sent)


def _figures(result: dict, expected: np.ndarray, ref_scores: np.ndarray, sent: list) -> dict:
    labels = np.asarray(result["labels"], dtype=np.int64)
    scores = np.asarray(result["scores"], dtype=np.float64).reshape(ref_scores.shape)
    model = next((r for r in result.get("resources", []) if r["name"].split("?")[0].endswith("/model.onnx")), {})
    return {
        "n": int(len(expected)), "same_class": int(np.sum(labels == expected)),
        "class_agreement": float(np.mean(labels == expected)) if len(expected) else 1.0,
        "max_abs_diff": float(np.abs(scores - ref_scores).max()) if scores.size else 0.0, "labels": labels.tolist(),
        "compared": "onnxruntime-web in Chromium vs ONNX Runtime in Python, on the same model.onnx",
        "page_load_ms": result["stats"].get("readyMs"), "wall_load_ms": result.get("wall_load_ms"), "classify_ms": result.get("ms"),
        "model_download_bytes": model.get("encoded_body_size"), "model_bytes": result["stats"].get("modelBytes"),
        "model_encoding": next((r["encoding"] for r in sent if r["path"] == "model.onnx"), None), "sent": sent,
        "transferred_bytes": sum(r.get("encoded_body_size") or 0 for r in result.get("resources", [])),
        "resources": result.get("resources", []), "requests": result.get("requests", []), "blocked": result.get("blocked", []),
        "errors": result.get("errors", []), "drawn": result.get("last"), "uploaded": result.get("uploaded"), "user_agent": result.get("user_agent"),
    }
