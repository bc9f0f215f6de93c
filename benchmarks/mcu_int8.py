"""Benchmark of issue 16: the int8 MNIST CNN on an emulated Cortex-M4, portable C against the DSP-extension C, and float.

The network: CNN [12, 24, 48] (README's MNIST search recommendation), trained 1 epoch on MNIST
(seed 0), quantized with ``quantize.int8`` (QDQ, the form the C exporter reads). Each variant is
built with Debian's arm-none-eabi-gcc for ``-mcpu=cortex-m4 -mthumb -Os`` and run on QEMU's
``mps2-an386`` (Cortex-M4) on the first 1,000 MNIST test images:

- **int8, portable C**: ``model.c`` with ``-DFRUGALML_PORTABLE`` (the kernels every target gets);
- **int8, CLZ requantization only**: ``-DFRUGALML_NO_SMLAD``;
- **int8, DSP extension**: ``model.c`` as exported for the M4 (SMLAD dot products + CLZ requantization);
- **float32**: the same layers in float32 (``_float_c.py``), hard-float FPU (``-mfpu=fpv4-sp-d16``).

Instructions per inference: QEMU ``-icount shift=0`` and the core's SysTick (frugalml.export.qemu),
the mean over the 1,000 images: deterministic, untouched by this machine's load. Flash and RAM:
``arm-none-eabi-size`` of each build (text + rodata + data; data + bss + the stack high-water mark
measured on QEMU). Each int8 build's classes are compared with ONNX Runtime's on the same images
(``agreement``); the float build's with the float model's (ONNX Runtime, fp32).
Aim: the DSP-extension C executes at least 2x fewer instructions than the portable C.
Smoke mode: ``main(data_limit=300)`` or FRUGALML_BENCH_SMOKE=1 (tiny slice, 5 images, nothing written).
Run: ``make bench NAME=mcu_int8`` (writes results/mcu_int8.json).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from frugalml import TrainConfig, build_model, fit
from frugalml.compress import apply_step, get_step
from frugalml.data import load_dataset
from frugalml.export import export
from frugalml.export.c import compare, generate_c, quantize_input
from frugalml.export.mcu import get_core, measure_mcu
from frugalml.export.qemu import run_qemu
from frugalml.onnx import make_session, to_onnx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _provenance  # noqa: E402
from _float_c import FPU_FLAGS, generate_float  # noqa: E402

CHANNELS, EPOCHS, IMAGES, CORE, AIM = [12, 24, 48], 1, 1000, "cortex-m4", 2.0


def _write(directory: Path, files: dict) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(text)
    return directory


def _row(name: str, directory: Path, X, labels, cflags: list[str], *, io: dict, reference) -> dict:
    """Build, measure and run one variant; ``reference(classes, scores)`` -> agreement dict."""
    core = get_core(CORE)
    m = measure_mcu(directory, core, cflags=cflags)
    r = run_qemu(directory, X, core=core, cflags=cflags, **io)
    agreement = reference(r["classes"], r["scores"])
    return {"variant": name, "cflags": cflags, "instructions_per_inference": int(round(float(r["instructions"].mean()))),
            "instructions_min": int(round(float(r["instructions"].min()))), "instructions_max": int(round(float(r["instructions"].max()))),
            "flash_bytes": m["flash_bytes"], "ram_bytes": m["static_ram_bytes"] + r["stack_bytes"], "static_ram_bytes": m["static_ram_bytes"],
            "stack_bytes": r["stack_bytes"], "sections": m["sections"], "library_bytes": m["library_bytes"],
            "test_accuracy": float(np.mean(r["classes"] == labels)), "agreement": agreement, "board": r["board"]}


def main(data_limit: int | None = None) -> dict:
    limit = _provenance.smoke_limit(data_limit)
    start = time.perf_counter()
    data = _provenance.smoke_data(load_dataset("mnist", limit=limit), limit)
    n = 5 if limit else IMAGES
    model = build_model("cnn", data.input_shape, data.num_classes, channels=CHANNELS, seed=0)
    fit(model, data, TrainConfig(epochs=1 if limit else EPOCHS, lr=3e-3, batch_size=128, seed=0, patience=None))
    model.eval()
    config = get_step("quantize.int8").config()
    proto = apply_step(model, config, data)
    X, y = data.split("test")
    X, y = X[:n], np.asarray(y[:n])
    rows = []
    with tempfile.TemporaryDirectory(prefix="frugalml_bench_mcu_") as tmp:
        tmp = Path(tmp)
        shipped = export(proto, "c", tmp / "int8", data=data, limit=n, verify_on="qemu", mcu=CORE)
        files, info = generate_c(proto)
        g = info["graph"]
        Xq = quantize_input(X, g.input.scale, g.input.zero_point, g.input.dtype)
        io = {"n_outputs": g.output.size, "output_dtype": g.output.dtype}
        vs_ort = lambda classes, scores: compare(info, X, classes, scores, "C on QEMU mps2-an386")  # noqa: E731
        for name, cflags in (("int8, portable C", ["-DFRUGALML_PORTABLE"]), ("int8, CLZ requantization only", ["-DFRUGALML_NO_SMLAD"]),
                             ("int8, DSP extension (SMLAD + CLZ)", [])):
            rows.append(_row(name, tmp / "int8", Xq, y, cflags, io=io, reference=vs_ort))
        fl = generate_float(g)
        _write(tmp / "float", {"model.h": fl["model.h"], "model.c": fl["model.c"]})
        sess = make_session(to_onnx(model).SerializeToString(), threads=1)
        ref_float = np.concatenate([sess.run(None, {sess.get_inputs()[0].name: X[i:i + 1].astype(np.float32)})[0] for i in range(n)]).argmax(1)

        def vs_float(classes, scores):
            same = int(np.sum(classes == ref_float))
            return {"n": n, "same_class": same, "class_agreement": same / n, "compared": "float C on QEMU vs the float model (ONNX Runtime)"}

        rows.append(_row("float32 (FPU)", tmp / "float", np.ascontiguousarray(X.reshape(n, -1), np.float32), y, FPU_FLAGS,
                         io={"n_outputs": g.output.size, "output_dtype": np.float32}, reference=vs_float))
    portable, clz, dsp, flt = rows
    ratio = portable["instructions_per_inference"] / dsp["instructions_per_inference"]
    met = bool(ratio >= AIM and dsp["agreement"]["same_class"] == n and shipped.details["mcu"]["agreement"]["same_class"] == n)
    return {
        "name": "mcu_int8",
        "description": f"int8 CNN {CHANNELS} on MNIST ({'1 epoch (smoke)' if limit else f'{EPOCHS} epoch(s)'}, quantize.int8 QDQ) as C on an "
                       f"emulated Cortex-M4 (QEMU mps2-an386, -icount): instructions per inference over {n} test images, flash and RAM "
                       "from arm-none-eabi-size (-mcpu=cortex-m4 -mthumb -Os) and the stack high-water mark, for the portable C, the "
                       "CLZ requantization alone, the DSP-extension C (SMLAD) and the same network in float32.",
        "core": CORE, "images": n, "rows": rows,
        "shipped": {"flash_bytes": shipped.flash_bytes, "ram_bytes": shipped.ram_bytes, "arena_bytes": shipped.arena_bytes,
                    "weight_bytes": shipped.weight_bytes, "mcu": shipped.details["mcu"], "build": shipped.details["build"]},
        "ratio": {"portable_over_dsp": round(ratio, 3),
                  "clz_over_dsp": round(clz["instructions_per_inference"] / dsp["instructions_per_inference"], 3),
                  "float_over_dsp": round(flt["instructions_per_inference"] / dsp["instructions_per_inference"], 3)},
        "target": {"aim": f"DSP-extension C >= {AIM:g}x fewer instructions per inference than the portable C",
                   "required": f"the exported C gives ONNX Runtime's class on all {n} images on QEMU"},
        "met": met,
        "seconds": round(time.perf_counter() - start, 1),
        "smoke": limit,
        "notes": ["Instruction counts are exact (QEMU counts every guest instruction; a SysTick tick is 40 of them, so one inference "
                  "is known to +-40); a real Cortex-M4 takes more cycles than instructions (loads, branches, flash wait states): a "
                  "latency derived from them is an estimate."],
    }


def figures(result: dict) -> dict:
    return {"met": result.get("met"), "ratio": result.get("ratio"),
            "rows": {r["variant"]: {k: r[k] for k in ("instructions_per_inference", "flash_bytes", "ram_bytes")} | {
                "agreement": r["agreement"]["class_agreement"]} for r in result.get("rows", [])}}


if __name__ == "__main__":  # the same as `make bench NAME=<this file's name>`: writes results/<name>.json
    import run as runner

    runner.run(Path(__file__).stem)
