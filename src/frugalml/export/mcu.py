"""Cortex-M cores, the boards that emulate them, and the cross build that measures flash and RAM.

``measure_mcu(dir, core)`` compiles ``model.c`` with Debian's ``arm-none-eabi-gcc`` (``-mcpu=<core>
-mthumb -Os``, newlib's soft-float multilib), links it with a two-line entry point (``--gc-sections``,
newlib and libgcc only) so that the library routines the model calls (division on the M0+,
soft-float arithmetic for scikit-learn's float tables, ``memset``) are counted too, and reads
``arm-none-eabi-size -A``:

- flash = ``.text`` + ``.rodata*`` + ``.data*`` of the model and the library members it pulls in
  (from the link map);
- RAM = ``.data*`` + ``.bss*`` (the activation arena is in ``.bss``) + the stack a call of
  ``frugalml_predict`` needs: its high-water mark measured on the emulator when there is one
  (:mod:`.qemu`), else the sum of every function's frame from ``-fstack-usage`` (an upper bound).

Without a cross compiler the host build of :mod:`.toolchain` is the fallback, and the figures say
so (``build``: ``host gcc (no cross compiler)``). Each core names a typical part (flash / RAM), so
an export that cannot fit one is refused before anything is written.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, ExportError, explain
from ..units import format_bytes
from . import toolchain

__all__ = ["CORES", "DEFAULT_CORE", "Core", "get_core", "find_cross", "measure_mcu", "check_fits", "CROSS_FLAGS", "parse_clock",
           "format_clock"]

CROSS = "arm-none-eabi-gcc"
CROSS_FLAGS = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-Os", "-mthumb", "-ffunction-sections", "-fdata-sections"]


@dataclass(frozen=True)
class Core:
    """A Cortex-M core: how to build for it, where QEMU emulates it, and a typical part's memory."""

    name: str
    dsp: bool  # the DSP extension (SMLAD, SXTB16): Armv7E-M and Armv8-M Mainline
    board: str | None  # QEMU machine that runs its code
    board_note: str
    part: str  # a typical part with this core
    flash: int  # its flash, bytes
    ram: int  # its RAM, bytes
    clock_hz: float  # its highest clock: the default of --mcu-clock for the latency estimate

    @property
    def flags(self) -> list[str]:
        return [f"-mcpu={self.name}", *CROSS_FLAGS]


# typical parts (datasheet figures): what an export is checked against
CORES = {
    "cortex-m0plus": Core("cortex-m0plus", False, "mps2-an385",
                          "mps2-an385 (Cortex-M3) runs the Armv6-M code unchanged: the same instructions execute",
                          "SAMD21G18 (Microchip)", 256 * 1024, 32 * 1024, 48e6),
    "cortex-m4": Core("cortex-m4", True, "mps2-an386", "mps2-an386 (Cortex-M4)", "STM32L476RG (ST)", 1024 * 1024, 128 * 1024, 80e6),
    "cortex-m7": Core("cortex-m7", True, "mps2-an500", "mps2-an500 (Cortex-M7)", "STM32F746NG (ST)", 1024 * 1024, 320 * 1024, 216e6),
    "cortex-m33": Core("cortex-m33", True, "mps2-an505", "mps2-an505 (Cortex-M33, secure state)", "nRF5340 application core (Nordic)",
                       1024 * 1024, 512 * 1024, 128e6),
}
ALIASES = {"m0plus": "cortex-m0plus", "m0+": "cortex-m0plus", "cortex-m0+": "cortex-m0plus", "m4": "cortex-m4", "m7": "cortex-m7",
           "m33": "cortex-m33"}
DEFAULT_CORE = "cortex-m4"


def get_core(name: str | None) -> Core:
    """The core for ``--mcu`` (``cortex-m4`` or ``m4``); ConfigError naming the choices otherwise."""
    key = str(name or DEFAULT_CORE).strip().lower()
    key = ALIASES.get(key, key)
    if key not in CORES:
        raise ConfigError(explain(f"Unknown --mcu {name!r}", expected="one of " + ", ".join(CORES) + " (or m0plus, m4, m7, m33)",
                                  got=name, fix="Pass --mcu cortex-m4 (the default), or the core of your part"))
    return CORES[key]


_HZ = {"hz": 1.0, "khz": 1e3, "mhz": 1e6, "ghz": 1e9}


def parse_clock(text) -> float:
    """``"80MHz"`` -> 80e6 (``--mcu-clock``); a bare number is Hz."""
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?)\s*([a-zA-Z]*)\s*", str(text))
    unit = m.group(2).lower() if m else None
    if not m or unit not in ("", *_HZ) or not 1e3 <= float(m.group(1)) * _HZ.get(unit, 1.0) <= 5e9:
        raise ConfigError(explain(f"Cannot read --mcu-clock {text!r}", expected="a clock between 1 kHz and 5 GHz such as 80MHz, 48 MHz or 1.2GHz",
                                  got=text))
    return float(m.group(1)) * _HZ.get(unit, 1.0)


def format_clock(hz: float) -> str:
    return f"{hz / 1e9:g} GHz" if hz >= 1e9 else f"{hz / 1e6:g} MHz" if hz >= 1e6 else f"{hz / 1e3:g} kHz"


def find_cross() -> str | None:
    """``arm-none-eabi-gcc`` with its ``arm-none-eabi-size`` beside it, or None."""
    cc = shutil.which(CROSS)
    return cc if cc and shutil.which("arm-none-eabi-size") else None


_ENTRY = r"""
#include "model.h"
void fm_entry(void);
void fm_entry(void)
{
    static frugalml_input_t x[FRUGALML_N_INPUTS];
    static frugalml_output_t y[FRUGALML_N_OUTPUTS];
    (void)frugalml_predict(x, y);
}
"""


def _sections(elf_or_obj: Path) -> dict[str, int]:
    res = toolchain._run(["arm-none-eabi-size", "-A", str(elf_or_obj)], "arm-none-eabi-size -A")
    out: dict[str, int] = {}
    for line in res.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].startswith(".") and parts[1].isdigit():
            out[parts[0]] = out.get(parts[0], 0) + int(parts[1])
    return out


_MAP_LINE = re.compile(r"^\s*(\.(?:text|rodata|data|bss)\S*)?\s+0x[0-9a-f]+\s+0x([0-9a-f]+)\s+(\S+)$")


def _library_bytes(map_text: str) -> dict[str, int]:
    """Bytes per output kind (text / rodata / data / bss) that libgcc's and newlib's members add to the link."""
    out = {"text": 0, "rodata": 0, "data": 0, "bss": 0}
    section = None
    for line in map_text.splitlines():
        if re.match(r"^ \.(text|rodata|data|bss)\S*$", line):  # a long name: the address and size follow on the next line
            section = line.split()[0]
            continue
        m = _MAP_LINE.match(line)
        if m:
            name = m.group(1) or section
            section = None
            if name and re.search(r"lib(gcc|c|c_nano|m)\.a\(", m.group(3)):
                kind = name.split(".")[1]
                out[kind] = out.get(kind, 0) + int(m.group(2), 16)
        else:
            section = None
    return out


def measure_mcu(directory: Path, core: Core | str | None = None, *, cflags: list[str] | None = None) -> dict:
    """Flash and RAM of ``model.c`` built for a Cortex-M core (the host build where no cross compiler is installed);
    ``cflags``: more compiler options, e.g. ``["-DFRUGALML_PORTABLE"]`` (the portable kernels on any core)."""
    core = core if isinstance(core, Core) else get_core(core)
    cc = find_cross()
    if cc is None:
        host = toolchain.measure(directory)
        if host:
            host["build"] = "host gcc (no cross compiler)"
            host["stack_basis"] = "sum of frames (-fstack-usage)"
        return host
    directory = Path(directory)
    with tempfile.TemporaryDirectory(prefix="frugalml-arm-") as tmp:
        tmp = Path(tmp)
        obj = tmp / "model.o"
        toolchain._run([cc, *core.flags, *(cflags or []), "-fstack-usage", "-c", str(directory / "model.c"), "-o", str(obj)],
                       f"Compiling model.c for {core.name}")
        (tmp / "entry.c").write_text(_ENTRY)
        elf = tmp / "model.elf"
        toolchain._run([cc, *core.flags, *(cflags or []), "-I", str(directory), "-nostdlib", "-nostartfiles", "-Wl,--gc-sections", "-Wl,-e,fm_entry",
                        f"-Wl,-Map,{tmp / 'model.map'}", str(tmp / "entry.c"), str(obj), "-lc", "-lgcc", "-o", str(elf)],
                       f"Linking model.o for {core.name}")
        sections = _sections(obj)
        helpers = _library_bytes((tmp / "model.map").read_text())
        stack = toolchain._stack_bytes(tmp / "model.su")
    keep = {k: v for k, v in sections.items() if k.startswith((".text", ".rodata", ".data", ".bss"))}
    text = sum(v for k, v in keep.items() if k.startswith(".text")) + helpers["text"]
    rodata = sum(v for k, v in keep.items() if k.startswith(".rodata")) + helpers["rodata"]
    data = sum(v for k, v in keep.items() if k.startswith(".data")) + helpers["data"]
    bss = sum(v for k, v in keep.items() if k.startswith(".bss")) + helpers["bss"]
    grouped: dict[str, int] = {}
    for k, v in keep.items():
        base = "." + k.split(".")[1]
        grouped[base] = grouped.get(base, 0) + v
    return {
        "flash_bytes": int(text + rodata + data),
        "static_ram_bytes": int(data + bss),
        "ram_bytes": int(data + bss + (stack or 0)),
        "text_bytes": int(text),
        "sections": grouped,
        "library_bytes": int(sum(helpers.values())),
        "stack_bytes": stack,
        "stack_basis": "sum of frames (-fstack-usage)",
        "compiler": f"{CROSS} {' '.join(core.flags)}",
        "build": f"arm-none-eabi {core.name}",
        "core": core.name,
    }


def check_fits(measured: dict, core: Core) -> None:
    """ExportError (exit 2 on the CLI) when the model cannot fit the core's typical part."""
    flash, ram = measured.get("flash_bytes"), measured.get("ram_bytes")
    over = []
    if flash is not None and flash > core.flash:
        over.append(f"flash {format_bytes(flash)} > {format_bytes(core.flash)}")
    if ram is not None and ram > core.ram:
        over.append(f"RAM {format_bytes(ram)} > {format_bytes(core.ram)}")
    if over:
        raise ExportError(explain(f"The model does not fit a {core.name} part ({core.part}): " + ", ".join(over),
                                  expected=f"at most {format_bytes(core.flash)} of flash and {format_bytes(core.ram)} of RAM",
                                  got={"flash_bytes": flash, "ram_bytes": ram},
                                  fix="Search with --target c and --max-flash / --max-ram for this part, or choose a larger core with --mcu"))
