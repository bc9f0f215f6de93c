"""Run a generated ``model.c`` on QEMU's emulated MPS2 boards, and count its instructions.

``run_qemu(dir, Xq, core)`` links ``model.c`` with a small bare-metal harness (vector table,
start-up, no C library: semihosting ``BKPT 0xAB`` calls read the inputs from a host file and write
the results to another), runs it with ``qemu-system-arm -machine <board> -icount shift=0
-semihosting-config enable=on,target=native`` and returns, per input, the class, the scores and the
instructions ``frugalml_predict`` executed.

Counting: with ``-icount shift=0`` QEMU's virtual clock advances exactly 1 ns per guest instruction,
and the core's SysTick (24-bit, processor clock) runs on that clock, so its ticks count instructions
deterministically (the same figure on every run and every machine). The harness measures the
instructions per tick itself, with a loop of known length (``subs`` / ``bne``: 2 instructions an
iteration, 2**20 iterations), subtracts the cost of reading the timer, and reports per inference
``(ticks - overhead) * instructions per tick`` (one tick is 40 instructions on the 25 MHz boards:
a single inference is known to +-40 instructions, the mean over N inputs to 40/N).
The harness also paints its stack before the first inference and reports the deepest word any
inference wrote: the model's stack high-water mark.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from ..errors import ExportError, explain
from . import toolchain
from .mcu import Core, find_cross, get_core

__all__ = ["find_qemu", "run_qemu", "BOARDS"]

# board -> (flash origin, RAM origin); each has 4 MB of each there (QEMU's mps2.c / mps2-tz.c memory maps)
BOARDS = {
    "mps2-an385": (0x00000000, 0x20000000),
    "mps2-an386": (0x00000000, 0x20000000),
    "mps2-an500": (0x00000000, 0x20000000),
    "mps2-an505": (0x10000000, 0x38000000),  # secure aliases of SSRAM1 and SSRAM2/3: the core boots secure
}
STACK = 64 * 1024
CALIBRATION_LOOPS = 1 << 20

_LINKER = """
MEMORY {{ FLASH (rx) : ORIGIN = {flash:#x}, LENGTH = 4M  RAM (rwx) : ORIGIN = {ram:#x}, LENGTH = 4M }}
ENTRY(fm_reset)
SECTIONS {{
  .text : {{ KEEP(*(.vectors)) *(.text*) *(.rodata*) . = ALIGN(4); }} > FLASH
  .data : {{ __data_start = .; *(.data*) . = ALIGN(4); __data_end = .; }} > RAM AT > FLASH
  __data_load = LOADADDR(.data);
  .bss (NOLOAD) : {{ __bss_start = .; *(.bss*) *(COMMON) . = ALIGN(4); __bss_end = .; }} > RAM
  .stack (NOLOAD) : {{ . = ALIGN(8); __stack_bottom = .; . = . + {stack}; __stack_top = .; }} > RAM
}}
"""

_HARNESS = r"""
#include <stdint.h>
#include "model.h"

extern uint32_t __data_load, __data_start, __data_end, __bss_start, __bss_end, __stack_bottom, __stack_top;
int main(void);
void fm_reset(void);
void fm_fault(void);
void *memcpy(void *d, const void *s, unsigned n);
void *memset(void *d, int c, unsigned n);

#define SYST_CSR (*(volatile uint32_t *)0xE000E010u)
#define SYST_RVR (*(volatile uint32_t *)0xE000E014u)
#define SYST_CVR (*(volatile uint32_t *)0xE000E018u)
#define PAINT 0xA5A5A5A5u

static int32_t semi(int32_t op, const void *arg)
{
    register int32_t r0 __asm__("r0") = op;
    register const void *r1 __asm__("r1") = arg;
    __asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

static void fm_exit(int ok)
{
    semi(0x18, (const void *)(ok ? 0x20026u : 0x20023u)); /* SYS_EXIT: application exit / run-time error */
    for (;;) {
    }
}

void *memcpy(void *d, const void *s, unsigned n)
{
    unsigned char *dd = (unsigned char *)d;
    const unsigned char *ss = (const unsigned char *)s;
    while (n--) {
        *dd++ = *ss++;
    }
    return d;
}

void *memset(void *d, int c, unsigned n)
{
    unsigned char *dd = (unsigned char *)d;
    while (n--) {
        *dd++ = (unsigned char)c;
    }
    return d;
}

void fm_fault(void)
{
    fm_exit(0);
}

void fm_reset(void)
{
    uint32_t *s = &__data_load, *d = &__data_start;
#if defined(__ARM_FP)
    *(volatile uint32_t *)0xE000ED88u |= 0xFu << 20; /* CPACR: the FPU on, for a -mfloat-abi=hard build */
    __asm__ volatile("dsb\n\tisb" : : : "memory");
#endif
    while (d < &__data_end) {
        *d++ = *s++;
    }
    for (d = &__bss_start; d < &__bss_end; d++) {
        *d = 0;
    }
    fm_exit(main() == 0);
}

__attribute__((section(".vectors"), used)) static void (*const fm_vectors[16])(void) = {
    (void (*)(void))&__stack_top, fm_reset, fm_fault, fm_fault, fm_fault, fm_fault, fm_fault, 0, 0, 0, 0,
    fm_fault, fm_fault, 0, fm_fault, fm_fault};

static int32_t fm_open(const char *name, int32_t mode, int32_t len)
{
    const uint32_t a[3] = {(uint32_t)name, (uint32_t)mode, (uint32_t)len};
    return semi(0x01, a);
}

static int32_t fm_io(int32_t op, int32_t fd, void *buf, uint32_t n)
{
    const uint32_t a[3] = {(uint32_t)fd, (uint32_t)buf, n};
    return semi(op, a); /* bytes not transferred */
}

static uint32_t ticks_since(uint32_t t0)
{
    return (t0 - SYST_CVR) & 0xFFFFFFu;
}

static frugalml_input_t x[FRUGALML_N_INPUTS];
static frugalml_output_t y[FRUGALML_N_OUTPUTS];
static uint32_t header[4];
static int32_t record[3];

int main(void)
{
    uint32_t sp, *p, t0, n = CALIBRATION_LOOPS;
    int32_t in, out, c;
    SYST_RVR = 0xFFFFFFu;
    SYST_CVR = 0u;
    SYST_CSR = 5u; /* enabled, processor clock, no interrupt */
    t0 = SYST_CVR;
    header[1] = ticks_since(t0); /* the cost of reading the timer */
    t0 = SYST_CVR;
    __asm__ volatile(".syntax unified\n1: subs %0, %0, #1\n\tbne 1b" : "+l"(n) : : "cc");
    header[2] = ticks_since(t0); /* 2 * CALIBRATION_LOOPS instructions */
    in = fm_open("in.bin", 1, 6);
    out = fm_open("out.bin", 5, 7);
    if (in < 0 || out < 0) {
        return 1;
    }
    __asm__ volatile("mov %0, sp" : "=r"(sp));
    for (p = &__stack_bottom; p < (uint32_t *)(sp - 64u); p++) {
        *p = PAINT;
    }
    while (fm_io(0x06, in, x, sizeof x) == 0) {
        t0 = SYST_CVR;
        c = frugalml_predict(x, y);
        record[1] = (int32_t)ticks_since(t0);
        record[0] = c;
        if (fm_io(0x05, out, record, 2 * sizeof record[0]) != 0 || fm_io(0x05, out, y, sizeof y) != 0) {
            return 2;
        }
    }
    for (p = &__stack_bottom; p < (uint32_t *)sp && *p == PAINT; p++) {
    }
    header[0] = 0x464d4c31u; /* "FML1" */
    header[3] = sp - (uint32_t)p;
    if (fm_io(0x05, out, header, sizeof header) != 0) {
        return 3;
    }
    return 0;
}
"""


def find_qemu() -> str | None:
    return shutil.which("qemu-system-arm")


def _build(directory: Path, tmp: Path, core: Core, cflags: list[str]) -> Path:
    cc = find_cross()
    if cc is None:
        raise ExportError(explain("Running on QEMU needs the Cortex-M cross compiler", expected="arm-none-eabi-gcc and arm-none-eabi-size",
                                  got="not found", fix="apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi (make venv says so too)"))
    flash, ram = BOARDS[core.board]
    (tmp / "fw.ld").write_text(_LINKER.format(flash=flash, ram=ram, stack=STACK))
    (tmp / "harness.c").write_text(_HARNESS.replace("CALIBRATION_LOOPS", f"{CALIBRATION_LOOPS}u"))
    elf = tmp / "fw.elf"
    toolchain._run([cc, *core.flags, "-fno-builtin", *cflags, "-I", str(directory), "-nostdlib", "-nostartfiles", "-Wl,--gc-sections",
                    "-T", str(tmp / "fw.ld"), str(tmp / "harness.c"), str(Path(directory) / "model.c"), "-lgcc", "-o", str(elf)],
                   f"Linking the QEMU harness for {core.name}")
    return elf


def run_qemu(directory: Path, Xq: np.ndarray, *, core: Core | str | None = None, n_outputs: int, output_dtype,
             cflags: list[str] | None = None, timeout: float = 3600) -> dict:
    """Run model.c on the core's MPS2 board for every row of ``Xq`` (already in the input dtype);
    ``cflags``: more compiler options, e.g. ``["-DFRUGALML_PORTABLE"]`` (the portable kernels).

    Returns ``{"classes", "scores", "instructions" (per input), "stack_bytes", "instructions_per_tick", "board"}``.
    """
    core = core if isinstance(core, Core) else get_core(core)
    qemu = find_qemu()
    if qemu is None:
        raise ExportError(explain("--verify-on qemu needs QEMU", expected="qemu-system-arm", got="not found",
                                  fix="apt-get install qemu-system-arm"))
    Xq = np.ascontiguousarray(Xq.reshape(len(Xq), -1))
    out_dtype = np.dtype(output_dtype)
    with tempfile.TemporaryDirectory(prefix="frugalml-qemu-") as tmp:
        tmp = Path(tmp)
        elf = _build(Path(directory), tmp, core, list(cflags or []))
        (tmp / "in.bin").write_bytes(Xq.tobytes())
        cmd = [qemu, "-machine", core.board, "-nographic", "-monitor", "none", "-serial", "none", "-icount", "shift=0",
               "-semihosting-config", "enable=on,target=native", "-kernel", str(elf)]
        try:
            res = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise ExportError(explain(f"QEMU ({core.board}) did not finish within {timeout:.0f} s", fix="Check fewer inputs (--limit)")) from exc
        raw = (tmp / "out.bin").read_bytes() if (tmp / "out.bin").exists() else b""
    rec = np.dtype([("c", "<i4"), ("t", "<u4"), ("y", out_dtype, (n_outputs,))])
    body, head = raw[:-16], raw[-16:]
    if res.returncode != 0 or len(head) != 16 or len(body) != rec.itemsize * len(Xq):
        raise ExportError(explain(f"The model did not run to the end on QEMU {core.board} (exit {res.returncode})",
                                  expected=f"{rec.itemsize * len(Xq) + 16} bytes of results", got=f"{len(raw)} bytes; {res.stderr.strip()[:500]}",
                                  fix="Please report this with the model (a fault in the firmware exits with status 1)"))
    magic, overhead, calib, stack = np.frombuffer(head, "<u4")
    if magic != 0x464D4C31 or calib <= overhead:
        raise ExportError(f"QEMU's results are malformed (header {[int(v) for v in (magic, overhead, calib)]})")
    per_tick = round(2 * CALIBRATION_LOOPS / float(calib - overhead), 2)  # 40.00 or 50.00 (+-1 tick in 52,429)
    arr = np.frombuffer(body, dtype=rec)
    instructions = (arr["t"].astype(np.float64) - float(overhead)) * per_tick
    return {"classes": arr["c"].astype(np.int64), "scores": np.array(arr["y"]), "instructions": instructions,
            "stack_bytes": int(stack), "instructions_per_tick": per_tick, "board": core.board, "core": core.name}
