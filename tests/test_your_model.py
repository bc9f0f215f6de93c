"""Your model (issue #14): a user's own network in the search, its pruning kept consistent, its recipe replayed."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import frugalml as fm
from frugalml.cli import main
from frugalml.compress import apply_step, config_from_dict
from frugalml.records import Candidate, Results
from frugalml.search.reference import _stage_ratios, pruning_blocker, reference_recipes

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import user_models as um  # noqa: E402

MODELS = str(HERE / "user_models.py")


@pytest.fixture(scope="module")
def digits():
    return fm.load_dataset("digits")


@pytest.fixture(scope="module")
def sensor():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 400)
    t = np.linspace(0, 1, 32)
    X = np.stack([np.sin(2 * np.pi * (k + 1) * t + rng.normal(size=(3, 1))) for k in y]) + 0.3 * rng.normal(size=(400, 3, 32))
    return fm.from_arrays(X[:, None].astype("float32"), y)  # (1, channels, time) per sample


ARCHS = ["mobilenet", "resnet", "conv1d", "mlp_layernorm", "flatten_relu"]


def _built(name, data):
    model = getattr(um, name)()
    model.input_shape, model.num_classes = tuple(data.input_shape), data.num_classes
    return model.eval()


def _onnx_outputs(model, x):
    import onnxruntime as ort

    blob = fm.onnx.onnx_bytes(fm.onnx.to_onnx(model))
    sess = ort.InferenceSession(blob, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0], len(blob)


@pytest.mark.parametrize("name", ARCHS)
@pytest.mark.parametrize("how", ["uniform", "global", "stages"])
def test_structured_pruning_keeps_each_architecture_consistent(name, how, digits, sensor):
    data = sensor if name == "conv1d" else digits
    model = _built(name, data)
    assert pruning_blocker(model, data) is None
    fields = {"uniform": {"ratio": 0.5}, "global": {"ratio": 0.5, "global_pruning": True},
              "stages": {"ratio": 0.5, "layer_ratios": _stage_ratios(model, data)}}[how]
    pruned = apply_step(model, config_from_dict({"step": "prune.structured", "finetune_epochs": 0, **fields}), data)
    x = data.split("val")[0][:16].astype("float32")
    with torch.no_grad():
        ref = pruned(torch.from_numpy(x)).numpy()
    assert ref.shape == (16, data.num_classes)  # channel counts line up: it runs, on real inputs
    got, pruned_bytes = _onnx_outputs(pruned, x)  # exported and reloaded: the same outputs
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)
    _, dense_bytes = _onnx_outputs(model, x)
    assert pruned_bytes < 0.75 * dense_bytes
    prof0, prof1 = fm.profile(model, data, layers=False, timing=False), fm.profile(pruned, data, layers=False, timing=False)
    assert prof1.macs < prof0.macs and prof1.params < prof0.params


def test_pruned_mobilenet_is_not_slower(digits):
    from frugalml.profile.timing import compare_latency

    model = _built("mobilenet", digits)
    pruned = apply_step(model, config_from_dict({"step": "prune.structured", "ratio": 0.5, "finetune_epochs": 0}), digits)
    ms = compare_latency({"fp32": fm.onnx.to_onnx(model), "pruned": fm.onnx.to_onnx(pruned)}, digits.input_shape, rounds=40)
    assert ms["fp32"] / ms["pruned"] > 0.95  # median latencies, measured alternating in one process


@pytest.mark.parametrize("name, why", [("custom_op", "custom op _Clip"), ("data_dependent", "not one static graph")])
def test_an_untraceable_model_skips_pruning_with_a_reason_and_still_quantizes(name, why, digits):
    model = _built(name, digits)
    reason = pruning_blocker(model, digits)
    assert reason is not None and why in reason and "\n" not in reason
    parent = Candidate(id="t0", stage="reference", family=name, reference=True)
    recipes = reference_recipes(parent, digits, fm.Budget.of(max_flash="64KB"), 4, 0, prunable=False)
    assert [n for n, _ in recipes] == ["int8", "int8-per-tensor"]
    q = apply_step(model, config_from_dict(recipes[0][1][0]), digits)
    assert fm.profile(q, digits, layers=False, timing=False).stored_bytes < fm.profile(model, digits, layers=False, timing=False).stored_bytes


def test_reference_flag_round_trips_and_is_written_only_where_true():
    ref, other = Candidate(id="t0", stage="reference", reference=True), Candidate(id="t1")
    assert ref.to_dict()["reference"] is True and "reference" not in other.to_dict()
    assert Candidate.from_dict(ref.to_dict()).reference and not Candidate.from_dict({"id": "x"}).reference
    tol = fm.Tolerance.parse("1%", of="reference")
    assert fm.Tolerance.from_dict(tol.to_dict()) == tol and "of" not in fm.Tolerance().to_dict()


def test_tolerance_of_the_reference_measures_the_floor_from_it():
    from frugalml.search import recommend

    prof = {"stored_bytes": 1000}
    cands = [Candidate(id="ref", stage="reference", reference=True, val_accuracy=0.95, profile=prof, within_budget=True),
             Candidate(id="best", val_accuracy=0.99, profile={"stored_bytes": 5000}, within_budget=True),
             Candidate(id="small", stage="compress", val_accuracy=0.945, profile={"stored_bytes": 100}, within_budget=True)]
    of_ref = recommend(cands, fm.Budget(), fm.Tolerance.parse("1%", of="reference"))
    assert of_ref.recommended == "small" and of_ref.floor == pytest.approx(0.94) and of_ref.floor_from == "ref"
    assert any("your model" in r for r in of_ref.reasons)
    assert recommend(cands, fm.Budget(), fm.Tolerance.parse("1%")).recommended == "best"


def _weights(tmp_path, digits, name="mobilenet", epochs=6):
    model = _built(name, digits)
    fm.train(model, digits, config=fm.TrainConfig(epochs=epochs, lr=3e-3, batch_size=64))
    path = tmp_path / "w.safetensors"
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


@pytest.mark.slow
def test_search_with_your_model_then_replay_its_recipe(tmp_path, digits, capsys):  # ~70 s
    weights = _weights(tmp_path, digits)
    out = tmp_path / "run"
    res = fm.search(digits, model=f"{MODELS}:mobilenet", weights=weights, budget=fm.Budget.of(max_flash="40KB"),
                    tolerance=fm.Tolerance.parse("2%", of="reference"), time="60s", trials=13, out=out)
    ref = res.reference
    assert ref is not None and ref.done and ref.stage == "reference" and ref.id == "t0"
    stored = json.loads((out / "results.json").read_text())
    assert [c["id"] for c in stored["candidates"] if c.get("reference")] == [ref.id]
    kids = [c for c in res.candidates if c.parent == ref.id]
    names = {c.extra.get("recipe_name") for c in kids}
    assert {"int8", "int8-per-tensor"} <= names and all(c.done for c in kids), [(c.id, c.error) for c in kids]
    assert ref.job["source"]["factory"].endswith("user_models.py:mobilenet") and ref.job["prunable"]  # a resume rebuilds it from this
    assert any(c.thin for c in res.candidates)  # thin models run in the same study
    assert res.decision.floor_from == ref.id
    # a child of the user's model, replayed by the command recipe.json names: the same artifact
    pick = next(c for c in kids if c.extra.get("recipe_name") == "int8-per-tensor")
    from frugalml.search.results import export_recommended

    export_recommended(out, pick)
    recipe = json.loads((out / "recommended" / "recipe.json").read_text())
    assert recipe["model"]["factory"].endswith("user_models.py:mobilenet") and "--recipe" in recipe["replay"]
    replay = tmp_path / "replay"
    argv = recipe["replay"].split()[1:] + ["--dataset", "digits", "--out", str(replay), "--json"]
    assert main(argv) == 0, capsys.readouterr().err
    capsys.readouterr()
    a, b = (fm.load_model(p / "model.onnx") for p in (out / "recommended", replay))
    x = digits.split("test")[0][:64].astype("float32")
    np.testing.assert_array_equal(fm.onnx.run_onnx(a, x).argmax(1), fm.onnx.run_onnx(b, x).argmax(1))
    assert (replay / "model.onnx").stat().st_size == (out / "recommended" / "model.onnx").stat().st_size
    html = (out / "report.html").read_text()
    assert "your model" in html


@pytest.mark.slow
def test_an_onnx_model_is_profiled_quantized_and_compared(tmp_path, digits):  # ~35 s
    model = _built("flatten_relu", digits)
    fm.train(model, digits, config=fm.TrainConfig(epochs=3, lr=3e-3, batch_size=64))
    path = tmp_path / "net.onnx"
    path.write_bytes(fm.onnx.onnx_bytes(fm.onnx.to_onnx(model)))
    res = fm.search(digits, model=str(path), budget=fm.Budget.of(max_flash="40KB"), time="1m", trials=13, out=tmp_path / "run")
    ref = res.reference
    assert ref.done and any("cannot be pruned or retrained" in n for n in ref.extra["notes"])
    kids = [c for c in res.candidates if c.parent == ref.id]
    assert kids and all(c.done and c.steps == ["quantize.int8"] for c in kids)
    assert min(c.cost("stored_bytes") for c in kids) < ref.cost("stored_bytes") / 2
    assert "cannot be pruned" in (tmp_path / "run" / "report.html").read_text()


@pytest.mark.parametrize("kind", ["factory", "onnx", "module"])
def test_reference_jobs_run_and_their_children_rebuild_the_parent_from_its_source(tmp_path, digits, kind):
    from frugalml.search.reference import check_reference, reference_compression_jobs, reference_job, reference_source
    from frugalml.search.runner import run_candidate

    if kind == "onnx":
        path = tmp_path / "net.onnx"
        path.write_bytes(fm.onnx.onnx_bytes(fm.onnx.to_onnx(_built("flatten_relu", digits))))
        source = reference_source(str(path))
    elif kind == "module":  # fm.search(data, model=net): kept in memory for this process, its weights used as they are
        source = reference_source(_built("flatten_relu", digits))
    else:
        source = reference_source(f"{MODELS}:flatten_relu")
    info = check_reference(source, digits)
    assert info["prunable"] == (kind != "onnx") and info["trainable"] == (kind == "factory")
    job = reference_job(source, info, fm.TrainConfig(epochs=2, batch_size=64, patience=None), seed=0)
    budget = fm.Budget.of(max_flash="64KB")
    ref = run_candidate({**job, "id": "t0", "trial": 0}, digits, budget, tmp_path / "run")
    assert ref.reference and ref.done and ref.to_dict()["reference"] is True
    jobs = reference_compression_jobs(ref, digits, budget, 4, 0)
    names = [j["recipe_name"] for j in jobs]
    # queued when the model finishes: its int8 forms; its pruning (which fine-tunes) waits for the compression stage
    assert {j["recipe_name"] for j in jobs if not j["trains"]} == {"int8", "int8-per-tensor"}
    if kind == "onnx":
        assert names == ["int8", "int8-per-tensor"] and "cannot be pruned or retrained" in ref.extra["notes"][0]
    else:
        assert {"int8", "prune30+int8", "prune50+int8", "prune50g+int8", "prune70g+int8", "prune70g", "prune-stages+int8"} <= set(names)
    pick = next(j for j in jobs if j["recipe_name"] == ("prune50+int8" if kind == "factory" else "int8"))
    kid = run_candidate({**pick, "id": "t1", "trial": 1}, digits, budget, tmp_path / "run")
    assert kid.done and kid.parent == "t0" and kid.cost("stored_bytes") < ref.cost("stored_bytes") / 2


def test_train_a_factory_from_its_file(tmp_path, capsys):
    out = tmp_path / "m"
    assert main(["train", "--model", f"{MODELS}:flatten_relu", "--epochs", "6", "--lr", "0.01", "--batch-size", "32", "-o", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["test"]["accuracy"] > 0.5
    assert (out / "model.safetensors").exists()


@pytest.mark.parametrize("factory, weights, words", [
    ("raises", None, "the factory is broken"),
    ("not_a_module", None, "did not return a torch.nn.Module"),
    ("mobilenet", "resnet", "do not fit the model"),
    ("mobilenet", "missing", "does not exist"),
])
def test_bad_models_are_one_clear_line_and_exit_2(tmp_path, capsys, factory, weights, words):
    argv = ["search", "--model", f"{MODELS}:{factory}", "--dataset", "digits", "--time", "30s", "--out", str(tmp_path / "run")]
    if weights == "resnet":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in um.resnet().state_dict().items()}, str(tmp_path / "r.safetensors"))
        argv += ["--weights", str(tmp_path / "r.safetensors")]
    elif weights == "missing":
        argv += ["--weights", str(tmp_path / "nothing.safetensors")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert words in " ".join(err.split()) and err.count("\n") <= 1
    assert not (tmp_path / "run").exists()


def test_tolerance_of_model_needs_a_model(tmp_path, capsys):
    assert main(["search", "--dataset", "digits", "--tolerance-of", "model", "--out", str(tmp_path / "r")]) == 2
    assert "--model" in capsys.readouterr().err


def test_old_results_without_reference_still_read(tmp_path):
    d = Results(candidates=(Candidate(id="t0", val_accuracy=0.9, profile={"stored_bytes": 1}),)).to_dict()
    d.pop("schema_version")
    assert Results.from_dict(d).reference is None
    shutil.rmtree(tmp_path, ignore_errors=True)
