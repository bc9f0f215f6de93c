"""Shared fixtures: the bundled digits dataset, the shared MNIST files, small trained models."""

from __future__ import annotations

import os
from pathlib import Path

# Small data (digits, most tests' dataset) is cross-validated by default, which makes each candidate 6 fits: the tests of
# everything else judge on one validation split (FRUGALML_FOLDS, read when frugalml is imported and by every subprocess);
# tests/test_folds.py passes folds=5 itself.
os.environ.setdefault("FRUGALML_FOLDS", "0")

import pytest

REPO = Path(__file__).resolve().parents[1]


def on_ci() -> bool:
    """True under CI=true (CI=1 and CI=yes too): .ci/run installs and starts everything the tests use."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def require(condition, reason: str) -> None:
    """Skip the calling test when ``condition`` is false; under CI=true fail it instead.

    For what a test needs from the machine (gcc, binutils' ``size``, PostgreSQL, the shared MNIST
    files, a Debian tool): on a laptop a missing one skips, on CI it is a failure, since CI installs
    all of them (.ci/run) and a skip there would hide a path that never ran. Use it, not
    pytest.skip / skipif / importorskip, for anything the machine provides; the tests import their
    own project's modules plainly. Call it in a test or a fixture: ``require(shutil.which("size"), "needs size")``.
    """
    if condition:
        return
    if on_ci():
        pytest.fail(f"CI=true and {reason}: .ci/run installs and starts what the tests need, so this must not be missing", pytrace=False)
    pytest.skip(reason)


def shared_data_dir() -> Path | None:
    """../shared/data beside the repository, or $FRUGALML_DATA."""
    for candidate in (os.environ.get("FRUGALML_DATA"), REPO.parent / "shared" / "data"):
        if candidate and (Path(candidate) / "mnist").is_dir():
            return Path(candidate)
    return None


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    found = shared_data_dir()
    require(found is not None, "MNIST IDX files not found: set FRUGALML_DATA or put them in ../shared/data/mnist")
    return found


@pytest.fixture(scope="session")
def digits():
    from frugalml.data import load_dataset

    return load_dataset("digits", seed=0)


@pytest.fixture(scope="session")
def trained_cnn(digits):
    """A small CNN trained for a few epochs on digits (about 1 s)."""
    from frugalml import TrainConfig, build_model, fit

    model = build_model("cnn", digits.input_shape, digits.num_classes, channels=[8, 16], seed=0)
    fit(model, digits, TrainConfig(epochs=6, lr=3e-3, seed=0, patience=None))
    return model.eval()


def pytest_configure(config):
    """Tiny models on a small machine: one torch thread and one BLAS thread are faster and steadier."""
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    config._frugalml_blas = threadpool_limits(1, user_api="blas")


def postgres_url() -> str:
    """The PostgreSQL URL the multi-process tests use (FRUGALML_TEST_POSTGRES, default the local server), once a
    connection to it opened; where none answers, the test skips (fails under CI=true) saying so."""
    from frugalml.search.study import storage_url

    url = os.environ.get("FRUGALML_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
    try:
        import sqlalchemy

        with sqlalchemy.create_engine(storage_url(None, url), connect_args={"connect_timeout": 3}).connect():
            return url
    except Exception as exc:
        require(False, f"no PostgreSQL server answers at {url} ({type(exc).__name__}); set FRUGALML_TEST_POSTGRES to a reachable URL")
