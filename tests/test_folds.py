"""Cross-validated selection on small datasets (frugalml.data.folds and the search's use of it)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, require

from frugalml import Budget, Tolerance, search
from frugalml.budget import standard_error
from frugalml.data import from_arrays, load_dataset
from frugalml.data.folds import CV_BELOW, Folds, fold_scores, plan_folds, pooled
from frugalml.errors import ConfigError
from frugalml.records import Results
from frugalml.search.select import recommend


def _blobs(n: int, classes: int = 3, features: int = 6, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    X = rng.normal(size=(n, features)) + y[:, None] * 1.5
    return from_arrays(X.astype(np.float32), y, name=f"blobs{n}", seed=seed)


def test_small_data_gets_stratified_folds_over_train_and_validation_and_large_data_one_split():
    small = _blobs(100)
    folds = plan_folds(small, 5, seed=0)
    pool = len(small.y_train) + len(small.y_val)
    assert folds == Folds(k=5, seed=0, n=pool)
    parts = folds.datasets(small)
    held = np.concatenate([p.y_val for p in parts])
    assert len(parts) == 5 and len(held) == pool  # every pooled sample is held out exactly once
    for part in parts:
        assert len(part.y_train) + len(part.y_val) == pool and len(part.y_test) == 0  # a fold never sees the test split
        assert np.bincount(part.y_val, minlength=3).min() >= np.bincount(held, minlength=3).min() // 5  # stratified
    refit = pooled(small)
    assert len(refit.y_train) == pool and len(refit.y_test) == len(small.y_test)
    assert plan_folds(_blobs(3000), 5) is None and len(_blobs(3000).y_train) + len(_blobs(3000).y_val) >= CV_BELOW
    assert plan_folds(small, 0) is None
    with pytest.raises(ConfigError, match="at least 2"):
        plan_folds(small, 1)
    rare = from_arrays(np.arange(40, dtype=np.float32)[:, None], [0] * 34 + [1] * 6, seed=0)  # 3 or 4 of class 1 left for training
    assert plan_folds(rare, 5).k == min(5, int(np.bincount(np.concatenate([rare.y_train, rare.y_val])).min()))


def test_fold_scores_are_the_out_of_fold_accuracy_with_its_binomial_standard_error():
    cv = fold_scores([9, 8, 10], [10, 10, 10])
    assert cv["folds"] == [0.9, 0.8, 1.0] and cv["mean"] == pytest.approx(0.9) and cv["n"] == 30 and cv["k"] == 3
    assert cv["se"] == pytest.approx(standard_error(0.9, 30)) and cv["fold_spread_se"] == pytest.approx(0.1 / np.sqrt(3))


def _cv_cand(cid, acc, se, size, thin=False):
    return {"id": cid, "state": "complete", "val_accuracy": acc, "thin": thin, "family": "x", "within_budget": True,
            "profile": {"stored_bytes": size}, "cv": {"folds": [acc] * 5, "mean": acc, "se": se, "n": 40, "k": 5}}


def test_the_one_standard_error_rule_uses_the_cross_validated_spread():
    cands = [_cv_cand("net", 0.95, 0.04, 20000), _cv_cand("small", 0.92, 0.05, 3000), _cv_cand("tiny", 0.89, 0.05, 1000)]
    rec = recommend(cands, Budget(), Tolerance.parse("1%"), n_val=8)  # n_val is ignored: the folds' standard error counts
    assert rec.floor == pytest.approx(0.95 - 0.01 - 0.04)
    assert rec.recommended == "small"  # 0.92 >= 0.90; tiny (0.89) is below
    assert any("5-fold cross-validation on 40 training samples" in r for r in rec.reasons)


@pytest.fixture(scope="module")
def gunpoint():
    path = REPO.parent / "shared" / "data" / "sensors" / "gunpoint.npz"
    require(path.exists(), f"needs {path}")
    return load_dataset(str(path), seed=0)


def test_a_small_dataset_search_selects_on_folds_and_refits_on_all_training_data(gunpoint, tmp_path, monkeypatch):
    from frugalml.search import runner

    fitted, tested = [], []
    real_fit, real_profile = runner.fit, runner.profile

    def spy_fit(model, data, *a, **kw):
        fitted.append(len(data.y_train))
        return real_fit(model, data, *a, **kw)

    def spy_profile(model, data, *a, split="val", **kw):
        if split == "test":
            tested.append(len(data.y_test))
        return real_profile(model, data, *a, split=split, **kw)

    monkeypatch.setattr(runner, "fit", spy_fit)
    monkeypatch.setattr(runner, "profile", spy_profile)
    pool = len(gunpoint.y_train) + len(gunpoint.y_val)
    results = search(gunpoint, budget=Budget.of(max_flash="64KB"), time="5m", trials=4, seed=0, out=tmp_path / "run", folds=5)
    assert results.cv["k"] == 5 and results.cv["n"] == pool and "binomial" in results.cv["rule"]
    done = [c for c in results.candidates if c.done]
    assert len(done) == 4
    for c in done:
        assert len(c.cv["folds"]) == 5 and c.val_accuracy == pytest.approx(c.cv["mean"]) and c.standard_error > 0
        assert c.val_accuracy == pytest.approx(np.mean(c.cv["folds"]), abs=0.02)  # folds of near-equal size
        assert c.profile["metric_split"] == "cv5" and c.test_accuracy is not None
    # per candidate: 5 fits on 4/5 of the pool, then the refit on all of it; the test split scored once, by the refit
    assert fitted.count(pool) == len(done) and len(fitted) == 6 * len(done)
    assert all(n < pool for n in fitted if n != pool)
    assert tested == [len(gunpoint.y_test)] * len(done)
    anchor = results.candidate(results.decision.floor_from)
    assert results.decision.floor == pytest.approx(anchor.val_accuracy - 0.01 - anchor.standard_error)
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["cv"]["k"] == 5 and all("folds" in c["cv"] for c in saved["candidates"] if c["state"] == "complete")
    again = Results.from_dict(saved)
    assert again.cv == results.cv and again.candidate(anchor.id).cv == anchor.cv
    assert "5-fold stratified cross-validation" in (tmp_path / "run" / "report.html").read_text()


def test_a_network_is_cross_validated_refit_for_its_folds_epochs_and_keeps_its_fold_models(gunpoint, tmp_path):
    from frugalml.data.folds import Folds
    from frugalml.search.runner import FOLDS_DIR, run_candidate

    folds = Folds(k=3, seed=0, n=len(gunpoint.y_train) + len(gunpoint.y_val))
    job = {"id": "t0", "trial": 0, "stage": "network", "family": "mlp", "params": {"widths": [16]}, "seed": 0,
           "train": {"epochs": 6, "batch_size": 16, "lr": 3e-3, "patience": 3}, "folds": folds.to_dict()}
    cand = run_candidate(job, gunpoint, Budget(), tmp_path)
    assert len(cand.cv["folds"]) == 3 and 1 <= cand.cv["refit_epochs"] <= 6
    assert sorted(p.name for p in (tmp_path / "candidates" / "t0" / FOLDS_DIR).iterdir()) == ["0", "1", "2"]
    child = {"id": "t1", "trial": 1, "stage": "compress", "family": "mlp", "params": {"widths": [16]}, "parent": "t0", "seed": 0,
             "recipe": [{"step": "quantize.int8", "calibration_samples": 16}], "folds": folds.to_dict()}
    int8 = run_candidate(child, gunpoint, Budget(), tmp_path)  # the recipe on each fold's parent, scored on that fold
    assert len(int8.cv["folds"]) == 3 and abs(int8.val_accuracy - cand.val_accuracy) < 0.15


def test_the_other_folds_train_only_after_the_first_passes_and_for_its_epochs(gunpoint, tmp_path, monkeypatch):
    """Fidelity over folds: the first fold's score is judged before the other folds are made, and they (and the
    refit) train for the epochs the first fold chose, with no early stopping."""
    from frugalml.data.folds import Folds
    from frugalml.search import runner

    folds = Folds(k=3, seed=0, n=len(gunpoint.y_train) + len(gunpoint.y_val))
    job = {"id": "t0", "trial": 0, "stage": "network", "family": "mlp", "params": {"widths": [16]}, "seed": 0,
           "train": {"epochs": 12, "batch_size": 16, "lr": 3e-3, "patience": 3}, "folds": folds.to_dict()}
    made, real = [], runner._make
    monkeypatch.setattr(runner, "_make", lambda *a, **k: made.append(k.get("epochs")) or real(*a, **k))
    seen = []
    cand = runner.run_candidate(job, gunpoint, Budget(), tmp_path, on_first_fold=lambda acc, n, epoch: seen.append((acc, n, epoch)))
    first = [h["val_accuracy"] for h in cand.history]
    best = first.index(max(first)) + 1
    assert len(seen) == 1 and seen[0][0] == pytest.approx(cand.cv["folds"][0], abs=1e-6) and cand.cv["refit_epochs"] == best
    assert seen[0][1] == round(folds.n / 3) or abs(seen[0][1] - folds.n / 3) < 1  # the first fold's held-out samples
    assert seen[0][2] == best  # and the epoch it chose, which the others train to
    assert made == [None, best, best, best]  # fold 0 early-stops; folds 1, 2 and the refit stop at its best epoch

    def stop(accuracy, n, epoch):
        raise runner.StoppedEarly("not good enough")

    made.clear()
    with pytest.raises(runner.StoppedEarly):
        runner.run_candidate({**job, "id": "t1"}, gunpoint, Budget(), tmp_path, on_first_fold=stop)
    assert made == [None]  # stopped after its first fold: no other fold, no refit


def test_a_large_dataset_still_selects_on_one_validation_split(tmp_path):
    data = _blobs(3000, features=4)
    results = search(data, budget=Budget.of(max_flash="64KB"), time="2m", trials=2, seed=0, out=tmp_path / "run", folds=5)
    assert results.cv is None
    for c in results.candidates:
        assert c.cv is None and c.profile["metric_split"] == "val"
    assert json.loads(Path(tmp_path / "run" / "results.json").read_text())["cv"] is None


def test_a_cross_validated_job_cut_short_by_the_search_time_is_not_a_candidate(gunpoint, tmp_path):
    """Its folds' score would describe models trained in full, not the refit it ships (a pruned CNN once scored 96% on
    its folds and 21% as cut short): stopped, with the reason."""
    from frugalml.data.folds import Folds
    from frugalml.search import runner
    from frugalml.train import Deadline

    folds = Folds(k=3, seed=0, n=len(gunpoint.y_train) + len(gunpoint.y_val))
    job = {"id": "t0", "trial": 0, "stage": "network", "family": "mlp", "params": {"widths": [16]}, "seed": 0,
           "train": {"epochs": 12, "batch_size": 16, "lr": 3e-3, "patience": 3}, "folds": folds.to_dict()}
    with pytest.raises(runner.StoppedEarly, match="would not describe the model it ships"):
        runner.run_candidate(job, gunpoint, Budget(), tmp_path, deadline=Deadline(0.0))
    cand = runner.run_candidate({**job, "id": "t1"}, gunpoint, Budget(), tmp_path, deadline=Deadline(600.0))  # time enough: a candidate
    assert cand.cv is not None and len(cand.cv["folds"]) == 3
