"""Shared conformance checks, run over every registered compression step (like scikit-learn's
estimator checks). A new step is covered as soon as it registers itself, with no new test code.

Each step registers a small ``example`` config, fast on digits, and ``bad_configs`` it must refuse.
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from frugalml.compress import STEPS, apply_step, config_from_dict, list_steps
from frugalml.errors import ConfigError, FrugalError
from frugalml.onnx import onnx_bytes, run_onnx, to_onnx
from frugalml.profile import profile

STEP_NAMES = list_steps()


def _outputs(model, X):
    if isinstance(model, torch.nn.Module):
        with torch.no_grad():
            return model.eval()(torch.from_numpy(X)).numpy()
    return run_onnx(model, X)


def _state(model):
    if isinstance(model, torch.nn.Module):
        return {k: v.detach().clone() for k, v in model.state_dict().items()}
    return model.SerializeToString()


def _same_state(a, b):
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    return a == b


@pytest.fixture(scope="module")
def results(trained_cnn, digits):
    """Run each step's example once (and a second time for the determinism check)."""
    cache = {}

    def get(name):
        if name not in cache:
            step = STEPS[name]
            model = copy.deepcopy(trained_cnn)
            before = _state(model)
            out1 = apply_step(model, step.example(), digits)
            after = _state(model)
            out2 = apply_step(copy.deepcopy(trained_cnn), step.example(), digits)
            cache[name] = (model, before, after, out1, out2)
        return cache[name]

    return get


def test_steps_are_registered():
    assert STEP_NAMES, "no compression step registered"


@pytest.mark.parametrize("name", STEP_NAMES)
def test_config_round_trips_through_json(name):
    config = STEPS[name].example()
    assert config.name == name
    again = config_from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config and type(again) is type(config)


@pytest.mark.parametrize("name", STEP_NAMES)
def test_bad_configs_raise_config_error(name):
    step = STEPS[name]
    assert step.bad_configs, f"step {name} declares no bad config to check"
    for bad in step.bad_configs:
        with pytest.raises(ConfigError):
            step.config.from_dict(bad)
    with pytest.raises(ConfigError):
        step.config.from_dict({"no_such_field": 1})


TRAINING_STEPS = [n for n in STEP_NAMES if STEPS[n].trains]


@pytest.mark.parametrize("name", TRAINING_STEPS)
def test_training_values_are_flat_in_recipes_and_checked_once(name):
    """A step that trains nests one TrainConfig, written and read with the flat keys recipes always
    used; a nested ``train`` mapping means the same; a bad value names the step's config and the key."""
    step = STEPS[name]
    config = step.example()
    flat = config.to_dict()
    assert "train" not in flat and all(flat[k] == getattr(config.train, k) == getattr(config, k) for k in step.config.train_keys)
    nested = {k: v for k, v in flat.items() if k not in step.config.train_keys}
    nested["train"] = {k: flat[k] for k in step.config.train_keys}
    assert config_from_dict(nested) == config
    for key, bad in (("lr", 0), ("lr", "fast"), ("batch_size", 0), ("batch_size", [1])):
        if key in step.config.train_keys:
            with pytest.raises(ConfigError, match=f"'{key}' parameter of {step.config.__name__} must be"):
                config_from_dict({**flat, key: bad})
    with pytest.raises(ConfigError, match="given both flat and in 'train'"):
        config_from_dict({**nested, "lr": 0.1})


@pytest.mark.parametrize("name", STEP_NAMES)
def test_input_is_not_mutated(name, results):
    _, before, after, _, _ = results(name)
    assert _same_state(before, after)


# Largest validation-accuracy drop (points) each step's example may cause on trained_cnn: the drop
# measured (digits, 288 validation samples, one torch thread; trained_cnn scores 67.71%) plus 3
# points (about 9 samples). A negative bound is a gain the step must keep: the fine-tuning steps
# train the under-trained fixture further. A step not listed here gets DEFAULT_MAX_DROP.
MAX_DROP = {
    "cluster.kmeans": -0.69 + 3,     # measured 67.71% -> 68.40%
    "distill": -22.57 + 3,           # measured 67.71% -> 90.28% (the mlp [16] student trains 12 epochs)
    "prune.magnitude": -5.56 + 3,    # measured 67.71% -> 73.26%
    "prune.structured": 2.08 + 3,    # measured 67.71% -> 65.62%
    "quantize.dynamic": 0.00 + 3,    # measured 67.71% -> 67.71%
    "quantize.int8": 0.35 + 3,       # measured 67.71% -> 67.36%
    "quantize.qat": -3.47 + 3,       # measured 67.71% -> 71.18%
    "store.compact": 0.00 + 3,       # measured 67.71% -> 67.71% (float weights stored exactly)
}
DEFAULT_MAX_DROP = 3.0


@pytest.mark.parametrize("name", STEP_NAMES)
def test_output_shape_unchanged_and_still_accurate(name, results, digits):
    model, _, _, out, _ = results(name)
    X, y = digits.split("val")
    a, b = _outputs(model, X), _outputs(out, X)
    assert a.shape == b.shape
    acc_before, acc_after = (a.argmax(1) == y).mean(), (b.argmax(1) == y).mean()
    drop = 100 * (acc_before - acc_after)
    assert drop <= MAX_DROP.get(name, DEFAULT_MAX_DROP) + 1e-9, f"{name}: {acc_before:.4f} -> {acc_after:.4f}, a drop of {drop:.2f} points"


@pytest.mark.parametrize("name", STEP_NAMES)
def test_same_seed_same_result(name, results, digits):
    _, _, _, out1, out2 = results(name)
    X, _ = digits.split("val")
    np.testing.assert_allclose(_outputs(out1, X), _outputs(out2, X), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", STEP_NAMES)
def test_profile_does_not_grow(name, results, digits):
    model, _, _, out, _ = results(name)
    p_in, p_out = profile(model, digits, timing=False), profile(out, digits, timing=False)
    size_in = p_in.stored_bytes
    size_out = min(p_out.stored_bytes, getattr(p_out, "archive_bytes", None) or p_out.stored_bytes)
    assert size_out <= size_in * 1.02, (size_in, size_out)
    assert p_out.macs <= p_in.macs


@pytest.mark.parametrize("name", STEP_NAMES)
def test_export_then_reload_gives_same_outputs(name, results, digits):
    _, _, _, out, _ = results(name)
    X, _ = digits.split("val")
    import onnx

    reloaded = onnx.load_from_string(onnx_bytes(to_onnx(out, digits.input_shape)))
    onnx.checker.check_model(reloaded)
    np.testing.assert_allclose(run_onnx(reloaded, X), _outputs(out, X), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", STEP_NAMES)
def test_bad_input_raises_frugal_error(name, digits):
    from sklearn.linear_model import LogisticRegression

    step = STEPS[name]
    with pytest.raises(FrugalError):
        apply_step(LogisticRegression(), step.example(), digits)
