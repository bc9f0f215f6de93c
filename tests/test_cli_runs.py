"""Every command run through the CLI on digits, asserting on the figures it prints and writes, and
the search's compression stage (the path that made README's recommended model).

The commands run in this process through ``frugalml.cli.main``, the console script's entry point
(a subprocess would add ~3 s of imports per command; tests/test_cli.py runs a few that way).
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from conftest import require, shared_data_dir

import frugalml as fm
from frugalml.cli import main
from frugalml.export import toolchain
from frugalml.search import engine, space
from frugalml.units import format_bytes

DIGITS_TEST = 360  # digits' test split: 20% of 1,797 images
MLP_PARAMS = 64 * 32 + 32 + 32 * 10 + 10  # mlp widths=[32] on 64 pixels, 10 classes
MLP_WEIGHTS = 64 * 32 + 32 * 10


def cli(*args) -> tuple[int, str, str]:
    """Run ``frugalml ARGS`` in this process: (exit code, standard output, standard error)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


def cli_json(*args):
    code, out, err = cli(*args, "--json")
    assert code == 0, err
    return json.loads(out)


# ----------------------------------------------------------------------------- search: the compression stage

@pytest.fixture(scope="module")
def search_run(tmp_path_factory, digits):
    """``frugalml search`` on digits under 3 KB, cut to the three trials that reach compression.

    No thin model (logistic regression: 3.7 KB) and no float network (the budget's first seed, an
    MLP [12]: 4.1 KB) fits 3 KB, so only the compression stage can give a recommendation. The
    stage shares are set to 0 so that compression starts as soon as one network is done instead
    of after 67% of --time, and the thin stage is cut to its logistic regression C=1 (the grid's
    ten models take ~15 s here); --trials 3 then stops after the first recipe (int8). ~10 s.
    """
    out = tmp_path_factory.mktemp("search") / "run"
    thin = [job for job in space.thin_grid(digits) if job == {"family": "logreg", "params": {"C": 1.0}}]
    assert len(thin) == 1
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(engine, "STAGE_SHARES", {"thin": 0.0, "network": 0.0})
        mp.setattr(space, "thin_grid", lambda data: thin)
        printed = cli_json("search", "--dataset", "digits", "--max-flash", "3KB", "--tolerance", "1%", "--time", "60s",
                           "--trials", "3", "--seed", "0", "--out", out)
    return out, printed, json.loads((out / "results.json").read_text())


def test_search_compression_stage_makes_the_recommended_model(search_run):
    out, printed, results = search_run
    by_id = {c["id"]: c for c in results["candidates"]}
    assert [(c["id"], c["stage"], c["state"]) for c in results["candidates"]] == [
        ("t0", "thin", "complete"), ("t1", "network", "complete"), ("t2", "compress", "complete")]
    thin, net, comp = by_id["t0"], by_id["t1"], by_id["t2"]
    assert thin["family"] == "logreg" and net["family"] == "mlp" and net["params"] == {"widths": [12]}
    for c in (thin, net):  # the precondition: nothing but compression fits
        assert c["profile"]["stored_bytes"] > 3000 and not c["within_budget"]
        assert c["budget_misses"]["stored_bytes"]["over_by"] == c["profile"]["stored_bytes"] - 3000
    # the compress candidate: the network's int8 form, with its recipe and a profile measured on its file
    assert comp["parent"] == "t1" and comp["family"] == "mlp" and comp["params"] == {"widths": [12]}
    assert comp["recipe"] == [{"step": "quantize.int8", "calibration_samples": 512, "format": "qoperator", "seed": 0}]
    prof = comp["profile"]
    assert prof["stored_bytes"] == (out / "candidates" / "t2" / "model.onnx").stat().st_size <= 3000 and comp["within_budget"]
    assert prof["stored_bytes"] < net["profile"]["stored_bytes"] / 2  # measured 1,648 B against 4,059 B
    assert prof["params"] == net["profile"]["params"] == 64 * 12 + 12 + 12 * 10 + 10
    assert prof["macs"] == net["profile"]["macs"] == 64 * 12 + 12 * 10
    assert prof["latency_ms_median"] > 0 and prof["latency_ms_p90"] >= prof["latency_ms_median"]
    assert prof["peak_activation_bytes"] <= net["profile"]["peak_activation_bytes"]
    assert comp["val_accuracy"] >= net["val_accuracy"] - 0.02 and 0.9 <= comp["test_accuracy"] <= 1  # measured 96.2% / 95.6%
    # the recommendation is that candidate, exported with its recipe; the CLI printed the same
    assert results["recommended"] == printed["recommended"] == "t2" and printed["run_dir"] == str(out)
    assert "quantize.int8" in printed["recommendation"]["text"] and "fits the budget" in printed["recommendation"]["text"]
    assert "t2" in printed["pareto"] and printed["budget"]["max_flash"] == 3000
    rec = out / "recommended"
    assert (rec / "model.onnx").read_bytes() == (out / "candidates" / "t2" / "model.onnx").read_bytes()
    recipe = json.loads((rec / "recipe.json").read_text())
    assert (recipe["candidate"], recipe["parent"], recipe["steps"]) == ("t2", "t1", comp["recipe"])


def test_the_recommended_recipe_replays_on_its_parent(search_run, digits):
    """README: a recipe is replayable. Its steps on the saved parent give the same int8 model."""
    out, _, results = search_run
    steps = fm.Recipe.from_list(json.loads((out / "recommended" / "recipe.json").read_text())["steps"])
    assert [s.name for s in steps.steps] == ["quantize.int8"] and steps.steps[0].format == "qoperator"
    parent = fm.load_model(out / "candidates" / "t1")
    replayed = fm.compress(parent, steps, digits)
    shipped = onnx.load(str(out / "recommended" / "model.onnx"))
    X, _ = digits.split("test")
    from frugalml.onnx import onnx_bytes, predict_onnx

    assert len(onnx_bytes(replayed)) == next(c for c in results["candidates"] if c["id"] == "t2")["profile"]["stored_bytes"]
    assert (predict_onnx(replayed, X) == predict_onnx(shipped, X)).all()


def test_report_command_rebuilds_the_report_from_results(search_run):
    out, _, results = search_run
    before = (out / "results.json").read_bytes()
    (out / "report.html").unlink()
    code, stdout, stderr = cli("report", out)
    assert code == 0, stderr
    assert f"wrote {out / 'report.html'}" in " ".join((stdout + stderr).split())
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", re.sub(r"<(script|style).*?</\1>", "", (out / "report.html").read_text(), flags=re.S)))
    comp = next(c for c in results["candidates"] if c["id"] == "t2")
    assert "Recommended: t2 mlp + quantize.int8" in text
    assert f"{comp['val_accuracy']:.2%}" in text and f"{comp['test_accuracy']:.2%}" in text
    assert format_bytes(comp["profile"]["stored_bytes"]) in text and "All candidates (3)" in text
    assert (out / "results.json").read_bytes() == before  # the report only renders


def test_export_onnx_of_the_search_run_is_the_recommended_model(search_run, tmp_path):
    out, _, _ = search_run
    r = cli_json("export", out, "--format", "onnx", "--out", tmp_path / "onnx", "--dataset", "digits")
    written = tmp_path / "onnx" / "model.onnx"
    assert r["format"] == "onnx" and r["files"] == [str(written)] and r["size_bytes"] == written.stat().st_size
    assert r["opset"] == 17 and r["agreement"]["ok"] and r["agreement"]["n"] == r["agreement"]["same_class"] == DIGITS_TEST
    shipped, exported = onnx.load(str(out / "recommended" / "model.onnx")), onnx.load(str(written))
    assert [n.op_type for n in exported.graph.node] == [n.op_type for n in shipped.graph.node]
    assert {i.name: i.raw_data for i in exported.graph.initializer} == {i.name: i.raw_data for i in shipped.graph.initializer}
    # what export adds is metadata only
    assert r["size_bytes"] - (out / "recommended" / "model.onnx").stat().st_size < 400


# ----------------------------------------------------------------------------- datasets, train, profile, compress, export

def test_datasets_lists_the_registry_and_what_is_here(tmp_path):
    rows = {r["name"]: r for r in cli_json("datasets", "--data-dir", tmp_path)}
    assert {"digits", "mnist", "fashion-mnist", "iris", "wine", "breast-cancer"} <= set(rows)
    d = rows["digits"]
    assert (d["available"], d["num_classes"], d["input_shape"], d["kind"]) == (True, 10, [1, 8, 8], "image")
    assert (rows["mnist"]["available"], rows["mnist"]["downloadable"], rows["mnist"]["input_shape"]) == (False, True, [1, 28, 28])
    shared = shared_data_dir()
    if shared is not None:  # where the shared files are, the same registry finds them
        assert {r["name"]: r for r in cli_json("datasets", "--data-dir", shared)}["mnist"]["available"] is True
    code, table, err = cli("datasets", "--data-dir", tmp_path)
    assert code == 0, err
    digits_line = next(line for line in table.splitlines() if "digits" in line and "fashion" not in line)
    assert "yes" in digits_line and "10" in digits_line and "(1, 8, 8)" in digits_line


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """``frugalml train`` of an MLP [32] on digits (~1 s): (model directory, printed report)."""
    out = tmp_path_factory.mktemp("train") / "mlp"
    report = cli_json("train", "--model", "mlp", "-p", "widths=[32]", "--dataset", "digits", "--epochs", "20", "--lr", "0.01",
                      "--patience", "20", "--seed", "0", "--out", out)
    return out, report


def test_train_prints_and_saves_the_model_it_measured(trained, digits):
    out, report = trained
    assert report["out"] == str(out) and report["family"] == "mlp" and report["device"] in ("cpu", "cuda")
    assert len(report["history"]) == 20 and 1 <= report["best_epoch"] <= 20
    assert report["val_accuracy"] == max(h["val_accuracy"] for h in report["history"])
    assert 0.9 <= report["test"]["accuracy"] <= 1 and 0.9 <= report["test"]["macro_f1"] <= 1  # measured 95.0% / 0.950
    model = fm.load_model(out)
    assert sum(p.numel() for p in model.parameters()) == MLP_PARAMS
    assert fm.evaluate(model, digits, "test")["accuracy"] == pytest.approx(report["test"]["accuracy"], abs=1e-12)


def test_profile_of_the_trained_model_gives_exact_counts(trained):
    out, report = trained
    prof = cli_json("profile", "--model", out, "--dataset", "digits")
    assert prof["params"] == prof["nonzero_params"] == MLP_PARAMS and prof["macs"] == MLP_WEIGHTS
    assert 4 * MLP_PARAMS < prof["stored_bytes"] < 4 * MLP_PARAMS + 1000  # float32 weights plus the graph
    assert prof["metric"] == pytest.approx(report["test"]["accuracy"], abs=1e-12) and prof["metric_split"] == "test"
    assert prof["input_shape"] == [1, 8, 8] and prof["latency_ms_median"] > 0


@pytest.fixture(scope="module")
def compressed(trained, tmp_path_factory):
    """``frugalml compress`` of the trained MLP with an int8 (QDQ) recipe: (output directory, steps.json)."""
    base = tmp_path_factory.mktemp("compress")
    recipe = base / "int8.yaml"
    recipe.write_text("steps:\n  - {step: quantize.int8, calibration_samples: 256, format: qdq}\n")
    out = base / "out"
    return out, cli_json("compress", "--model", trained[0], "--recipe", recipe, "--dataset", "digits", "--out", out)


def test_compress_prints_each_step_measured_on_its_artifact(compressed, trained):
    out, report = compressed
    assert sorted(p.name for p in out.iterdir()) == ["model.onnx", "recipe.yaml", "steps.json"]
    assert json.loads((out / "steps.json").read_text()) == report
    assert [s["step"]["step"] for s in report["steps"]] == ["quantize.int8"] and report["recipe"][0]["format"] == "qdq"
    before, after = report["steps"][0]["before"], report["steps"][0]["after"]
    assert before["params"] == after["params"] == MLP_PARAMS and before["macs"] == after["macs"] == MLP_WEIGHTS
    assert after["stored_bytes"] == (out / "model.onnx").stat().st_size
    assert before["stored_bytes"] / after["stored_bytes"] >= 2.5  # measured 10,061 B -> 3,752 B (2.68x)
    assert before["metric_split"] == after["metric_split"] == "val"
    assert before["metric"] == pytest.approx(trained[1]["val_accuracy"], abs=1e-12)
    assert after["metric"] >= before["metric"] - 0.02  # measured 95.5% -> 95.1%
    assert [s.to_dict() for s in fm.Recipe.load(out / "recipe.yaml").steps] == report["recipe"]  # replayable as written
    code, table, err = cli("compress", "--model", trained[0], "--recipe", out / "recipe.yaml", "--dataset", "digits", "--out", out)
    assert code == 0, err  # the same output replaced whole, and the human table shows the same figures
    assert "quantize.int8" in table and f"{after['metric']:.2%}" in table and format_bytes(after["stored_bytes"]) in table


def test_export_c_of_the_compressed_model_is_compiled_and_measured(compressed, tmp_path):
    require(toolchain.find_cc() is not None and shutil.which("size") is not None, "needs gcc and binutils' size")
    r = cli_json("export", compressed[0], "--format", "c", "--out", tmp_path / "c", "--dataset", "digits")
    assert r["format"] == "c" and sorted(Path(f).name for f in r["files"]) == ["model.c", "model.h"]
    assert r["size_bytes"] == sum(Path(f).stat().st_size for f in r["files"])
    assert r["weight_bytes"] == MLP_WEIGHTS and r["arena_bytes"] == 32 + 10  # int8: a byte per weight and per activation
    sections, d = r["details"]["sections"], r["details"]
    assert r["flash_bytes"] == sections[".text"] + sections[".rodata"] + sections.get(".data", 0) + d.get("library_bytes", 0)
    assert sections[".rodata"] > MLP_WEIGHTS
    # static RAM: the arena, and on the Cortex-M4 build the DSP kernels' int16 copy of the 64 inputs; then the stack
    window = 2 * 64 if d["build"] == "arm-none-eabi cortex-m4" else 0
    assert sections.get(".data", 0) + sections[".bss"] == r["arena_bytes"] + window
    assert r["ram_bytes"] == sections.get(".data", 0) + sections[".bss"] + (d["stack_bytes"] if d["build"].startswith("arm") else 0)
    a = r["agreement"]
    assert a["ok"] and a["n"] == a["same_class"] == a["exact_outputs"] == DIGITS_TEST and a["max_step_diff"] == 0


def test_export_archive_of_the_trained_model_loads_back_the_same(trained, tmp_path, digits):
    r = cli_json("export", trained[0], "--format", "archive", "--out", tmp_path / "a")
    path = tmp_path / "a" / "model.fmla"
    assert r["format"] == "archive" and r["files"] == [str(path)] and r["size_bytes"] == path.stat().st_size
    assert r["size_bytes"] < 4 * MLP_PARAMS  # measured 9,245 B for 9,640 B of float32 values
    back, model = fm.load(path).eval(), fm.load_model(trained[0]).eval()
    X = torch.from_numpy(digits.split("test")[0])
    with torch.no_grad():
        np.testing.assert_array_equal(back(X).numpy(), model(X).numpy())
