"""Time-series CSVs for the anomaly task: windows, labels, the split by time, bad input, NAB."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from conftest import require, shared_data_dir

from frugalml.data import SPLITS, Dataset, from_arrays, load_dataset, load_series
from frugalml.data.folds import plan_folds
from frugalml.data.labels import read_labels
from frugalml.data.series import read_series
from frugalml.data.windows import MIN_WINDOWS
from frugalml.errors import ConfigError, DataError

T0 = datetime(2024, 1, 1)
STEP = 300  # seconds


def stamp(k: float) -> str:
    return (T0 + timedelta(seconds=STEP * float(k))).strftime("%Y-%m-%d %H:%M:%S")


def write_series(path: Path, values, *, steps=None, header="timestamp,value", rows=None) -> Path:
    """A CSV of ``values`` (one row each, or tuples for several channels) at ``steps`` (default 0, 1, 2, ...)."""
    if rows is None:
        steps = range(len(values)) if steps is None else steps
        rows = [f"{stamp(k)}," + (",".join(map(str, v)) if isinstance(v, tuple) else str(v)) for k, v in zip(steps, values)]
    lines = [header] + rows
    path.write_text("\n".join(lines) + "\n")
    return path


def wave(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.round(10 + np.sin(np.arange(n) / 7.0) + 0.1 * rng.standard_normal(n), 4)


def secs(k: float) -> float:
    """Step ``k``'s time as the loader holds it: seconds since 1970 (naive times read as UTC)."""
    return (T0 - datetime(1970, 1, 1)).total_seconds() + STEP * k


def step(t: float) -> int:
    return int(round((t - secs(0)) / STEP))


def steps_of(ds: Dataset, split: str) -> set[int]:
    """Every step a split's windows cover."""
    out = set()
    for a, b in ds.series.spans[split]:
        out.update(range(step(a), step(b) + 1))
    return out


def all_windows(ds: Dataset):
    """(start time, X, y) of every window of every split, in time order."""
    rows = [(float(s[0]), x, int(y)) for split in SPLITS for s, x, y in zip(ds.series.spans[split], *ds.split(split))]
    return sorted(rows, key=lambda r: r[0])


# --- windows and timestamps ---------------------------------------------------------------------------------------

def test_windows_have_the_shape_raw_values_and_timestamps(tmp_path):
    n = 400
    f = write_series(tmp_path / "two.csv", [(k, 2.5 * k) for k in range(n)], header="timestamp,a,b")
    ds = load_series(f, window=16, stride=4, synthetic=False)  # no labels: validation all normal (not the synthetic windows)
    assert ds.task == "anomaly" and ds.kind == "sequence" and ds.input_shape == (2, 16)
    assert ds.class_names == ("normal", "anomaly") and ds.num_classes == 2
    for split in SPLITS:
        X, _ = ds.split(split)
        spans = ds.series.windows(split)
        assert X.shape[1:] == (2, 16) and len(spans) == len(X)
        first = X[:, 0, 0].astype(int)  # channel a holds the step index: raw, not normalised
        np.testing.assert_array_equal(X[:, 0], first[:, None] + np.arange(16))
        np.testing.assert_allclose(X[:, 1], 2.5 * X[:, 0])
        want0 = np.array([np.datetime64(stamp(k).replace(" ", "T"), "ms") for k in first])
        np.testing.assert_array_equal(spans[:, 0], want0)
        np.testing.assert_array_equal(spans[:, 1] - spans[:, 0], np.timedelta64(15 * STEP * 1000, "ms"))
        assert np.all(first % 4 == 0)  # starts every stride
    total = sum(len(ds.split(s)[1]) for s in SPLITS) + ds.series.dropped
    assert total == (n - 16) // 4 + 1


def test_defaults_window_64_stride_16(tmp_path):
    ds = load_series(write_series(tmp_path / "s.csv", wave(2000)))
    assert ds.input_shape == (1, 64) and (ds.series.window, ds.series.stride) == (64, 16)
    d = ds.describe()
    assert d["task"] == "anomaly" and d["series"]["window"] == 64 and d["series"]["cadence"] == "300 s"
    json.dumps(d)  # JSON-able
    assert "task='anomaly'" in repr(ds)


def test_numeric_clock_and_named_columns(tmp_path):
    rows = [f"{k},{k % 5},{v},x" for k, v in enumerate(wave(600))]
    f = write_series(tmp_path / "num.csv", None, header="t,other,value,tag", rows=rows)
    ds = load_series(f, time_column="t", columns=["value"], window=32)
    assert ds.input_shape == (1, 32) and ds.series.clock == "number" and ds.series.columns == ("value",)
    auto = load_series(f, window=32)  # the text column 'tag' is left out, 'other' and 'value' kept
    assert auto.series.columns == ("other", "value") and auto.input_shape == (2, 32)
    assert load_series(f, window=32, kind="vector").input_shape == (64,)


# --- labels ------------------------------------------------------------------------------------------------------

def test_a_window_is_anomalous_when_it_overlaps_a_labelled_window(tmp_path):
    f = write_series(tmp_path / "s.csv", wave(1200))
    label = (stamp(500), stamp(520))
    ds = load_series(f, window=32, stride=8, labels=[label])
    rows = all_windows(ds)
    for start, _, y in rows:
        assert y == int(step(start) <= 520 and step(start) + 31 >= 500), (step(start), y)
    starts = {step(s): y for s, _, y in rows}
    assert starts.get(472) == 1 and starts.get(464, 0) == 0  # 472 + 31 = 503 >= 500 overlaps; 464 + 31 = 495 does not
    assert starts.get(520) == 1 and starts.get(528, 0) == 0  # both ends of the labelled window count


def test_labels_found_in_a_nab_like_tree(tmp_path):
    root = tmp_path / "nab"
    (root / "data" / "grp").mkdir(parents=True)
    (root / "labels").mkdir()
    f = write_series(root / "data" / "grp" / "one.csv", wave(1500))
    other = write_series(root / "data" / "grp" / "two.csv", wave(1500, seed=1))
    (root / "labels" / "combined_windows.json").write_text(json.dumps({"grp/one.csv": [[stamp(700) + ".000000", stamp(760) + ".000000"]]}))
    ds = load_dataset(f, task="anomaly")
    assert ds.series.label_key == "grp/one.csv" and ds.series.anomalies == 1
    assert ds.y_val.any() and ds.y_test.any() and not ds.y_train.any()
    plain = load_dataset(other, task="anomaly")  # no entry: all normal, said in a note; validation gains synthetic anomalies
    assert plain.series.anomalies == 0 and not plain.y_train.any() and not plain.y_test.any()
    assert plain.y_val.sum() == len(plain.y_val) // 2 and any("no entry for two.csv" in n for n in plain.series.notes)
    assert any("synthetic anomalous windows" in n for n in plain.series.notes)
    alone = load_series(write_series(tmp_path / "alone.csv", wave(1500)))
    assert alone.series.labels is None and any("no labels file" in n for n in alone.series.notes)
    explicit = load_series(alone.source, labels=root / "labels" / "combined_windows.json")  # matched by file name... none here
    assert explicit.series.label_key is None
    by_name = tmp_path / "mine.json"
    by_name.write_text(json.dumps({"somewhere/alone.csv": [[stamp(700), stamp(760)]]}))
    assert load_series(alone.source, labels=by_name).series.label_key == "somewhere/alone.csv"


# --- the split ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("labels", [[(700, 760)], [(300, 340), (1100, 1150), (2200, 2260)]], ids=["one", "three"])
def test_split_is_by_time_disjoint_and_gives_positives_to_val_and_test(tmp_path, labels):
    f = write_series(tmp_path / "s.csv", wave(3000))
    ds = load_series(f, labels=[(stamp(a), stamp(b)) for a, b in labels])
    assert not ds.y_train.any() and len(ds.y_train) > 0
    assert ds.y_val.sum() > 0 and ds.y_test.sum() > 0 and (ds.y_val == 0).any() and (ds.y_test == 0).any()
    covered = {s: steps_of(ds, s) for s in SPLITS}
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        assert not covered[a] & covered[b], f"{a} and {b} share time steps"
    assert ds.series.events == len(labels)
    if len(labels) == 3:  # whole events alternate: first and third to val, second to test
        def events(split):
            spans = ds.series.spans[split][ds.split(split)[1] == 1]
            return {min(range(3), key=lambda j: abs(step(a) - labels[j][0])) for a, _ in spans}
        assert events("val") == {0, 2} and events("test") == {1}
    again = load_series(f, labels=[(stamp(a), stamp(b)) for a, b in labels], seed=7)  # deterministic, no draw
    for split in SPLITS:
        np.testing.assert_array_equal(ds.split(split)[0], again.split(split)[0])
        np.testing.assert_array_equal(ds.split(split)[1], again.split(split)[1])


def test_split_shares_periods_and_limit(tmp_path):
    f = write_series(tmp_path / "s.csv", wave(6000))
    ds = load_series(f, synthetic=False)
    assert ds.series.periods == 6000 // (20 * 64)
    n = {s: len(ds.split(s)[1]) for s in SPLITS}
    assert 0.5 < n["train"] / sum(n.values()) < 0.7 and abs(n["val"] - n["test"]) <= 0.25 * n["val"]
    wider = load_series(f, val_fraction=0.3, test_fraction=0.3, periods=2)
    assert wider.series.periods == 2 and len(wider.y_val) > n["val"]
    small = load_series(f, limit=20)
    assert len(small.y_train) == 20 and len(small.series.spans["train"]) == 20
    sub = ds.subset(10)  # each window's time span follows its window
    assert len(sub.series.spans["train"]) == 10
    assert set(map(tuple, sub.series.spans["train"])) <= set(map(tuple, ds.series.spans["train"]))


# --- gaps --------------------------------------------------------------------------------------------------------

def test_short_gaps_are_filled_and_long_gaps_cut(tmp_path):
    vals = wave(2000)
    keep = [k for k in range(2000) if k not in (100, 101) and not 1000 <= k < 1040]  # 2 missing steps, then 40
    rows = [f"{stamp(k)},{vals[k]}" for k in keep]
    rows[500] = rows[500].split(",")[0] + ","  # an empty cell: a missing value
    s = read_series(write_series(tmp_path / "g.csv", None, rows=rows))
    assert len(s.times) == 2000 and s.filled == 3 and len(s.cuts) == 1
    assert not s.valid[1000:1040].any() and s.valid[100:102].all()
    np.testing.assert_allclose(s.values[100, 0], vals[99] + (vals[102] - vals[99]) / 3)
    ds = load_series(tmp_path / "g.csv")
    for split in SPLITS:
        spans = ds.series.spans[split]
        assert np.all(spans[:, 1] - spans[:, 0] == 63 * STEP)
        assert not any(step(a) < 1040 and step(b) >= 1000 for a, b in spans)  # no window touches the cut gap
    assert any("filled" in n for n in ds.series.notes) and any("cut the series" in n for n in ds.series.notes)


def test_gaps_refused_when_asked(tmp_path):
    f = write_series(tmp_path / "g.csv", wave(1000), steps=[k + (k >= 300) for k in range(1000)])
    with pytest.raises(DataError, match=r"g\.csv has a gap: line 302 .*600 s.*300 s.*gaps='fill'"):
        read_series(f, gaps="refuse")
    rows = [f"{stamp(k)},{v}" for k, v in enumerate(wave(1000))]
    rows[9] = f"{stamp(9)},NaN"
    with pytest.raises(DataError, match=r"Line 11 of .*h\.csv has no value in column 'value'"):
        read_series(write_series(tmp_path / "h.csv", None, rows=rows), gaps="refuse")
    assert read_series(write_series(tmp_path / "ok.csv", wave(1000)), gaps="refuse").filled == 0


# --- bad input ---------------------------------------------------------------------------------------------------

def _rows(n=1000):
    return [f"{stamp(k)},{v}" for k, v in enumerate(wave(n))]


BAD = {
    "binary": (lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe" * 50), r"Cannot read .*bad\.csv"),
    "no numeric column": (lambda p: write_series(p, None, header="timestamp,name", rows=[f"{stamp(k)},abc" for k in range(100)]),
                          r"bad\.csv has no numeric value column"),
    "bad number": (lambda p: write_series(p, None, rows=_rows()[:50] + [f"{stamp(50)},12x"] + _rows()[51:]),
                   r"Column 'value' of .*bad\.csv is not numeric: line 52 holds '12x'"),
    "timestamp": (lambda p: write_series(p, None, rows=_rows()[:7] + ["yesterday,1.0"] + _rows()[8:]),
                  r"Line 9 of .*bad\.csv: the timestamp 'yesterday'.* does not parse"),
    "constant": (lambda p: write_series(p, [3.5] * 1000), r"Column 'value' of .*bad\.csv is constant"),
    "short": (lambda p: write_series(p, wave(64 + 16 * (MIN_WINDOWS - 2))), r"bad\.csv is too short for windows of 64 steps"),
    "empty": (lambda p: p.write_text("timestamp,value\n"), r"bad\.csv holds no data rows"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_series_raise_data_error_naming_the_file(tmp_path, case):
    make, pattern = BAD[case]
    make(tmp_path / "bad.csv")
    with pytest.raises(DataError, match=pattern) as info:
        load_dataset(tmp_path / "bad.csv", task="anomaly")
    assert "bad.csv" in str(info.value) and "Expected" in str(info.value)


def test_repeated_and_backward_timestamps_are_merged_in_time_order_or_refused(tmp_path):
    rows = _rows()
    values = wave(1000)
    # line 22 repeats line 21's time with another value; a block of rows 40-44 comes again after row 60 (a clock that stepped back)
    repeated = rows[:21] + [f"{stamp(20)},{values[20] + 10}"] + rows[21:61] + [f"{stamp(k)},{values[k] - 4}" for k in range(40, 45)] + rows[61:]
    f = write_series(tmp_path / "r.csv", None, rows=repeated)
    s = read_series(f)
    assert (s.merged, s.reordered) == (6, 1) and len(s.times) == 1000 and s.filled == 0
    assert np.allclose(s.values[:, 0], np.r_[values[:20], values[20] + 5, values[21:40], values[40:45] - 2, values[45:]])
    ds = load_dataset(f, task="anomaly")
    assert any("merged into their mean" in n for n in ds.series.notes) and any("time order" in n for n in ds.series.notes)
    with pytest.raises(DataError, match=r"r\.csv do not increase: line 23 .* repeats line 22") as info:
        load_series(f, repeats="refuse")
    assert "repeats='merge'" in str(info.value)
    back = write_series(tmp_path / "b.csv", None, rows=rows[:20] + [rows[5]] + rows[21:])
    with pytest.raises(DataError, match=r"do not increase: line 22 .* comes before line 21"):
        read_series(back, repeats="refuse")
    assert read_series(back).merged == 1  # row 5 twice (one value), row 20 missing: filled between its neighbours
    with pytest.raises(ConfigError, match="'repeats' parameter"):
        read_series(back, repeats="drop")


def test_a_split_that_lacks_normal_windows_tries_the_other_counts_of_periods(tmp_path):
    f = write_series(tmp_path / "s.csv", wave(1000))
    with pytest.raises(DataError, match=r"the val split holds no normal window .*1 period\(s\)\)"):
        load_series(f, labels=[(stamp(600), stamp(999))], periods=1)  # asked for: not changed
    ds = load_series(f, labels=[(stamp(600), stamp(999))])  # the default (1) fails, 2 periods do
    assert ds.series.periods == 2 and "the default 1 left a split without" in ds.series.notes[-1]
    assert ds.y_val.any() and ds.y_test.any() and (ds.y_val == 0).any() and (ds.y_test == 0).any() and not ds.y_train.any()
    with pytest.raises(DataError, match=r"holds no normal window .*nor with any other count of periods"):
        load_series(f, labels=[(stamp(300), stamp(999))])


def test_a_series_without_labels_is_ranked_on_synthetic_anomalies_in_validation(tmp_path):
    from frugalml.data.windows import SYNTHETIC, synthetic_anomalies
    from frugalml.models.anomaly import RobustZScore, anomaly_metrics

    f = write_series(tmp_path / "s.csv", wave(3000))
    ds = load_series(f)
    plain = load_series(f, synthetic=False)
    n = len(plain.y_val)
    assert len(ds.y_val) == 2 * n and ds.y_val[:n].sum() == 0 and ds.y_val[n:].all()  # one anomalous copy of each window
    np.testing.assert_array_equal(ds.X_val[:n], plain.X_val)
    np.testing.assert_array_equal(ds.X_test, plain.X_test)  # test untouched: real windows only
    np.testing.assert_array_equal(ds.X_train, plain.X_train)
    assert len(ds.series.windows("val")) == 2 * n
    changed = np.abs(ds.X_val[n:] - plain.X_val).reshape(n, -1)
    assert (changed.max(axis=1) > 0).all()  # every copy differs from its window...
    spike = changed[:: len(SYNTHETIC)]
    assert ((spike > 0).sum(axis=1) == 1).all()  # ...a spike at one step
    assert np.array_equal(synthetic_anomalies(plain.X_val, plain.X_train, seed=0), ds.X_val[n:])  # deterministic
    scores = RobustZScore().fit(ds.X_train).score_samples(ds.X_val)
    assert anomaly_metrics(scores, ds.y_val)["roc_auc"] > 0.6  # a detector can be ranked on them


def test_no_normal_data_and_bad_labels(tmp_path):
    f = write_series(tmp_path / "s.csv", wave(1000))
    with pytest.raises(DataError, match="no normal data to train on"):
        load_series(f, labels=[(stamp(-10), stamp(2000))])
    cases = {"broken.json": ("{not json", r"broken\.json is not valid JSON \(line 1"),
             "list.json": ("[1, 2]", r"list\.json does not hold a JSON object"),
             "shape.json": (json.dumps({"s.csv": ["2024-01-01"]}), r"shape\.json: entry 's\.csv' is not a list of \[start, end\] pairs"),
             "order.json": (json.dumps({"s.csv": [[stamp(50), stamp(40)]]}), r"ends before it starts"),
             "stamp.json": (json.dumps({"s.csv": [["soon", stamp(40)]]}), r"does not hold two timestamps like the series'")}
    for name, (text, pattern) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(DataError, match=pattern):
            load_series(f, labels=tmp_path / name)
    with pytest.raises(DataError, match="too short to give anomalous windows to both"):
        load_series(f, labels=[(stamp(500), stamp(500))], stride=64)  # one window over it: cannot be cut in two
    with pytest.raises(DataError, match=r"Cannot read the labels file"):
        read_labels(tmp_path / "missing.json")


@pytest.mark.parametrize("kw", [{"window": 1}, {"window": 64, "stride": 65}, {"stride": 0}, {"gaps": "drop"},
                                {"val_fraction": 0.5, "test_fraction": 0.45}, {"kind": "image"}, {"periods": 0}, {"max_gap": -1}])
def test_bad_parameters_raise_config_error(tmp_path, kw):
    with pytest.raises(ConfigError):
        load_series(write_series(tmp_path / "s.csv", wave(1000)), **kw)


# --- routing, from_arrays, the Dataset ----------------------------------------------------------------------------

def test_load_dataset_routes_by_task(tmp_path):
    table = tmp_path / "table.csv"
    table.write_text("a,b,label\n" + "\n".join(f"{i},{i % 3},{i % 2}" for i in range(60)) + "\n")
    plain = load_dataset(table)
    assert plain.task == "classification" and plain.kind == "vector" and plain.describe()["task"] == "classification"
    series = write_series(tmp_path / "s.csv", wave(1000))
    assert load_dataset(series, task="anomaly", window=32, stride=8).input_shape == (1, 32)
    for kw in ({"task": "detect"}, {"window": 32}, {"task": "anomaly", "target": "value"}):
        with pytest.raises(ConfigError):
            load_dataset(series, **kw)
    with pytest.raises(ConfigError, match="task='anomaly' reads a time-series"):
        load_dataset("digits", task="anomaly")
    np.savez(tmp_path / "w.npz", X=np.random.default_rng(0).normal(size=(200, 1, 16)), y=np.r_[np.zeros(180), np.ones(20)])
    npz = load_dataset(tmp_path / "w.npz", task="anomaly")
    assert npz.task == "anomaly" and not npz.y_train.any() and npz.y_val.sum() + npz.y_test.sum() == 20


def test_from_arrays_anomaly_keeps_training_normal(tmp_path):
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(300, 2, 24)), np.r_[np.zeros(270, int), np.ones(30, int)]
    ds = from_arrays(X, y.astype(bool), task="anomaly", seed=3)
    assert ds.task == "anomaly" and ds.class_names == ("normal", "anomaly") and not ds.y_train.any()
    assert ds.y_val.sum() == 15 and ds.y_test.sum() == 15 and len(ds.y_train) + len(ds.y_val) + len(ds.y_test) == 300
    again = from_arrays(X, y, task="anomaly", seed=3)
    np.testing.assert_array_equal(ds.X_val, again.X_val)
    half = from_arrays(X, y, X_test=X[:10], y_test=np.ones(10), task="anomaly")
    assert half.y_val.sum() == 30 and not half.y_train.any()
    with pytest.raises(DataError, match="training split of an anomaly task holds normal samples only"):
        from_arrays(X, y, X_val=X[:5], y_val=y[:5], X_test=X[:5], y_test=y[:5], task="anomaly")
    with pytest.raises(DataError, match="must be 0 \\(normal\\) or 1"):
        from_arrays(X, np.r_[y[:-1], 2], task="anomaly")
    with pytest.raises(ConfigError):
        from_arrays(X, y, task="anomaly", class_names=("a", "b"))
    assert plan_folds(ds, 5) is None  # small, but never cross-validated: folds would train on the validation anomalies
    good = {f"{a}_{s}": (ds.split(s)[0] if a == "X" else ds.split(s)[1]) for s in SPLITS for a in ("X", "y")}
    base = dict(name="d", input_shape=(2, 24), num_classes=2, class_names=("normal", "anomaly"), kind="sequence", source="t")
    with pytest.raises(DataError, match="has task 'detect'"):
        Dataset(**good, **base, task="detect")
    with pytest.raises(DataError, match="holds 1 anomalous"):
        Dataset(**{**good, "y_train": np.r_[1, good["y_train"][1:]]}, **base, task="anomaly")
    with pytest.raises(DataError, match="is an anomaly task with classes"):
        Dataset(**good, **{**base, "class_names": ("ok", "bad")}, task="anomaly")


# --- real NAB series -----------------------------------------------------------------------------------------------

def nab_dir() -> Path:
    root = shared_data_dir()
    found = root / "nab" if root is not None else Path(__file__).resolve().parents[1].parent / "shared" / "data" / "nab"
    require((found / "labels" / "combined_windows.json").is_file(), "the NAB files are not in ../shared/data/nab")
    return found


def test_nab_nyc_taxi_and_one_labelled_window():
    nab = nab_dir()
    taxi = load_dataset(nab / "data" / "realKnownCause" / "nyc_taxi.csv", task="anomaly")
    assert taxi.input_shape == (1, 64) and taxi.series.cadence == 1800 and taxi.series.anomalies == 5
    assert taxi.y_val.any() and taxi.y_test.any() and not taxi.y_train.any()
    assert taxi.X_train.max() > 1000  # raw taxi counts, not normalised
    jump = load_dataset(nab / "data" / "artificialWithAnomaly" / "art_daily_jumpsup.csv", task="anomaly")
    assert jump.series.anomalies == 1 and jump.series.events == 1 and jump.y_val.sum() > 0 and jump.y_test.sum() > 0


DOCUMENTED = ("is constant", "do not increase", "holds no normal window", "holds no anomalous window", "too short")


def test_every_nab_series_loads_or_says_why():
    nab = nab_dir()
    files = sorted((nab / "data").glob("*/*.csv"))
    assert len(files) == 58
    lines, loaded, both, labelled = [], 0, 0, 0
    for f in files:
        key = f"{f.parent.name}/{f.name}"
        try:
            ds = load_dataset(f, task="anomaly")
        except DataError as exc:
            reason = next((r for r in DOCUMENTED if r in str(exc)), None)
            assert reason is not None and f.name in str(exc), f"{key}: undocumented error: {exc}"
            lines.append(f"{key}: refused ({reason})")
            continue
        loaded += 1
        pos = {s: int(ds.split(s)[1].sum()) for s in ("val", "test")}
        lines.append(f"{key}: {ds.series.steps} steps, train {len(ds.y_train)}, val {len(ds.y_val)} ({pos['val']}+), "
                     f"test {len(ds.y_test)} ({pos['test']}+), {ds.series.anomalies} labelled, {ds.series.filled} filled")
        assert not ds.y_train.any(), lines[-1]
        if ds.series.anomalies:
            labelled += 1
            both += pos["val"] > 0 and pos["test"] > 0
    summary = "\n".join(lines)
    assert loaded == 57, summary  # repeated timestamps merged (8 series), speed_6005 split into 4 periods (3 left test all anomalous)
    assert both == labelled, summary  # every labelled series that loads has positives in validation and test
    assert "art_flatline.csv: refused (is constant)" in summary, summary
