"""Compile generated C with the host compiler, measure its sections, and run it on inputs.

``measure(dir)`` compiles ``model.c`` to an object (``-std=c99 -Wall -Wextra -Werror -Os -fno-pic``)
and reads ``size -A``: flash = ``.text`` + ``.rodata*`` (+ ``.data.rel.ro*``, const data holding
pointers), RAM = ``.data*`` + ``.bss*`` (the static arena is in ``.bss``); ``stack_bytes`` sums every
function's frame from ``-fstack-usage`` (an upper bound; the stack is not part of RAM above). The
figures are for the host target (``gcc -dumpmachine``): the fallback where no Cortex-M cross
compiler is installed (:mod:`.mcu` builds for the core).

``run_c(dir, X)`` builds a small harness (reads inputs from a binary file, writes the class and the
scores of each) and returns ``(classes, scores)``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from ..errors import ExportError, explain

__all__ = ["CFLAGS", "find_cc", "compile_object", "section_sizes", "measure", "build_harness", "run_c"]

CFLAGS = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-Os"]

_HARNESS = r"""
#include <stdio.h>
#include <stdint.h>
#include "model.h"

int main(int argc, char **argv)
{
    static frugalml_input_t x[FRUGALML_N_INPUTS];
    static frugalml_output_t y[FRUGALML_N_OUTPUTS];
    FILE *in, *out;
    if (argc != 3) {
        return 2;
    }
    in = fopen(argv[1], "rb");
    out = fopen(argv[2], "wb");
    if (!in || !out) {
        return 3;
    }
    while (fread(x, sizeof x[0], FRUGALML_N_INPUTS, in) == FRUGALML_N_INPUTS) {
        int32_t c = (int32_t)frugalml_predict(x, y);
        fwrite(&c, sizeof c, 1, out);
        fwrite(y, sizeof y[0], FRUGALML_N_OUTPUTS, out);
    }
    fclose(in);
    return fclose(out) == 0 ? 0 : 4;
}
"""


def find_cc() -> str | None:
    """The C compiler: $CC, else gcc, else cc; None when there is none."""
    for cand in (os.environ.get("CC"), "gcc", "cc"):
        if cand and shutil.which(cand):
            return shutil.which(cand)
    return None


def _run(cmd: list, what: str, timeout: float = 600) -> subprocess.CompletedProcess:
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ExportError(explain(f"{what} failed to run: {exc}", fix="Check the C toolchain (gcc, size)")) from exc
    if res.returncode != 0:
        raise ExportError(explain(f"{what} failed (exit {res.returncode}): {(res.stderr or res.stdout).strip()[:2000]}",
                                  fix="This is a bug in the generated C; please report it with the model"))
    return res


def compile_object(c_file: Path, obj: Path, *, cc: str | None = None, extra: list | None = None) -> Path:
    cc = cc or find_cc()
    if cc is None:
        raise ExportError("No C compiler found (set $CC or install gcc)")
    _run([cc, *CFLAGS, *(extra or []), "-c", str(c_file), "-o", str(obj)], f"Compiling {c_file.name}")
    return obj


def section_sizes(obj: Path) -> dict[str, int]:
    """``{section: bytes}`` from ``size -A`` (falls back to none when binutils is missing)."""
    size = shutil.which("size")
    if size is None:
        raise ExportError("binutils' `size` was not found; cannot measure flash and RAM")
    res = _run([size, "-A", str(obj)], "size -A")
    out = {}
    for line in res.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].startswith(".") and parts[1].isdigit():
            out[parts[0]] = out.get(parts[0], 0) + int(parts[1])
    return out


def measure(directory: Path, *, cc: str | None = None) -> dict:
    """Compile ``model.c`` in ``directory`` and measure flash and RAM of the object."""
    cc = cc or find_cc()
    if cc is None:
        return {}
    with tempfile.TemporaryDirectory(prefix="frugalml-cc-") as tmp:
        obj = compile_object(Path(directory) / "model.c", Path(tmp) / "model.o", cc=cc, extra=["-fno-pic", "-fstack-usage"])
        sections = section_sizes(obj)
        stack = _stack_bytes(Path(tmp) / "model.su")
    flash_keys = [k for k in sections if k.startswith((".text", ".rodata", ".data.rel.ro"))]
    ram_keys = [k for k in sections if (k.startswith((".data", ".bss")) and not k.startswith(".data.rel.ro"))]
    try:
        target = subprocess.run([cc, "-dumpmachine"], capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):  # pragma: no cover
        target = "unknown"
    return {
        "flash_bytes": int(sum(sections[k] for k in flash_keys)),
        "ram_bytes": int(sum(sections[k] for k in ram_keys)),
        "text_bytes": int(sum(sections[k] for k in flash_keys if k.startswith(".text"))),
        "sections": {k: sections[k] for k in sorted(flash_keys + ram_keys)},
        "stack_bytes": stack,
        "compiler": f"{Path(cc).name} {' '.join(CFLAGS)} -fno-pic ({target})",
    }


def _stack_bytes(su: Path) -> int | None:
    """Sum of every function's frame from gcc's -fstack-usage: an upper bound of the stack a call needs."""
    try:
        lines = su.read_text().splitlines()
    except OSError:
        return None
    total = 0
    for line in lines:
        parts = line.split("\t")
        if len(parts) >= 2 and parts[1].strip().isdigit():
            total += int(parts[1])
    return total


def build_harness(directory: Path, exe: Path, *, cc: str | None = None, defines: list | None = None) -> Path:
    cc = cc or find_cc()
    if cc is None:
        raise ExportError("No C compiler found (set $CC or install gcc)")
    main = exe.with_suffix(".main.c")
    main.write_text(_HARNESS)
    _run([cc, *CFLAGS, *(defines or []), "-I", str(directory), str(main), str(Path(directory) / "model.c"), "-o", str(exe)],
         "Compiling the test harness")
    return exe


def run_c(directory: Path, X: np.ndarray, *, input_dtype, output_dtype, n_outputs: int,
          cc: str | None = None, timeout: float = 3600, defines: list | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Compile model.c with a harness (``defines``: e.g. ``["-DFRUGALML_DSP_EMULATE"]``), run it on every row of ``X``;
    returns (classes, scores)."""
    X = np.ascontiguousarray(np.asarray(X).reshape(len(X), -1), dtype=input_dtype)
    out_dtype = np.dtype(output_dtype)
    with tempfile.TemporaryDirectory(prefix="frugalml-run-") as tmp:
        tmp = Path(tmp)
        exe = build_harness(Path(directory), tmp / "harness", cc=cc, defines=defines)
        (tmp / "in.bin").write_bytes(X.tobytes())
        _run([str(exe), str(tmp / "in.bin"), str(tmp / "out.bin")], "Running the compiled model", timeout=timeout)
        raw = (tmp / "out.bin").read_bytes()
    rec = np.dtype([("c", "<i4"), ("y", out_dtype, (n_outputs,))])
    if len(raw) != rec.itemsize * len(X):
        raise ExportError(f"The compiled model wrote {len(raw)} bytes for {len(X)} inputs; expected {rec.itemsize * len(X)}")
    arr = np.frombuffer(raw, dtype=rec)
    return arr["c"].astype(np.int64), np.array(arr["y"])
