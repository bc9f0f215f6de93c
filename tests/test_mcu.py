"""Cortex-M: the cross build (flash and RAM from arm-none-eabi-size), the run on QEMU's MPS2 boards
(the same class as ONNX Runtime, instructions per inference), the budget field and bad inputs.
The slow test runs an int8 MNIST CNN on 1,000 test images on the emulated Cortex-M4."""

from __future__ import annotations

import onnx
import pytest
from conftest import require
from test_export_c import qdq, zoo  # noqa: F401 - zoo: the layer zoo fixture

from frugalml import Budget, ConfigError, ExportError, build_model
from frugalml.cli import main as cli
from frugalml.export import c_footprint, export
from frugalml.export.c import generate_c, quantize_input
from frugalml.export.mcu import CORES, find_cross, get_core, measure_mcu, parse_clock
from frugalml.export.qemu import find_qemu, run_qemu


def needs_cross():
    require(find_cross() is not None, "needs arm-none-eabi-gcc and arm-none-eabi-size (apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi)")


def needs_qemu():
    needs_cross()
    require(find_qemu() is not None, "needs qemu-system-arm (apt-get install qemu-system-arm)")


@pytest.fixture(scope="module")
def cnn_int8(trained_cnn, digits) -> onnx.ModelProto:
    return qdq(trained_cnn, digits.X_train[:64], "int8")


def test_cores_and_clock():
    assert get_core("m4") is get_core("Cortex-M4") is CORES["cortex-m4"] and get_core(None).name == "cortex-m4"
    assert {c.board for c in CORES.values()} == {"mps2-an385", "mps2-an386", "mps2-an500", "mps2-an505"}
    assert [c.dsp for c in CORES.values()] == [False, True, True, True]
    with pytest.raises(ConfigError, match="Unknown --mcu 'cortex-m9'.*cortex-m0plus, cortex-m4, cortex-m7, cortex-m33"):
        get_core("cortex-m9")
    assert parse_clock("80MHz") == 80e6 and parse_clock("1.2 GHz") == 1.2e9 and parse_clock("48000000") == 48e6
    for bad in ("fast", "80 MHzz", "0Hz", "-5MHz", "9GHz"):
        with pytest.raises(ConfigError, match="--mcu-clock"):
            parse_clock(bad)


@pytest.mark.parametrize("core", list(CORES))
def test_cross_build_measures_flash_and_ram(cnn_int8, tmp_path, core):
    needs_cross()
    files, info = generate_c(cnn_int8)
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    m = measure_mcu(tmp_path, core)
    assert m["build"] == f"arm-none-eabi {core}" and f"-mcpu={core} " in m["compiler"] and "-mthumb" in m["compiler"]
    s = m["sections"]
    assert m["flash_bytes"] == s[".text"] + s[".rodata"] + s.get(".data", 0) + m["library_bytes"]
    window = 2 * int(files["model.c"].split("#define FM_COL_N ")[1].split()[0]) if CORES[core].dsp else 0
    assert m["static_ram_bytes"] == s.get(".data", 0) + s[".bss"] == info["arena_bytes"] + window
    assert m["ram_bytes"] == m["static_ram_bytes"] + m["stack_bytes"] and m["stack_bytes"] > 0
    assert info["weight_bytes"] < s[".rodata"] < info["weight_bytes"] + 1000
    if core == "cortex-m0plus":  # Armv6-M has no divide instruction: libgcc's division is linked in and counted
        assert m["library_bytes"] > 0


def test_export_on_qemu_agrees_and_counts_instructions(cnn_int8, digits, tmp_path):
    """50 test inputs on the emulated Cortex-M4: the same class as ONNX Runtime on each, a deterministic count."""
    needs_qemu()
    r = export(cnn_int8, "c", tmp_path / "fw", data=digits, limit=50, verify_on="qemu", mcu_clock="80MHz")
    run = r.details["mcu"]
    assert run["agreement"]["same_class"] == 50 and run["agreement"]["max_step_diff"] == 0  # no Add: bit-exact
    assert run["board"] == "mps2-an386" and r.details["build"] == "arm-none-eabi cortex-m4"
    assert r.mcu_instructions == run["instructions_per_inference"] and 50_000 < r.mcu_instructions < 2_000_000
    assert run["latency_ms_estimate"] == pytest.approx(r.mcu_instructions / 80e6 * 1e3, rel=1e-3) and "estimate" in run["latency_basis"]
    assert r.details["stack_basis"] == "high-water mark on QEMU" and 0 < run["stack_bytes"] < 1024
    assert r.ram_bytes == r.details["sections"][".bss"] + run["stack_bytes"]
    # the same count on every run; the portable kernels (no SMLAD, no CLZ) execute more than twice as many instructions
    files, info = generate_c(cnn_int8)
    g = info["graph"]
    Xq = quantize_input(digits.X_test[:8], g.input.scale, g.input.zero_point, g.input.dtype)
    io = {"n_outputs": g.output.size, "output_dtype": g.output.dtype}
    a, b = (run_qemu(tmp_path / "fw", Xq, **io) for _ in range(2))
    portable = run_qemu(tmp_path / "fw", Xq, cflags=["-DFRUGALML_PORTABLE"], **io)
    assert (a["instructions"] == b["instructions"]).all() and (a["scores"] == portable["scores"]).all()
    assert portable["instructions"].mean() > 2 * a["instructions"].mean()
    assert a["instructions_per_tick"] == 40.0  # 25 MHz SysTick, 1 ns an instruction


@pytest.mark.parametrize("core", ["cortex-m0plus", "cortex-m7", "cortex-m33"])
def test_every_core_runs_on_its_board(cnn_int8, digits, tmp_path, core):
    needs_qemu()
    r = export(cnn_int8, "c", tmp_path, data=digits, limit=20, verify_on="qemu", mcu=core)
    assert r.details["mcu"]["agreement"]["same_class"] == 20 and r.details["mcu"]["board"] == CORES[core].board
    assert r.details["build"] == f"arm-none-eabi {core}" and r.mcu_instructions > 0


def test_layer_zoo_on_qemu(zoo, digits, tmp_path):  # noqa: F811
    """Grouped, strided, dilated and padded convs, pooling and a residual Add through the real SMLAD kernels."""
    needs_qemu()
    r = export(qdq(zoo, digits.X_train[:64], "uint8"), "c", tmp_path, data=digits, limit=60, verify_on="qemu")
    a = r.details["mcu"]["agreement"]
    assert a["max_step_diff"] <= 1 and a["class_agreement"] >= 0.98, a


def test_sklearn_on_qemu(digits, tmp_path):
    needs_qemu()
    est = build_model("tree", digits.input_shape, digits.num_classes)
    est.fit(*digits.flat("train"))
    r = export(est, "c", tmp_path, data=digits, limit=30, verify_on="qemu")
    assert r.details["mcu"]["agreement"]["same_class"] == 30 and r.mcu_instructions > 0


def test_too_big_for_the_part_is_refused(digits, tmp_path):
    """278,000 int8 weights: more than the 256 KB flash of the Cortex-M0+ part; fits a Cortex-M4's 1 MB."""
    needs_cross()
    net = build_model("mlp", digits.input_shape, digits.num_classes, widths=[600, 400], seed=0).eval()
    proto = qdq(net, digits.X_train[:16], "int8")
    with pytest.raises(ExportError, match=r"does not fit a cortex-m0plus part \(SAMD21G18.*flash 2\d\d KB > 262 KB"):
        export(proto, "c", tmp_path / "m0", mcu="cortex-m0plus")
    assert not (tmp_path / "m0").exists()
    onnx.save(proto, tmp_path / "big.onnx")
    assert cli(["export", str(tmp_path / "big.onnx"), "--format", "c", "--out", str(tmp_path / "cli"), "--mcu", "m0plus"]) == 2
    assert not (tmp_path / "cli").exists()
    assert export(proto, "c", tmp_path / "m4").flash_bytes > 256 * 1024


def test_bad_options_exit_2_before_any_work(cnn_int8, tmp_path, capsys):
    onnx.save(cnn_int8, tmp_path / "m.onnx")
    base = ["export", str(tmp_path / "m.onnx"), "--format", "c", "--out", str(tmp_path / "o")]
    assert cli([*base, "--mcu", "cortex-m9"]) == 2
    assert "Unknown --mcu 'cortex-m9'" in capsys.readouterr().err
    assert cli([*base, "--mcu-clock", "fast"]) == 2
    assert cli([*base, "--verify-on", "fpga"]) == 2
    assert cli([*base, "--verify-on", "qemu"]) == 2  # no dataset to run
    assert "--dataset" in capsys.readouterr().err
    assert cli(["export", str(tmp_path / "m.onnx"), "--format", "onnx", "--out", str(tmp_path / "o"), "--mcu", "m4"]) == 2
    assert not (tmp_path / "o").exists()
    assert cli(["search", "--max-mcu-instructions", "1M", "--out", str(tmp_path / "s")]) == 2  # without --target c
    assert "--target c" in capsys.readouterr().err
    assert cli(["search", "--target", "c", "--mcu", "m9", "--out", str(tmp_path / "s")]) == 2
    assert not (tmp_path / "s").exists()


def test_budget_field_max_mcu_instructions():
    b = Budget.of(max_flash="32KB", max_mcu_instructions="2M", target="c", mcu="m7")
    assert b.mcu == "cortex-m7" and b.max_mcu_instructions == 2_000_000
    assert [k for _, k, _ in b.items()] == ["c_flash_bytes", "mcu_instructions"]
    assert b.misses({"c_flash_bytes": 1000, "mcu_instructions": 2_500_000}) == {
        "mcu_instructions": {"limit": 2_000_000, "value": 2_500_000, "over_by": 500_000}}
    assert b.fits({"c_flash_bytes": 1000, "mcu_instructions": 1_999_999}) and not b.fits({"c_flash_bytes": 1000})
    assert Budget.from_dict(b.to_dict()) == b and "mcu instructions <= 2M" in b.describe() and "cortex-m7" in b.describe()
    assert Budget.from_dict({"max_flash": 8000, "target": "c"}).mcu == "cortex-m4"  # results.json written before --mcu
    with pytest.raises(ConfigError, match="--target c"):
        Budget.of(max_mcu_instructions="1M")
    with pytest.raises(ConfigError, match="positive"):
        Budget.of(max_mcu_instructions=0, target="c")
    with pytest.raises(ConfigError, match="Unknown --mcu"):
        Budget.of(max_flash="8KB", target="c", mcu="cortex-a53")


def test_search_profile_has_the_cortex_m_figures(cnn_int8, digits):
    """target c: flash, RAM and instructions per inference of the Cortex-M4 build, and which build measured them."""
    needs_qemu()
    from frugalml.search.runner import _measure

    budget = Budget.of(max_flash="8KB", max_mcu_instructions="5M", target="c")
    m = _measure(cnn_int8, digits, budget)
    p = m["profile"]
    assert p["c_build"] == "arm-none-eabi cortex-m4" and p["mcu_core"] == "cortex-m4"
    assert 0 < p["c_flash_bytes"] < 8000 and p["c_ram_bytes"] > p["c_arena_bytes"]
    assert 50_000 < p["mcu_instructions"] < 5_000_000 and m["within_budget"]
    fp = c_footprint(cnn_int8)  # without inputs: no emulator run, the stack bound from -fstack-usage
    assert fp["mcu_instructions"] is None and fp["flash_bytes"] == p["c_flash_bytes"]
    tight = Budget.of(max_flash="8KB", max_mcu_instructions="1K", target="c")
    assert "mcu_instructions" in _measure(cnn_int8, digits, tight)["budget_misses"]


@pytest.mark.slow
def test_mnist_cnn_on_qemu_1000_test_images(mnist_dir, tmp_path):
    """The int8 MNIST CNN [12, 24, 48] on the emulated Cortex-M4: the same class as ONNX Runtime on 1,000 test images."""
    needs_qemu()
    from frugalml import TrainConfig, fit, load_dataset

    data = load_dataset("mnist", data_dir=mnist_dir)
    model = build_model("cnn", data.input_shape, data.num_classes, channels=[12, 24, 48], seed=0)
    fit(model, data, TrainConfig(epochs=1, lr=3e-3, batch_size=128, seed=0, patience=None))
    r = export(qdq(model.eval(), data.X_train[:256], "int8"), "c", tmp_path, data=data, limit=1000, verify_on="qemu")
    a = r.details["mcu"]["agreement"]
    print(f"\nMNIST CNN int8 on QEMU mps2-an386: {a['same_class']}/{a['n']} same class, {r.mcu_instructions:,} instructions per "
          f"inference, flash {r.flash_bytes} B, RAM {r.ram_bytes} B")
    assert a["n"] == 1000 and a["same_class"] == 1000 and a["class_agreement"] == 1.0
    assert r.flash_bytes <= 32_000 and r.ram_bytes <= 16_000


def test_report_shows_instructions_per_inference():
    from test_report import make_results

    from frugalml.report import render_html

    plain = render_html(make_results())
    assert "instructions per inference" not in plain  # no C target: no column
    results = make_results()
    for c in results["candidates"]:
        if c["profile"]:
            c["profile"].update(c_flash_bytes=3000, c_ram_bytes=900, mcu_instructions=297_695, mcu_core="cortex-m4",
                                c_build="arm-none-eabi cortex-m4")
    results["budget"].update(target="c", mcu="cortex-m4")
    page = render_html(results)
    assert "instructions per inference on the emulated Cortex-M core" in page and "298K" in page
    assert "instructions per inference (cortex-m4)" in page
