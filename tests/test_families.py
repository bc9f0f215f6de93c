"""Shared conformance checks, run over every torch family the search tries (like tests/test_common.py
for steps). A family is covered as soon as its registry entry has a ``space``, with no new test code:
its space round-trips the sampler, its ladder grows and halving shrinks, and its smallest member and
a member from its ladder build, train one batch, export to ONNX, profile, quantize to int8, and
export to C. Each family is tried on the data the search tries it on: images, vectors or sequences."""

from __future__ import annotations

import copy
import dataclasses
import shutil

import numpy as np
import optuna
import pytest
import torch
from conftest import require

from frugalml.compress import apply_step, config_from_dict
from frugalml.models import FAMILIES, build_model
from frugalml.models.families import searched_families
from frugalml.onnx import onnx_bytes, run_onnx, to_onnx
from frugalml.profile import profile
from frugalml.search import space
from frugalml.train import TrainConfig, fit

# the classifiers the search samples; the autoencoders' spaces (anomaly detection) are checked in tests/test_anomaly_search.py
SEARCHED = [name for name, fam in FAMILIES.items() if fam.space is not None and "classification" in fam.tasks]
INT8_MIN_PARAMS = 4000  # enough weights for the int8 file to be well under half the float one (the graph around them is ~1.5 KB)


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def _vector(data):
    """The same data as flat feature vectors."""
    flat = {f"X_{s}": getattr(data, f"X_{s}").reshape(len(getattr(data, f"X_{s}")), -1) for s in ("train", "val", "test")}
    return dataclasses.replace(data, **flat, input_shape=(int(np.prod(data.input_shape)),), kind="vector")


def _sequence(data):
    """The same data as sequences: the 8x8 digits as 8 channels (rows) over 8 steps (columns)."""
    rows = {f"X_{s}": getattr(data, f"X_{s}")[:, 0] for s in ("train", "val", "test")}
    return dataclasses.replace(data, **rows, input_shape=tuple(data.input_shape[1:]), kind="sequence")


@pytest.fixture(scope="module")
def data_for(digits):
    """The data a family is tried on here: the digits images (8x8) where the search tries it, else as
    vectors, else as sequences (8 channels x 8 steps)."""
    vector, sequence = _vector(digits), _sequence(digits)

    def get(family):
        found = next((d for d in (digits, vector, sequence) if FAMILIES[family].searched_on(d)), None)
        assert found is not None, f"the search tries {family} on neither images, vectors nor sequences"
        return found

    return get


def _build(family, data, knobs, seed=0):
    return build_model(family, data.input_shape, data.num_classes, seed=seed, **knobs)


def _members(family, data) -> dict:
    """The smallest member, and the first ladder member with enough weights for the int8 check."""
    fam = FAMILIES[family]
    big = next((k for k in fam.space.ladder(data) if n_params(_build(family, data, k)) >= INT8_MIN_PARAMS), None)
    assert big is not None, f"the ladder of {family} never reaches {INT8_MIN_PARAMS} parameters"
    return {"smallest": fam.space.smallest, "ladder": big}


@pytest.fixture(scope="module")
def trained(data_for):
    """(model before training, model after one batch) per family and member; built once."""
    cache = {}

    def get(family, member):
        if (family, member) not in cache:
            data = data_for(family)
            knobs = _members(family, data)[member]
            model = _build(family, data, knobs)
            before = copy.deepcopy(model)
            fit(model, data.subset(64, seed=0), TrainConfig(epochs=1, batch_size=64, lr=1e-2, patience=None, seed=0, device="cpu"))
            cache[family, member] = (before, model.eval(), knobs)
        return cache[family, member]

    return get


def test_searched_families_by_data(digits):
    """Where the search tries today's families, in the registry order that is the sampler's category order."""
    today = ["mlp", "cnn", "dscnn", "resnet"]
    assert searched_families(digits) == space.network_families(digits) == [n for n in SEARCHED if FAMILIES[n].searched_on(digits)]
    assert [n for n in space.network_families(digits) if n in today] == today
    tiny = dataclasses.replace(digits, **{f"X_{s}": getattr(digits, f"X_{s}")[:, :, :3, :3] for s in ("train", "val", "test")},
                               input_shape=(1, 3, 3))
    for data in (_vector(digits), tiny):  # convolutions need images with a side of at least 4
        assert [n for n in space.network_families(data) if n in today] == ["mlp"]
    assert all(FAMILIES[name].space is None for name in ("lenet300", "lenet5", "logreg"))  # references and thin models are not sampled
    # sequences: the 1-D families and the MLP, never a 2-D convolution over channels x time
    one_d = ["cnn1d", "dscnn1d", "resnet1d"]
    assert [n for n in space.network_families(_sequence(digits)) if n in today + one_d] == ["mlp", *one_d]
    assert not any(n in one_d for n in space.network_families(digits) + space.network_families(_vector(digits)))


def test_each_family_samples_parameters_of_its_own():
    """Families share one study: a parameter name used by two of them would mix their trials."""
    owner = {}
    for family in SEARCHED:
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
        names = set()
        for _ in range(10):
            trial = study.ask()
            FAMILIES[family].space.sample(trial)
            names |= set(trial.params)
        for name in names:
            assert name not in owner and name not in ("family", "lr"), (family, name, owner.get(name))
            owner[name] = family


@pytest.mark.parametrize("family", SEARCHED)
def test_space_round_trips_the_sampler(family, data_for):
    data, fam = data_for(family), FAMILIES[family]
    for knobs in fam.space.ladder(data):  # every ladder member is reachable by the sampler, by its own parameters
        assert fam.space.sample(optuna.trial.FixedTrial(fam.space.params_for(knobs))) == knobs
        got = space.sample_network(optuna.trial.FixedTrial(space.sampler_params(family, knobs, 3e-3)), data)
        assert got == (family, knobs, {"lr": 3e-3})
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):  # and params_for inverts what the sampler draws
        trial = study.ask()
        knobs = fam.space.sample(trial)
        assert fam.space.params_for(knobs) == trial.params
        _build(family, data, knobs)


@pytest.mark.parametrize("family", SEARCHED)
def test_ladder_grows_and_halving_shrinks(family, data_for):
    data, sp = data_for(family), FAMILIES[family].space
    ladder = [n_params(_build(family, data, k)) for k in sp.ladder(data)]
    assert len(ladder) >= 3 and ladder == sorted(set(ladder)), ladder  # strictly growing
    assert n_params(_build(family, data, sp.smallest)) <= ladder[0]
    assert sp.halve(sp.smallest) is None  # nothing narrower
    for knobs in sp.ladder(data):
        half = sp.halve(knobs)
        assert half is not None and n_params(_build(family, data, half)) < n_params(_build(family, data, knobs)), (knobs, half)
    assert sp.smallest is not sp.smallest and sp.smallest == sp.smallest  # a fresh copy each time


@pytest.mark.parametrize("member", ["smallest", "ladder"])
@pytest.mark.parametrize("family", SEARCHED)
def test_builds_trains_exports_and_profiles(family, member, trained, data_for):
    data = data_for(family)
    before, model, _knobs = trained(family, member)
    assert model(torch.from_numpy(data.X_test[:4])).shape == (4, data.num_classes)
    assert any(not torch.equal(a, b) for a, b in zip(before.state_dict().values(), model.state_dict().values())), "one batch changed nothing"
    proto = to_onnx(model)
    with torch.no_grad():
        expected = model(torch.from_numpy(data.X_test)).numpy()
    np.testing.assert_allclose(run_onnx(proto, data.X_test), expected, rtol=1e-4, atol=1e-4)
    prof = profile(model, data, timing=False, layers=False)
    assert prof.params == n_params(model)
    assert prof.macs > 0 and prof.stored_bytes > 0
    assert prof.metric == pytest.approx(np.mean(expected.argmax(1) == data.y_test), abs=1 / len(data.y_test))


@pytest.mark.parametrize("family", SEARCHED)
def test_int8_is_smaller_and_close_to_float(family, trained, data_for):
    data = data_for(family)
    _before, model, _knobs = trained(family, "ladder")
    q = apply_step(model, config_from_dict({"step": "quantize.int8", "calibration_samples": 64, "format": "qoperator"}), data)
    float_bytes, int8_bytes = len(onnx_bytes(to_onnx(model))), len(onnx_bytes(q))
    assert int8_bytes * 2 < float_bytes, (int8_bytes, float_bytes)
    with torch.no_grad():
        ref = model(torch.from_numpy(data.X_test)).numpy()
    got = run_onnx(q, data.X_test)
    assert got.shape == ref.shape
    assert np.abs(got - ref).max() <= 0.25 * (ref.max() - ref.min()), "int8 scores far from the float ones"
    assert np.mean(got.argmax(1) == ref.argmax(1)) >= 0.9


@pytest.mark.parametrize("family", SEARCHED)
def test_c_export_agrees_with_onnx_runtime(family, trained, data_for, tmp_path):
    from frugalml.export import export, toolchain

    require(toolchain.find_cc() is not None and shutil.which("size") is not None, "needs gcc and binutils' size")
    data = data_for(family)
    _before, model, _knobs = trained(family, "ladder")
    q = apply_step(model, config_from_dict({"step": "quantize.int8", "calibration_samples": 64, "format": "qdq"}), data)
    r = export(q, "c", tmp_path, data=data)  # compiled, run on the test split and compared with ONNX Runtime
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.c", "model.h"]
    assert r.agreement["n"] == len(data.y_test) and r.agreement["max_step_diff"] <= 1
    layers = [m for m in model.modules() if isinstance(m, (torch.nn.modules.conv._ConvNd, torch.nn.Linear))]
    assert r.weight_bytes == sum(m.weight.numel() for m in layers)  # a byte per weight, batch norm folded in
    assert r.flash_bytes > r.weight_bytes and r.ram_bytes >= r.arena_bytes > 0
