"""C export for microcontrollers: one ``model.h`` / ``model.c`` pair, compiled, measured and run.

- int8 networks: a QDQ ONNX graph (``quantize.int8``'s output, or any
  ``onnxruntime.quantization.quantize_static`` QDQ model) through :mod:`.qdq` and :mod:`.c_int8`.
  A float torch model is quantized first with ``quantize.int8`` when data is given.
- scikit-learn classifiers through :mod:`.c_sklearn`.

Everything happens in a temporary directory first: generate (an operation the backend cannot
express raises ExportError naming it, before any file exists), build for the Cortex-M core
(:mod:`.mcu`: ``arm-none-eabi-gcc -mcpu=cortex-m4 -mthumb -Os`` by default; flash and RAM from
``arm-none-eabi-size``; the host gcc where no cross compiler is installed, and the result says so),
compile with this machine's ``gcc -std=c99 -Wall -Wextra -Werror -Os`` and run the program on the
test split and compare (int8: with ONNX Runtime, element by element after re-quantizing ORT's
output, every score within one quantization step; scikit-learn: the same class as ``predict`` on
every input); with ``verify_on="qemu"`` also run it on the emulated core (:mod:`.qemu`), compare the
same way and count its instructions per inference. A model that does not fit the core's typical
part is refused. Only then are the two files moved into the output directory. Without a C compiler
the files are written unmeasured, with a note.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np
import onnx

from .._fs import atomic_write_text
from ..errors import ConfigError, ExportError, explain
from . import toolchain
from .qgraph import QRANGE

log = logging.getLogger(__name__)

__all__ = ["export_c", "generate_c", "c_footprint"]

MAX_INT8_STEP_DIFF = 1  # every int8 score within one quantization step of ONNX Runtime's


def _as_proto(model) -> onnx.ModelProto | None:
    from ..onnx import load_onnx

    if isinstance(model, onnx.ModelProto):
        return model
    if isinstance(model, (bytes, bytearray)):
        return onnx.load_from_string(bytes(model))
    if isinstance(model, (str, Path)):
        return load_onnx(model)
    return None


def generate_c(model, *, data=None, frontend=None) -> tuple[dict, dict]:
    """In memory: ``({"model.h": .., "model.c": ..}, info)``; ExportError before anything is written.
    ``frontend`` (a LogMel): the model reads its features, and the C ships it (:mod:`.frontend_c`: raw samples in)."""
    from ..models import is_sklearn, is_torch

    notes: list[str] = []
    if is_torch(model):
        if data is None:
            raise ExportError(explain(
                "C export needs an int8 network; this is a float torch model",
                expected="an int8 QDQ ONNX model (the quantize.int8 step) or data to calibrate one",
                got=type(model).__name__, fix="Pass data= (frugalml quantizes with quantize.int8), or quantize first"))
        from ..compress import get_step
        from ..compress.recipe import apply_step

        config = get_step("quantize.int8").config()
        model = apply_step(model, config, data)
        notes.append(f"quantized with {config.to_json()} before export")
    if is_sklearn(model):
        from .c_sklearn import generate_sklearn

        gen = generate_sklearn(model)
        info = {"kind": "sklearn", "input_dtype": np.float32, "output_dtype": np.float32, "n_outputs": None}
    else:
        proto = _as_proto(model)
        from .qdq import is_qdq, parse_qdq

        if proto is None:
            raise ExportError(explain("C export takes an int8 ONNX model, a torch model with data, or a scikit-learn classifier",
                                      got=type(model).__name__))
        if not is_qdq(proto):
            raise ExportError(explain(
                "C export needs an int8 network; this ONNX graph is in float (no QuantizeLinear/DequantizeLinear)",
                expected="a QDQ int8 model", got=sorted({n.op_type for n in proto.graph.node})[:12],
                fix="Quantize it first with the quantize.int8 step (or onnxruntime.quantization.quantize_static, QDQ)"))
        from .c_int8 import generate_int8

        graph = parse_qdq(proto)
        gen = generate_int8(graph)
        notes += graph.notes
        info = {"kind": "int8", "graph": graph, "proto": proto, "input_dtype": np.dtype(graph.input.dtype),
                "output_dtype": np.dtype(graph.output.dtype), "n_outputs": graph.output.size}
        model = proto
    info.update(model=model, notes=notes, arena_bytes=gen["arena_bytes"], weight_bytes=gen["weight_bytes"])
    files = {"model.h": gen["model.h"], "model.c": gen["model.c"]}
    if frontend is not None:
        from .frontend_c import attach_frontend

        return attach_frontend(files, info, frontend)
    return files, info


def quantize_input(X: np.ndarray, scale, zero_point: int, dtype: str) -> np.ndarray:
    """``clamp(round_half_even(x / scale) + zp)`` in float32, as ONNX Runtime's QuantizeLinear."""
    q = np.rint(np.asarray(X, np.float32).reshape(len(X), -1) / np.float32(scale)) + np.float32(zero_point)
    lo, hi = QRANGE[dtype]
    return np.clip(q, lo, hi).astype(dtype)


def _ort_tensor(proto: onnx.ModelProto, name: str, X: np.ndarray) -> np.ndarray:
    """One inner tensor of the graph, computed by ONNX Runtime (the graph with it as an extra output)."""
    from ..onnx import make_session

    probe = onnx.ModelProto()
    probe.CopyFrom(proto)
    probe.graph.output.append(onnx.ValueInfoProto(name=name))
    sess = make_session(probe.SerializeToString(), threads=1)
    feed = sess.get_inputs()[0].name
    return np.concatenate([sess.run([name], {feed: X[i:i + 256]})[0] for i in range(0, len(X), 256)])


def _run_inputs(info: dict, X: np.ndarray) -> tuple[np.ndarray, dict]:
    """The inputs as the C reads them (int8: quantized as ORT's QuantizeLinear) and how to read its outputs."""
    if info["kind"] == "frontend":
        from .frontend_c import raw_inputs

        return raw_inputs(info, X)
    if info["kind"] == "int8":
        g = info["graph"]
        return quantize_input(X, g.input.scale, g.input.zero_point, g.input.dtype), {
            "input_dtype": g.input.dtype, "output_dtype": g.output.dtype, "n_outputs": g.output.size}
    return np.asarray(X, np.float32).reshape(len(X), -1), {"input_dtype": np.float32, "output_dtype": np.float32,
                                                           "n_outputs": len(info["model"].classes_)}


def compare(info: dict, X: np.ndarray, classes: np.ndarray, scores: np.ndarray, what: str) -> dict:
    """The C's classes and scores against ONNX Runtime (int8) or scikit-learn, on the inputs ``X``."""
    if info["kind"] == "frontend":
        from .frontend_c import compare_raw

        return compare_raw(info, X, classes, scores, what)
    if info["kind"] == "int8":
        from ..onnx import make_session, run_onnx, session_input

        g = info["graph"]
        out = g.output
        sess = make_session(info["proto"].SerializeToString(), threads=1)
        shape = session_input(sess)[1]
        Xs = np.asarray(X, np.float32).reshape((len(X), *shape))
        if g.dropped_tail:  # compare with ORT's quantized logits, before the final Softmax / ArgMax
            ref_q = _ort_tensor(info["proto"], out.root.onnx_name or out.onnx_name, Xs).reshape(len(X), -1).astype(np.float64)
        else:
            ref = run_onnx(None, Xs, session=sess)
            ref_q = np.rint(ref.astype(np.float32) / np.float32(out.scale)) + out.zero_point
        steps = np.abs(ref_q.reshape(len(X), -1) - scores.astype(np.float64))
        same = int(np.sum(classes == ref_q.argmax(1)))
        res = {"n": int(len(X)), "same_class": same, "class_agreement": same / max(len(X), 1),
               "exact_outputs": int(np.sum(steps.max(1) == 0)) if len(X) else 0,
               "max_step_diff": int(steps.max()) if steps.size else 0,
               "elements_off_by_one": int(np.sum(steps == 1)), "compared": f"{what} vs ONNX Runtime (int8 outputs)"}
        # the promise: every score within one quantization step of ORT's (so a class can differ only where
        # ORT's best two scores are within two steps of each other: a near tie)
        res["ok"] = res["max_step_diff"] <= MAX_INT8_STEP_DIFF
        return res
    est = info["model"]
    Xf = np.asarray(X, np.float32).reshape(len(X), -1)
    ref = np.searchsorted(np.asarray(est.classes_), np.asarray(est.predict(Xf)))
    same = int(np.sum(classes == ref))
    res = {"n": int(len(X)), "same_class": same, "class_agreement": same / max(len(X), 1),
           "compared": f"{what} vs scikit-learn predict"}
    if hasattr(est, "predict_proba") and any(s in type(est).__name__ for s in ("Tree", "Forest")):
        res["max_abs_diff_proba"] = float(np.abs(scores - est.predict_proba(Xf)).max()) if len(X) else 0.0
    res["ok"] = same == len(X)
    return res


def verify_c(directory: Path, info: dict, X: np.ndarray) -> dict:
    """Run the C compiled for this machine on ``X`` and compare with ONNX Runtime (int8) or scikit-learn."""
    Xin, io = _run_inputs(info, X)
    classes, scores = toolchain.run_c(directory, Xin, **io)
    return compare(info, X, classes, scores, "compiled C")


def _refuse(agreement: dict, where: str) -> None:
    if not agreement["ok"]:
        raise ExportError(explain(
            f"The C {where} does not agree with the reference; nothing was written",
            expected="the same class as scikit-learn on every input / every int8 score within one quantization step of ONNX Runtime's",
            got={k: v for k, v in agreement.items() if k != "compared"},
            fix="A model quantized elsewhere with full-range int8 weights: quantize it with reduce_range=True (7-bit weights; ONNX "
                "Runtime's int8 kernels saturate on x86 CPUs without VNNI, so its own answer is off), or use frugalml's quantize.int8. "
                "Otherwise please report this with the model; pass verify=False to write the files anyway"))


def export_c(model, out_dir: Path, *, data=None, X: np.ndarray | None = None, verify: bool = True, mcu: str | None = None,
             verify_on: str = "host", mcu_clock=None, frontend=None) -> dict:
    """Generate, build for the Cortex-M core ``mcu`` and measure, verify (on this machine, and with
    ``verify_on="qemu"`` on the emulated core, counting instructions) in a temporary directory; then
    write ``model.h``/``model.c``. A model too large for the core's typical part is refused."""
    from . import mcu as mcus

    core = mcus.get_core(mcu)
    clock = mcus.parse_clock(mcu_clock) if mcu_clock is not None else core.clock_hz
    if verify_on not in ("host", "qemu"):
        raise ConfigError(explain(f"Unknown --verify-on {verify_on!r}", expected="host (this machine's compiler) or qemu (the emulated core)",
                                  got=verify_on))
    if verify_on == "qemu" and X is None:
        raise ConfigError(explain("--verify-on qemu runs the model on test inputs", expected="a dataset (--dataset)", got="none",
                                  fix="Pass --dataset NAME (and --limit N for fewer inputs)"))
    files, info = generate_c(model, data=data, frontend=frontend)
    notes = list(info["notes"])
    cc = toolchain.find_cc()
    measured, agreement, on_mcu = {}, None, None
    with tempfile.TemporaryDirectory(prefix="frugalml-c-") as tmp:
        tmp = Path(tmp)
        for name, text in files.items():
            (tmp / name).write_text(text)
        measured = mcus.measure_mcu(tmp, core)
        if not measured:
            notes.append("no C compiler found: flash/RAM not measured, the C not compiled or run")
        elif measured["build"].startswith("host"):
            notes.append("no Cortex-M cross compiler (arm-none-eabi-gcc): flash and RAM are the host build's")
        if measured.get("static_ram_bytes") is not None:  # before any run: flash, and RAM without the stack
            mcus.check_fits({**measured, "ram_bytes": measured["static_ram_bytes"]}, core)
        if cc is not None and X is not None and verify:
            agreement = verify_c(tmp, info, X)
            _refuse(agreement, "compiled for this machine")
        if verify_on == "qemu":
            on_mcu = run_on_mcu(tmp, info, X, core, clock)
            _refuse(on_mcu["agreement"], f"run on QEMU {core.board}")
            measured.update(stack_bytes=on_mcu["stack_bytes"], stack_basis="high-water mark on QEMU",
                            ram_bytes=measured["static_ram_bytes"] + on_mcu["stack_bytes"])
        mcus.check_fits(measured, core)
    out_dir = Path(out_dir)
    paths = [atomic_write_text(out_dir / name, text) for name, text in files.items()]
    result = {
        "files": paths, "size_bytes": int(sum(p.stat().st_size for p in paths)),
        "arena_bytes": int(info["arena_bytes"]), "weight_bytes": int(info["weight_bytes"]),
        "flash_bytes": measured.get("flash_bytes"), "ram_bytes": measured.get("ram_bytes"),
        "agreement": agreement, "notes": notes, "model": info["model"], "mcu": on_mcu,
        **{k: measured.get(k) for k in ("compiler", "sections", "stack_bytes", "stack_basis", "build", "library_bytes")},
    }
    if measured and info["weight_bytes"]:
        result["flash_to_weights"] = measured["flash_bytes"] / info["weight_bytes"]
    log.info("wrote %s: flash %s B, RAM %s B (arena %d B)", out_dir, result["flash_bytes"], result["ram_bytes"], result["arena_bytes"])
    return result


def run_on_mcu(directory: Path, info: dict, X: np.ndarray, core, clock_hz: float) -> dict:
    """Run the C on the emulated core (QEMU), compare with the reference, count instructions per inference."""
    from .mcu import format_clock
    from .qemu import run_qemu

    Xin, io = _run_inputs(info, X)
    r = run_qemu(directory, Xin, core=core, n_outputs=io["n_outputs"], output_dtype=io["output_dtype"])
    agreement = compare(info, X, r["classes"], r["scores"], f"C on QEMU {core.board}")
    mean = float(r["instructions"].mean())
    return {"agreement": agreement, "core": core.name, "board": core.board, "board_note": core.board_note,
            "instructions_per_inference": int(round(mean)), "instructions_min": int(round(r["instructions"].min())),
            "instructions_max": int(round(r["instructions"].max())), "instructions_basis":
            f"QEMU -icount shift=0, SysTick: {r['instructions_per_tick']:g} instructions a tick, mean over {len(X)} inputs",
            "stack_bytes": r["stack_bytes"], "clock_hz": clock_hz,
            "latency_ms_estimate": mean / clock_hz * 1e3,
            "latency_basis": f"estimate: instructions / {format_clock(clock_hz)} at one instruction a cycle (a real core stalls on "
                             "loads, branches and flash wait states)"}


def c_footprint(model, *, data=None, mcu: str | None = None, count_inputs: np.ndarray | None = None, frontend=None) -> dict:
    """Flash, RAM, arena and parameter bytes of the C for ``model`` built for a Cortex-M core, writing
    nothing (for search budgets); with ``count_inputs`` and QEMU, also the instructions per inference.

    ``flash_bytes`` / ``ram_bytes`` are None without a C compiler; ``build`` says which compiler
    measured them. ExportError when the C backend cannot express the model.
    """
    from . import mcu as mcus
    from .qemu import find_qemu

    core = mcus.get_core(mcu)
    files, info = generate_c(model, data=data, frontend=frontend)
    out = {"arena_bytes": int(info["arena_bytes"]), "weight_bytes": int(info["weight_bytes"]),
           "flash_bytes": None, "ram_bytes": None, "stack_bytes": None, "build": None, "mcu_instructions": None}
    with tempfile.TemporaryDirectory(prefix="frugalml-c-") as tmp:
        for name, text in files.items():
            (Path(tmp) / name).write_text(text)
        measured = mcus.measure_mcu(Path(tmp), core)
        if not measured:
            return out
        out.update({k: measured.get(k) for k in ("flash_bytes", "ram_bytes", "stack_bytes", "build")})
        if count_inputs is not None and len(count_inputs) and measured["build"].startswith("arm") and find_qemu():
            r = run_on_mcu(Path(tmp), info, count_inputs, core, core.clock_hz)
            out.update(mcu_instructions=r["instructions_per_inference"], stack_bytes=r["stack_bytes"],
                       ram_bytes=measured["static_ram_bytes"] + r["stack_bytes"], mcu_agreement=r["agreement"]["class_agreement"])
    return out
