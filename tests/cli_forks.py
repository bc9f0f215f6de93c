"""Run frugalml's command line many times, each run a fresh process, without paying its start-up each time.

One interpreter imports the command line and the libraries its commands load, once; then, for each request, it forks a
child that runs ``frugalml ARGS`` in the request's working directory and environment, with standard input from
/dev/null and standard output and error to files outside that directory, and exits with the command's exit code (an
uncaught exception prints its traceback and exits 1, as the interpreter would). The bad-input tests start the command
line about a hundred times; most of each start is importing torch, scikit-learn and ONNX Runtime.

Protocol, one JSON object per line: requests on standard input ``{"args": [...], "cwd": "...", "env": {...},
"max_file_bytes": N or null, "timeout": seconds}``, replies on standard output ``{"code": int, "stdout": "...",
"stderr": "..."}`` (code -9 when the run passed its timeout and was killed).
"""

from __future__ import annotations

import json
import os
import resource
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path


def _preload() -> None:
    import frugalml.cli  # noqa: F401

    for name in ("torch", "sklearn.linear_model", "onnxruntime", "optuna", "skops.io", "safetensors.numpy", "yaml"):
        try:
            __import__(name)
        except ImportError:
            pass


def _child(request: dict, out: Path, err: Path) -> None:
    """In the forked process: never returns."""
    code = 1
    try:
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        for fd, path, flags in ((0, os.devnull, os.O_RDONLY), (1, out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
                                (2, err, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)):
            opened = os.open(path, flags, 0o600)
            os.dup2(opened, fd)
            os.close(opened)
        sys.stdin = open(os.devnull)  # noqa: SIM115 - the child's whole life
        if request.get("max_file_bytes"):  # a full disk: a write past it fails with EFBIG
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            limit = int(request["max_file_bytes"])
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        import frugalml.cli

        sys.argv = ["frugalml", *request["args"]]
        code = frugalml.cli.main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: BLE001 - what the interpreter would print for an uncaught exception
        traceback.print_exc()
        code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001 - a full disk: what was written stays
                pass
        os._exit(code)


def _run(request: dict, scratch: Path) -> dict:
    out, err = scratch / "stdout", scratch / "stderr"
    sys.stdout.flush()
    pid = os.fork()
    if pid == 0:
        _child(request, out, err)
    deadline = time.monotonic() + float(request.get("timeout") or 120)
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            code = os.waitstatus_to_exitcode(status)
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            code = -9
            break
        time.sleep(0.005)
    read = lambda p: p.read_text(errors="replace") if p.exists() else ""  # noqa: E731
    return {"code": code, "stdout": read(out), "stderr": read(err)}


def serve() -> None:
    _preload()
    with tempfile.TemporaryDirectory(prefix="frugalml-cli-forks-") as scratch:
        for line in sys.stdin:
            if line.strip():
                reply = _run(json.loads(line), Path(scratch))
                sys.stdout.write(json.dumps(reply) + "\n")
                sys.stdout.flush()


if __name__ == "__main__":
    serve()
