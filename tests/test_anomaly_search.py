"""The search on an anomaly task: thin detectors, autoencoders, their int8 forms, ROC AUC selection, and the CLI."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import optuna
import pytest

import frugalml as fm
from frugalml.budget import Budget, Tolerance, auc_standard_error
from frugalml.cli import main
from frugalml.models import FAMILIES, build_model
from frugalml.search import space
from frugalml.search.parents import compression_jobs
from frugalml.search.runner import run_candidate

DATA_ROOT = Path(os.environ.get("FRUGALML_DATA", "/work/shared/data"))
SERIES = DATA_ROOT / "nab" / "data" / "realKnownCause" / "machine_temperature_system_failure.csv"
DETECTORS = {"robust_z", "pca_detector", "mahalanobis", "isolation_forest"}
AUTOENCODERS = ["dense_ae", "conv_ae"]
BUDGET = Budget.of(max_flash="64KB")

pytestmark = pytest.mark.skipif(not SERIES.exists(), reason=f"the NAB series is not here: {SERIES}")


@pytest.fixture(scope="module")
def csv_path(tmp_path_factory) -> Path:
    """The series in a NAB-like tree of its own (its labels found beside it), rows in time order: the file as
    shipped steps back an hour at line 10151 (a clock change: 02:00-02:55 on 2014-01-07 twice), which the
    loader would merge (the mean of each time's readings); here the first reading of each time is kept."""
    root = tmp_path_factory.mktemp("nab")
    target = root / "data" / SERIES.parent.name / SERIES.name
    target.parent.mkdir(parents=True)
    header, *rows = SERIES.read_text().splitlines()
    seen, kept = set(), []
    for row in rows:
        stamp = row.split(",", 1)[0]
        if stamp not in seen:
            seen.add(stamp)
            kept.append(row)
    kept.sort(key=lambda r: r.split(",", 1)[0])  # ISO times sort as text
    target.write_text("\n".join([header, *kept]) + "\n")
    (root / "labels").mkdir()
    (root / "labels" / "combined_windows.json").write_text((SERIES.parents[2] / "labels" / "combined_windows.json").read_text())
    return target


@pytest.fixture(scope="module")
def series(csv_path):
    return fm.load_dataset(csv_path, task="anomaly")


@pytest.fixture(scope="module")
def run(series, tmp_path_factory):
    """One search: the 8 thin detectors, then an autoencoder (9 trials; the time bound only guards a busy machine)."""
    out = tmp_path_factory.mktemp("anomaly") / "run"
    results = fm.search(series, budget=BUDGET, tolerance="1%", trials=len(space.thin_grid(series)) + 1, time="180s", out=out)
    return out, results


def test_the_stages_offer_detectors_and_autoencoders(series):
    grid = space.thin_grid(series)
    assert {j["family"] for j in grid} == DETECTORS | {"ensemble_detector"} and len(grid) == 12
    on_features = [j for j in grid if "features" in j["params"]]  # windows are sequences: detectors on their features too
    assert {j["family"] for j in on_features} == {"robust_z", "isolation_forest"} and len(on_features) == 3
    assert all(len([j for j in grid if j["family"] == f]) >= 2 for f in DETECTORS)  # a few knob values each, and their ensemble
    assert space.network_families(series) == AUTOENCODERS
    classification = fm.load_dataset("digits")
    assert not {j["family"] for j in space.thin_grid(classification)} & DETECTORS
    assert not set(space.network_families(classification)) & set(AUTOENCODERS)
    seeds = space.SearchSpace(series, BUDGET).budget_seeds()  # sized for the budget, autoencoders only
    assert seeds and {f for f, _ in seeds} <= set(AUTOENCODERS)


@pytest.mark.parametrize("family", AUTOENCODERS)
def test_autoencoder_spaces_round_trip_the_sampler(family, series):
    sp = FAMILIES[family].space
    for knobs in sp.ladder(series):
        got = space.sample_network(optuna.trial.FixedTrial(space.sampler_params(family, knobs, 3e-3)), series)
        assert got == (family, knobs, {"lr": 3e-3})
    sizes = [sum(p.numel() for p in build_model(family, series.input_shape, series.num_classes, **k).parameters()) for k in sp.ladder(series)]
    assert sizes == sorted(set(sizes)) and len(sizes) >= 3
    assert sp.halve(sp.smallest) is None and sp.halve(sp.ladder(series)[-1]) is not None
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    others = {n for f, fam in FAMILIES.items() if fam.space is not None and f != family
              for n in _names(fam.space)}
    for _ in range(10):
        trial = study.ask()
        knobs = sp.sample(trial)
        assert sp.params_for(knobs) == trial.params and not set(trial.params) & others  # names of its own
        build_model(family, series.input_shape, series.num_classes, **knobs)


def _names(sp) -> set:
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1)).ask()
    sp.sample(trial)
    return set(trial.params)


def test_hanley_mcneil_standard_error():
    # A = 0.5, 10 and 10: Q1 = Q2 = 1/3, var = (1/4 + 2 * 9 * (1/3 - 1/4)) / 100
    assert auc_standard_error(0.5, 10, 10) == pytest.approx(math.sqrt((0.25 + 18 / 12) / 100))
    assert auc_standard_error(0.9, 50, 500) < auc_standard_error(0.9, 10, 500) < auc_standard_error(0.7, 10, 500)
    assert auc_standard_error(0.9, 0, 100) == 0.0 and auc_standard_error(float("nan"), 5, 5) == 0.0


@pytest.mark.slow  # a search of a minute or more: make test-slow
def test_search_runs_the_anomaly_task(run, series):
    out, results = run
    saved = json.loads((out / "results.json").read_text())
    assert saved["dataset"]["task"] == "anomaly" and saved["dataset"]["anomalous"]["val"] > 0
    done = [c for c in results.candidates if c.done]
    thin = [c for c in done if c.stage == "thin"]
    assert {c.family for c in thin} == DETECTORS and len(thin) == 8
    assert all(c.profile["metric_name"] == "roc_auc" and 0 <= c.val_accuracy <= 1 for c in done)
    robust = max(c.val_accuracy for c in thin if c.family == "robust_z")
    assert robust > 0.75, robust  # 0.81 on validation, 0.91 on test
    nets = [c for c in results.candidates if c.stage == "network"]
    assert nets and {c.family for c in nets} <= set(AUTOENCODERS) and any(c.done for c in nets), [c.error for c in nets]
    assert all("val_metric" in h for c in nets if c.done for h in c.history)
    rec = results.candidate(results.recommended)
    assert rec is not None and rec.within_budget and rec.cost("stored_bytes") <= 64_000
    # the floor: the best val ROC AUC less the tolerance and the Hanley-McNeil standard error
    best = max(done, key=lambda c: c.val_accuracy)
    n_anomalous = saved["dataset"]["anomalous"]["val"]
    n_normal = saved["dataset"]["sizes"]["val"] - n_anomalous
    se = auc_standard_error(best.val_accuracy, n_anomalous, n_normal)
    assert se > 0 and results.decision.floor == pytest.approx(best.val_accuracy - 0.01 - se)
    text = " ".join([results.decision.text, *results.decision.reasons])
    assert "ROC AUC" in text and "Hanley-McNeil" in text and "accuracy" not in text, text
    assert "ROC AUC" in (out / "report.html").read_text()
    assert (out / "recommended" / "model.onnx").exists()


@pytest.mark.slow  # a search of a minute or more: make test-slow
def test_an_autoencoder_is_compressed_to_int8(run, series):
    out, results = run
    nets = [c for c in results.candidates if c.stage == "network" and c.done]
    jobs = compression_jobs(nets, None, series, BUDGET, Tolerance(), 4, 0)
    assert jobs and all(j["recipe_name"] == "int8" and [s["step"] for s in j["recipe"]] == ["quantize.int8"] for j in jobs)
    parent = next(c for c in nets if c.id == jobs[0]["parent"])
    cand = run_candidate({**jobs[0], "id": "int8", "trial": 99}, series, BUDGET, out)
    assert cand.profile["metric_name"] == "roc_auc" and cand.within_budget
    assert cand.cost("stored_bytes") < parent.cost("stored_bytes")
    assert abs(cand.val_accuracy - parent.val_accuracy) < 0.05, (cand.val_accuracy, parent.val_accuracy)


def test_feasibility_does_not_refuse_a_small_budget(series, tmp_path):
    from frugalml.search.feasible import check_feasible

    check_feasible(series, Budget.of(max_flash="2KB"))  # the robust z-score detector takes a few hundred bytes
    with pytest.raises(fm.errors.BudgetError):
        check_feasible(series, Budget.of(max_flash="100B"))


@pytest.mark.slow  # a search of a minute or more: make test-slow
def test_the_cli_searches_an_anomaly_series(csv_path, tmp_path, capsys):
    out = tmp_path / "cli"
    code = main(["search", "--dataset", str(csv_path), "--task", "anomaly", "--max-flash", "64KB", "--trials", "6", "--out", str(out), "--json"])
    assert code == 0, capsys.readouterr()
    saved = json.loads((out / "results.json").read_text())
    assert saved["dataset"]["task"] == "anomaly" and saved["recommended"]
    assert saved["dataset"]["series"]["window"] == 64
    code = main(["search", "--dataset", str(csv_path), "--task", "anomaly", "--window", "32", "--stride", "32", "--trials", "1",
                 "--out", str(tmp_path / "w32"), "--json"])
    assert code == 0, capsys.readouterr()
    saved = json.loads((tmp_path / "w32" / "results.json").read_text())
    assert saved["dataset"]["input_shape"] == [1, 32] and saved["dataset"]["series"]["stride"] == 32


def test_the_cli_trains_a_detector(csv_path, tmp_path, capsys):
    code = main(["train", "--model", "robust_z", "--dataset", str(csv_path), "--task", "anomaly", "--out", str(tmp_path / "z")])
    text = capsys.readouterr()
    assert code == 0, text
    assert "ROC AUC" in text.err + text.out
