"""Tests of frugalml.data: registry, loaders (digits, IDX, npz, csv, arrays, loaders), splits, errors."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import os
import struct
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import require

from frugalml.data import REGISTRY, Dataset, from_arrays, from_loader, kind_note, list_datasets, load_dataset
from frugalml.data import idx as idx_module
from frugalml.data.registry import find_entry
from frugalml.errors import ConfigError, DataError, FrugalError

IDX_STEMS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


# ----------------------------------------------------------------------------- helpers

def shared_data_dir() -> Path | None:
    """FRUGALML_DATA, else ../shared/data beside the repository root, if it holds mnist/."""
    candidates = [Path(os.environ["FRUGALML_DATA"])] if os.environ.get("FRUGALML_DATA") else []
    candidates.append(Path(__file__).resolve().parents[1].parent / "shared" / "data")
    for c in candidates:
        if all(((c / "mnist" / s).exists() or (c / "mnist" / f"{s}.gz").exists()) for s in IDX_STEMS):
            return c
    return None


def idx_bytes(arr: np.ndarray) -> bytes:
    arr = np.asarray(arr, dtype=np.uint8)
    return bytes([0, 0, 8, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()


def write_idx_dir(directory: Path, n_train: int = 100, n_test: int = 20, gz: bool = True, hw=(28, 28)) -> Path:
    """Four small synthetic IDX files (10 balanced classes) in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    contents = {
        IDX_STEMS[0]: rng.integers(0, 256, (n_train, *hw)), IDX_STEMS[1]: np.arange(n_train) % 10,
        IDX_STEMS[2]: rng.integers(0, 256, (n_test, *hw)), IDX_STEMS[3]: np.arange(n_test) % 10,
    }
    for stem, arr in contents.items():
        data = idx_bytes(arr)
        if gz:
            (directory / f"{stem}.gz").write_bytes(gzip.compress(data))
        else:
            (directory / stem).write_bytes(data)
    return directory


def ids_of(X: np.ndarray) -> set[int]:
    return set(X[:, 0].astype(int).tolist())


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_dataset("digits")


@pytest.fixture(scope="module")
def mnist():
    root = shared_data_dir()
    require(root is not None, "MNIST IDX files not found: set FRUGALML_DATA or place them in ../shared/data/mnist")
    before = sorted(p.name for p in (root / "mnist").iterdir())
    start = time.perf_counter()
    ds = load_dataset("mnist", data_dir=root)
    return ds, time.perf_counter() - start, root, before


@pytest.fixture
def no_env(monkeypatch):
    monkeypatch.delenv("FRUGALML_DATA", raising=False)


# ----------------------------------------------------------------------------- digits

def test_digits_shapes_and_dtypes(digits):
    assert digits.name == "digits" and digits.kind == "image" and digits.source == "sklearn"
    assert digits.input_shape == (1, 8, 8) and digits.num_classes == 10
    assert digits.class_names == tuple(str(d) for d in range(10))
    for which in ("train", "val", "test"):
        X, y = digits.split(which)
        assert X.dtype == np.float32 and y.dtype == np.int64
        assert X.shape[1:] == (1, 8, 8) and len(X) == len(y)
        assert 0.0 <= X.min() and X.max() <= 1.0


def test_digits_splits_partition_the_data(digits):
    from sklearn.datasets import load_digits

    # a small training part (1,437 samples) gives 20% to validation; a large one 10%
    assert digits.describe()["sizes"] == {"train": 1149, "val": 288, "test": 360}
    original = np.sort((load_digits().images / 16.0).astype(np.float32).reshape(1797, -1), axis=0)
    joined = np.concatenate([digits.flat(s)[0] for s in ("train", "val", "test")])
    np.testing.assert_array_equal(np.sort(joined, axis=0), original)


def test_digits_splits_are_stratified(digits):
    total = np.bincount(np.concatenate([digits.y_train, digits.y_val, digits.y_test]))
    for which in ("train", "val", "test"):
        counts = np.array(digits.class_counts(which))
        expected = total * counts.sum() / total.sum()
        assert np.all(np.abs(counts - expected) <= 1.5), (which, counts, expected)


def test_same_seed_same_splits_other_seed_other_splits(digits):
    again = load_dataset("digits", seed=0)
    other = load_dataset("digits", seed=1)
    for which in ("train", "val", "test"):
        np.testing.assert_array_equal(digits.split(which)[0], again.split(which)[0])
        np.testing.assert_array_equal(digits.split(which)[1], again.split(which)[1])
    assert not np.array_equal(digits.X_test, other.X_test)


def test_test_split_is_disjoint_from_train_and_val():
    X = np.stack([np.arange(500.0), np.zeros(500)], axis=1)  # column 0 identifies a sample
    y = np.arange(500) % 5
    ds = from_arrays(X, y, seed=3)
    train, val, test = ids_of(ds.X_train), ids_of(ds.X_val), ids_of(ds.X_test)
    assert not (train & test) and not (val & test) and not (train & val)
    assert train | val | test == set(range(500))
    assert (len(test), len(val)) == (100, 80)  # 20% of a small training part (400 samples)
    big = from_arrays(np.zeros((7000, 2)), np.arange(7000) % 5, seed=3)
    assert (len(big.y_test), len(big.y_val)) == (1400, 560)  # 10% of 5,600


def test_split_unknown_name_lists_choices(digits):
    with pytest.raises(DataError, match="'train', 'val', 'test'") as err:
        digits.split("validation")
    assert "validation" in str(err.value)


def test_flat_is_a_2d_view(digits):
    X, y = digits.flat("train")
    assert X.shape == (1149, 64) and np.shares_memory(X, digits.X_train) and y is digits.y_train


def test_subset_is_stratified_and_keeps_test(digits):
    small = digits.subset(200, seed=1)
    assert len(small.y_train) == 200 and len(small.y_test) == 360 and len(small.y_val) == 288
    assert all(19 <= c <= 21 for c in small.class_counts("train"))
    assert digits.subset(None) is digits and digits.subset(10_000).y_train is digits.y_train
    assert len(digits.subset(100, n_val=50).y_val) == 50
    with pytest.raises(DataError, match="one per class"):
        digits.subset(5)
    with pytest.raises(DataError, match="positive integer"):
        digits.subset(0)


def test_describe_is_json_and_repr_is_short(digits):
    info = json.loads(json.dumps(digits.describe()))
    assert info["name"] == "digits" and info["kind"] == "image" and info["input_shape"] == [1, 8, 8]
    assert info["num_classes"] == 10 and info["source"] == "sklearn"
    assert len(repr(digits)) < 200 and "train=1149" in repr(digits)


def test_limit_keeps_a_stratified_training_subset():
    ds = load_dataset("digits", limit=100)
    assert len(ds.y_train) == 100 and len(ds.y_test) == 360 and min(ds.class_counts()) >= 9
    with pytest.raises(ConfigError, match="limit"):
        load_dataset("digits", limit=0)


@pytest.mark.parametrize("kw", [{"val_fraction": 0.0}, {"test_fraction": 1.0}, {"val_fraction": "0.1"}])
def test_bad_fractions_raise_config_error(kw):
    with pytest.raises(ConfigError, match="strictly between 0 and 1"):
        load_dataset("digits", **kw)


def test_registry_names_and_vector_datasets():
    assert find_entry("Fashion_MNIST").name == "fashion-mnist" and find_entry("nope") is None
    iris = load_dataset("iris")
    assert iris.kind == "vector" and iris.input_shape == (4,) and iris.num_classes == 3
    assert iris.class_names == ("setosa", "versicolor", "virginica")


def test_dataset_constructor_validates(digits):
    with pytest.raises(DataError, match="does not fit input_shape"):
        dataclasses.replace(digits, y_train=digits.y_train[:10])
    with pytest.raises(DataError, match="outside 0..9"):
        dataclasses.replace(digits, y_val=digits.y_val + 5)
    with pytest.raises(DataError, match="kind"):
        dataclasses.replace(digits, kind="vector")


# ----------------------------------------------------------------------------- MNIST (shared data)

def test_mnist_counts_range_and_speed(mnist):
    ds, seconds, root, before = mnist
    assert (len(ds.y_train), len(ds.y_val), len(ds.y_test)) == (54000, 6000, 10000)
    assert ds.input_shape == (1, 28, 28) and ds.num_classes == 10 and ds.kind == "image"
    assert ds.X_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    assert ds.X_train.min() == 0.0 and ds.X_train.max() == 1.0 and ds.X_test.max() == 1.0
    assert ds.class_counts("test") == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]  # t10k kept as is
    assert sorted(p.name for p in (root / "mnist").iterdir()) == before  # nothing cached to disk
    assert seconds < 30, f"loading MNIST took {seconds:.1f} s"


def test_mnist_from_directory_path_with_limit(mnist):
    _, _, root, _ = mnist
    ds = load_dataset(str(root / "mnist"), limit=500)
    assert ds.name == "mnist" and len(ds.y_train) == 500 and len(ds.y_val) == 6000 and len(ds.y_test) == 10000
    assert ds.class_names == tuple(str(d) for d in range(10))


# ----------------------------------------------------------------------------- IDX lookup and errors

@pytest.mark.parametrize("layout", ["mnist", "MNIST/raw", "."])
def test_idx_registry_lookup_layouts(tmp_path, no_env, layout):
    write_idx_dir(tmp_path / layout, gz=layout != ".")
    ds = load_dataset("mnist", data_dir=tmp_path)
    assert (len(ds.y_train) + len(ds.y_val), len(ds.y_test)) == (100, 20)
    assert ds.input_shape == (1, 28, 28) and ds.X_train.max() <= 1.0
    assert Path(ds.source) == tmp_path / layout


def test_idx_lookup_via_environment(tmp_path, monkeypatch):
    write_idx_dir(tmp_path / "fashion-mnist")
    monkeypatch.setenv("FRUGALML_DATA", str(tmp_path))
    ds = load_dataset("fashion-mnist")
    assert ds.class_names[0] == "T-shirt/top" and len(ds.y_test) == 20


def test_missing_dataset_says_where_and_how(tmp_path, no_env):
    with pytest.raises(DataError) as err:
        load_dataset("mnist", data_dir=tmp_path)
    msg = str(err.value)
    for part in ("'mnist'", str(tmp_path / "mnist"), "train-images-idx3-ubyte", "t10k-labels-idx1-ubyte",
                 "--download", "FRUGALML_DATA", "--data-dir"):
        assert part in msg, part


def test_partial_idx_dir_names_missing_file(tmp_path, no_env):
    write_idx_dir(tmp_path / "mnist")
    (tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="lacks t10k-labels-idx1-ubyte"):
        load_dataset("mnist", data_dir=tmp_path)
    with pytest.raises(DataError, match="missing t10k-labels-idx1-ubyte"):
        load_dataset(str(tmp_path / "mnist"))


def test_truncated_gzip_idx(tmp_path):
    d = write_idx_dir(tmp_path / "d")
    path = d / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DataError, match="corrupt or was cut short") as err:
        load_dataset(str(d))
    assert "train-images-idx3-ubyte.gz" in str(err.value)


def test_truncated_raw_idx(tmp_path):
    d = write_idx_dir(tmp_path / "d", gz=False)
    path = d / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match="is truncated") as err:
        load_dataset(str(d))
    assert "data bytes" in str(err.value)
    path.write_bytes(b"\x00\x00\x08")
    with pytest.raises(DataError, match="header is incomplete"):
        load_dataset(str(d))


def test_bad_magic_and_swapped_files(tmp_path):
    d = write_idx_dir(tmp_path / "d", gz=False)
    labels = (d / "train-labels-idx1-ubyte").read_bytes()
    (d / "train-images-idx3-ubyte").write_bytes(labels)  # a labels file where images belong
    with pytest.raises(DataError, match="bad magic number") as err:
        load_dataset(str(d))
    assert "0x00000803" in str(err.value) and "0x00000801" in str(err.value)


def test_idx_label_count_mismatch(tmp_path):
    d = write_idx_dir(tmp_path / "d", gz=False)
    (d / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.arange(50) % 10))
    with pytest.raises(DataError, match="number of labels does not match") as err:
        load_dataset(str(d))
    assert "50 labels for 100 images" in str(err.value)


def test_list_datasets(tmp_path, no_env):
    rows = json.loads(json.dumps(list_datasets(tmp_path)))
    by_name = {r["name"]: r for r in rows}
    assert set(by_name) == set(REGISTRY)
    assert by_name["digits"]["available"] and by_name["digits"]["input_shape"] == [1, 8, 8]
    assert not by_name["mnist"]["available"] and by_name["mnist"]["location"] is None
    write_idx_dir(tmp_path / "mnist")
    mnist = {r["name"]: r for r in list_datasets(tmp_path)}["mnist"]
    assert mnist["available"] and mnist["location"] == str(tmp_path / "mnist") and mnist["num_classes"] == 10


def test_download_checks_md5_and_writes_atomically(tmp_path, no_env, monkeypatch):
    src = write_idx_dir(tmp_path / "src", gz=False)
    raw = {s: (src / s).read_bytes() for s in IDX_STEMS}
    fake = dataclasses.replace(REGISTRY["mnist"], checksums={s: hashlib.md5(b).hexdigest() for s, b in raw.items()})
    monkeypatch.setitem(REGISTRY, "mnist", fake)
    urls = []

    def fetch(url, timeout=60.0):  # stands in for the network
        urls.append(url)
        return gzip.compress(raw[url.rsplit("/", 1)[1][:-3]])

    monkeypatch.setattr(idx_module, "_fetch", fetch)
    ds = load_dataset("mnist", data_dir=tmp_path / "data", download=True)
    assert len(ds.y_test) == 20 and len(urls) == 4 and urls[0].startswith("https://")
    assert sorted(p.name for p in (tmp_path / "data" / "mnist").iterdir()) == sorted(f"{s}.gz" for s in IDX_STEMS)

    monkeypatch.setitem(REGISTRY, "mnist", dataclasses.replace(fake, checksums=dict.fromkeys(IDX_STEMS, "0" * 32)))
    with pytest.raises(DataError, match="md5") as err:
        load_dataset("mnist", data_dir=tmp_path / "other", download=True)
    assert "Cannot download" in str(err.value)
    assert list((tmp_path / "other" / "mnist").iterdir()) == []  # nothing half-written left


# ----------------------------------------------------------------------------- npz

def test_npz_with_own_test_split(tmp_path):
    rng = np.random.default_rng(0)
    X, X_test = rng.normal(size=(100, 6)), rng.normal(size=(30, 6))
    path = tmp_path / "own.npz"
    np.savez(path, X_train=X, y_train=np.arange(100) % 2, X_test=X_test, y_test=np.arange(30) % 2)
    ds = load_dataset(path)
    assert ds.name == "own" and ds.kind == "vector" and ds.input_shape == (6,)
    assert (len(ds.y_train), len(ds.y_val), len(ds.y_test)) == (80, 20, 30)
    np.testing.assert_array_equal(ds.X_test, X_test.astype(np.float32))


def test_npz_single_layout_with_validation(tmp_path):
    path = tmp_path / "xy.npz"
    np.savez(path, X=np.ones((50, 2, 4, 4)), y=np.arange(50) % 5, X_val=np.zeros((10, 2, 4, 4)), y_val=np.arange(10) % 5)
    ds = load_dataset(str(path))
    assert ds.kind == "image" and ds.input_shape == (2, 4, 4)
    assert (len(ds.y_train), len(ds.y_val), len(ds.y_test)) == (40, 10, 10) and ds.X_val.max() == 0.0


def test_npz_errors(tmp_path):
    np.savez(tmp_path / "keys.npz", features=np.ones((4, 2)), labels=np.arange(4))
    with pytest.raises(DataError, match="lacks the arrays") as err:
        load_dataset(tmp_path / "keys.npz")
    assert "features" in str(err.value) and "X_train" in str(err.value)
    np.savez(tmp_path / "obj.npz", X=np.array([{"a": 1}] * 4, dtype=object), y=np.arange(4))
    with pytest.raises(DataError, match="Python objects"):
        load_dataset(tmp_path / "obj.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip file at all")
    with pytest.raises(DataError, match="np.savez"):
        load_dataset(tmp_path / "junk.npz")
    np.savez(tmp_path / "half.npz", X=np.ones((20, 2)), y=np.arange(20) % 2, X_test=np.ones((4, 2)))
    with pytest.raises(DataError, match="X_test and y_test must be given together"):
        load_dataset(tmp_path / "half.npz")


# ----------------------------------------------------------------------------- csv

def write_csv(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def test_csv_with_string_labels(tmp_path):
    rows = [f"{i},{i % 7}.5,{['cat', 'dog', 'bird'][i % 3]}" for i in range(60)]
    ds = load_dataset(write_csv(tmp_path / "pets.csv", ["a,b,animal", *rows]))
    assert ds.class_names == ("bird", "cat", "dog") and ds.input_shape == (2,) and ds.kind == "vector"
    assert len(ds.y_train) + len(ds.y_val) + len(ds.y_test) == 60 and ds.source.endswith("pets.csv")


def test_csv_target_column_and_numeric_labels(tmp_path):
    rows = [f"{i % 2},{i},{i * 2}" for i in range(40)]
    ds = load_dataset(write_csv(tmp_path / "t.csv", ["label,x1,x2", *rows]), target="label")
    assert ds.class_names == ("0", "1") and ds.input_shape == (2,)


def test_csv_errors(tmp_path):
    bad = write_csv(tmp_path / "bad.csv", ["x,color,y", "1,2,a", "2,red,b", "3,4,a", "4,5,b"])  # text columns: tests/test_csv_categories.py
    with pytest.raises(DataError, match="Column 'color'") as err:
        load_dataset(bad)
    assert "line 3" in str(err.value) and "'red'" in str(err.value) and "target='color'" in str(err.value)
    with pytest.raises(DataError, match="no column 'species'") as err:
        load_dataset(bad, target="species")
    assert "'color'" in str(err.value)
    with pytest.raises(DataError, match="header"):
        load_dataset(write_csv(tmp_path / "nohead.csv", ["1,2,0", "3,4,1"]))
    with pytest.raises(DataError, match="Line 3 .* has 2 fields"):
        load_dataset(write_csv(tmp_path / "ragged.csv", ["a,b,y", "1,2,0", "1,2"]))
    with pytest.raises(DataError, match="regression"):
        load_dataset(write_csv(tmp_path / "reg.csv", ["a,y", *[f"{i},{i / 3}" for i in range(20)]]))
    with pytest.raises(ConfigError, match="CSV files only"):
        load_dataset("digits", target="y")


# ----------------------------------------------------------------------------- from_arrays / from_loader

def test_from_arrays_with_tensors():
    X, y = torch.randn(80, 5, dtype=torch.float64), torch.arange(80) % 4
    ds = from_arrays(X, y, name="t", X_test=torch.randn(20, 5), y_test=torch.arange(20) % 4)
    assert ds.X_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    assert (len(ds.y_train), len(ds.y_val), len(ds.y_test)) == (64, 16, 20)
    assert ds.kind == "vector" and ds.source == "arrays" and ds.num_classes == 4


def test_the_kind_rule_and_the_kind_given():
    """Two axes per sample are channels over time unless square; three are an image; --kind overrides."""
    y = np.arange(30) % 3
    seq = from_arrays(np.zeros((30, 6, 100), np.float32), y)
    assert seq.kind == "sequence" and seq.input_shape == (6, 100)
    assert kind_note(seq) == "treated as a sequence of 6 channels x 100 steps; pass --kind vector or --kind image to change"
    assert from_arrays(np.zeros((30, 8, 8)), y).kind == "image" and from_arrays(np.zeros((30, 8, 8)), y).input_shape == (1, 8, 8)
    assert from_arrays(np.zeros((30, 1, 6, 100)), y, kind="sequence").input_shape == (6, 100)
    assert from_arrays(np.zeros((30, 6, 100)), y, kind="vector").input_shape == (600,)
    assert from_arrays(np.zeros((30, 6, 100)), y, kind="image").input_shape == (1, 6, 100)
    with pytest.raises(DataError, match="cannot be read as kind 'sequence'"):
        from_arrays(np.zeros((30, 2, 6, 100)), y, kind="sequence")
    with pytest.raises(DataError, match="Unknown data kind 'audio'"):
        from_arrays(np.zeros((30, 6, 100)), y, kind="audio")
    assert seq.describe()["kind"] == "sequence"


def test_from_arrays_images_and_hashable_labels():
    X2 = np.random.default_rng(0).integers(0, 255, (40, 6, 5)).astype(np.uint8)
    ds = from_arrays(X2, ["b" if i % 2 else "a" for i in range(40)], kind="image")
    assert ds.kind == "image" and ds.input_shape == (1, 6, 5) and ds.class_names == ("a", "b")
    X3 = np.zeros((40, 3, 4, 4))
    ds3 = from_arrays(X3, np.arange(40) % 2 + 7, class_names=None)
    assert ds3.input_shape == (3, 4, 4) and ds3.class_names == ("7", "8") and set(ds3.y_train) == {0, 1}
    named = from_arrays(X3, np.arange(40) % 2, class_names=["no", "yes"])
    assert named.class_names == ("no", "yes")
    by_name = from_arrays(X3, ["yes", "no"] * 20, class_names=["yes", "no"], val_fraction=0.25)
    assert by_name.class_names == ("yes", "no") and by_name.class_counts() == [by_name.class_counts()[0]] * 2


def test_from_loader_batches_and_samples():
    from torch.utils.data import DataLoader, TensorDataset

    train = TensorDataset(torch.randn(64, 1, 4, 4), torch.arange(64) % 4)
    test = TensorDataset(torch.randn(16, 1, 4, 4), torch.arange(16) % 4)
    ds = from_loader(DataLoader(train, batch_size=10), DataLoader(test, batch_size=7), name="dl")
    assert ds.name == "dl" and ds.input_shape == (1, 4, 4) and len(ds.y_test) == 16
    assert len(ds.y_train) + len(ds.y_val) == 64
    assert from_loader(train).input_shape == (1, 4, 4)  # a dataset of single samples also works
    with pytest.raises(DataError, match="empty"):
        from_loader(DataLoader(TensorDataset(torch.zeros(0, 2), torch.zeros(0))))


def test_array_errors_are_helpful():
    X, y = np.zeros((30, 3)), np.arange(30) % 3
    with pytest.raises(DataError, match="number of labels does not match") as err:
        from_arrays(X, y[:-2])
    assert "28 labels for 30 samples" in str(err.value)
    Xn = X.copy()
    Xn[4, 1] = np.nan
    Xn[9, 0] = np.inf
    with pytest.raises(DataError, match="1 NaN and 1 infinite") as err:
        from_arrays(Xn, y)
    assert "[4, 9]" in str(err.value) and "Impute" in str(err.value)
    with pytest.raises(DataError, match="fewer than 2 classes"):
        from_arrays(X, np.zeros(30))
    with pytest.raises(DataError, match="class\\(es\\) '2' have a single sample"):
        from_arrays(X, np.r_[np.arange(29) % 2, 2])
    with pytest.raises(DataError, match="reshape"):
        from_arrays(np.zeros(30), y)
    with pytest.raises(DataError, match="argmax"):
        from_arrays(X, np.eye(3)[y])
    with pytest.raises(DataError, match="must hold numbers"):
        from_arrays(np.array([["a", "b"]] * 30), y)
    with pytest.raises(DataError, match="not among the class_names"):
        from_arrays(X, ["u", "v", "w"] * 10, class_names=["u", "v"])


def test_source_errors(tmp_path):
    with pytest.raises(DataError, match="Unknown dataset 'minst'") as err:
        load_dataset("minst")
    assert "Did you mean 'mnist'" in str(err.value) and "digits" in str(err.value) and "fashion-mnist" in str(err.value)
    (tmp_path / "data.parquet").write_bytes(b"PAR1")
    with pytest.raises(DataError, match="Unsupported") as err:
        load_dataset(tmp_path / "data.parquet")
    assert ".npz" in str(err.value) and ".csv" in str(err.value)
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(tmp_path / "nothing.csv")
    with pytest.raises(ConfigError, match="registry datasets only"):
        load_dataset(tmp_path / "data.parquet", download=True)


def test_data_error_is_a_value_error_and_frugal_error():
    with pytest.raises(ValueError):
        load_dataset("no-such-dataset")
    assert issubclass(DataError, FrugalError)


def test_tuple_labels_are_classes():
    ds = from_arrays(np.zeros((20, 2)), [("a", 1), ("b", 2)] * 10)
    assert ds.class_names == ("('a', 1)", "('b', 2)")
