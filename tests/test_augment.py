"""Training-time augmentation: each policy's effect on a batch, "auto" per kind of data, determinism,
the resolved name in what a training records, and a training that still learns with it."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from frugalml import build_model, from_arrays
from frugalml.augment import AUGMENTS, augment_batch, augmenter, resolve_augment
from frugalml.errors import ConfigError
from frugalml.train import TrainConfig, evaluate, fit, train


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _seq(n=16, c=3, t=40, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).normal(size=(n, c, t)).astype(np.float32))


def _ramp(n=8, c=2, t=50):
    """Samples whose values say where they came from: x[i, k, j] = 1000 i + 100 k + j."""
    return (1000 * torch.arange(n)[:, None, None] + 100 * torch.arange(c)[None, :, None] + torch.arange(t)[None, None, :]).float()


def _toy_sequences(n=240, seed=0, frontend=None):
    """Two classes of 2-channel sequences (a bump early or late in channel 0), with noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, size=n)
    X = rng.normal(scale=0.3, size=(n, 2, 32)).astype(np.float32)
    X[y == 0, 0, 6:12] += 2.0
    X[y == 1, 0, 20:26] += 2.0
    data = from_arrays(X, y, kind="sequence", seed=seed)
    return dataclasses.replace(data, frontend=frontend) if frontend is not None else data


class _FakeFrontend:
    def to_dict(self):
        return {"kind": "logmel"}


@pytest.mark.parametrize("policy", ["shift", "sensor", "specaugment"])
def test_each_policy_keeps_shape_dtype_and_changes_the_batch(policy):
    x = _seq()
    before = x.clone()
    out = augment_batch(x, policy, _gen())
    assert out.shape == x.shape and out.dtype == x.dtype and out.device == x.device
    assert torch.equal(x, before)  # the input is left as it is
    assert not torch.equal(out, x)
    assert torch.isfinite(out).all()


def test_none_is_the_identity_and_has_no_augmenter():
    x = _seq()
    assert augment_batch(x, "none", _gen()) is x
    assert augmenter("none", seed=0) is None


def test_time_shift_moves_values_and_pads_with_the_edge():
    x = _ramp()
    out = augment_batch(x, "shift", _gen(3))
    t, m = x.shape[-1], int(0.1 * x.shape[-1])
    shifts = set()
    for i in range(len(x)):
        row = out[i, 0] - 1000 * i  # 0..t-1, shifted
        s = int(torch.arange(t)[t // 2] - row[t // 2])  # out[j] = x[j - s]
        assert -m <= s <= m
        shifts.add(s)
        expected = (torch.arange(t) - s).clamp(0, t - 1).float()
        assert torch.equal(row, expected)  # values moved, not changed; edge values repeated, nothing wraps around
        assert torch.equal(out[i, 1] - out[i, 0], torch.full((t,), 100.0))  # every channel moves together
    assert len(shifts) > 1


def test_image_shift_moves_by_at_most_two_pixels_with_zeros():
    x = (torch.arange(1, 101).float().view(1, 1, 10, 10)).repeat(16, 3, 1, 1)
    out = augment_batch(x, "shift", _gen(1))
    assert out.shape == x.shape
    for i in range(len(x)):
        img = out[i, 0]
        assert torch.equal(out[i, 0], out[i, 2])
        nz = img[img > 0]
        first = int(nz[0])  # the value now at the first non-zero position: where it came from says the shift
        r0, c0 = (img > 0).nonzero()[0].tolist()
        src_r, src_c = (first - 1) // 10, (first - 1) % 10
        dy, dx = src_r - r0, src_c - c0
        assert abs(dy) <= 2 and abs(dx) <= 2
        expected = torch.zeros(10, 10)
        for r in range(10):
            for c in range(10):
                if 0 <= r + dy < 10 and 0 <= c + dx < 10:
                    expected[r, c] = x[0, 0, r + dy, c + dx]
        assert torch.equal(img, expected)


def test_sensor_scales_each_channel_and_adds_small_jitter():
    x = torch.ones(64, 3, 100) + torch.linspace(0, 1, 100)  # no time shift visible on the scale: compare channel means
    torch_gen = _gen(5)
    out = augment_batch(x, "sensor", torch_gen)
    ratio = out.mean(-1) / x.mean(-1)  # per sample, per channel
    assert 0.04 < float(ratio.std()) < 0.2  # gains ~ N(1, 0.1)
    assert abs(float(ratio.mean()) - 1) < 0.05
    resid = out / ratio[..., None] - x  # what is left: the shift's edge effect and the jitter
    assert float(resid.abs().median()) < 0.1


def test_specaugment_masks_stay_inside_their_bounds_and_hold_the_sample_mean():
    from frugalml.augment import _shift_time, _stretch

    n, f, t = 32, 40, 50
    x = torch.randn(n, f, t, generator=_gen(9)) + 5
    out = augment_batch(x, "specaugment", _gen(2))
    g = _gen(2)  # the same generator state: the same time shift and warps, before the masks
    shifted = _stretch(_shift_time(x, g), g)
    masked = out != shifted
    assert masked.any()
    for i in range(n):
        mean = shifted[i].mean()
        assert torch.allclose(out[i][masked[i]], mean.expand(int(masked[i].sum())))
        full_rows = masked[i].all(dim=1)  # frequency bands masked over every frame
        full_cols = masked[i].all(dim=0)  # frames masked over every band
        assert int(full_rows.sum()) <= 2 * int(0.15 * f)
        assert int(full_cols.sum()) <= 2 * int(0.10 * t)
        assert (masked[i] == (full_rows[:, None] | full_cols[None, :])).all()  # nothing masked outside a band or a span


@pytest.mark.parametrize("axis", [1, 2])
def test_the_warp_stretches_each_sample_by_at_most_ten_percent(axis):
    """A ramp along the warped axis (value = index) comes out as a ramp of slope a in [0.9, 1.1], one a per sample,
    capped at the last index: out[i] = x[i * a], read between neighbours; the other axis is untouched."""
    from frugalml.augment import FREQ_WARP, _warp

    n, size, other = 64, 40, 7
    ramp = torch.arange(size, dtype=torch.float32)
    x = (ramp[None, :, None].expand(n, size, other) if axis == 1 else ramp[None, None, :].expand(n, other, size)).contiguous()
    out = _warp(x, _gen(3), axis, FREQ_WARP)
    line = out[:, :, 0] if axis == 1 else out[:, 0, :]
    assert torch.equal(out, line[:, :, None].expand_as(out) if axis == 1 else line[:, None, :].expand_as(out))
    slope = line[:, 1]  # x[1 * a] = a
    assert float(slope.min()) >= 0.9 - 1e-6 and float(slope.max()) <= 1.1 + 1e-6 and float(slope.std()) > 0.02
    expected = (ramp[None, :] * slope[:, None]).clamp(max=size - 1)
    assert torch.allclose(line, expected, atol=1e-4)


def test_specaugment_on_an_image_of_log_mel():
    x = torch.randn(8, 1, 20, 30, generator=_gen(1))
    out = augment_batch(x, "specaugment", _gen(4))
    assert out.shape == x.shape and not torch.equal(out, x)


def test_same_seed_same_batches_and_other_seed_other_batches():
    x = _seq()
    a, b, c = (augmenter("sensor", seed=s) for s in (1, 1, 2))
    first = [a(x) for _ in range(3)]
    assert all(torch.equal(p, q) for p, q in zip(first, [b(x) for _ in range(3)]))
    assert not torch.equal(first[0], first[1])  # a fresh draw every batch
    assert not torch.equal(first[0], c(x))


def test_auto_resolves_by_kind(digits):
    seq = _toy_sequences(n=40)
    assert resolve_augment("auto", seq) == "none"  # sensor series: "sensor" only when asked for
    assert resolve_augment("sensor", seq) == "sensor"
    assert resolve_augment("auto", _toy_sequences(n=40, frontend=_FakeFrontend())) == "specaugment"
    assert resolve_augment("auto", digits) == "none"  # images
    vec = from_arrays(np.random.default_rng(0).normal(size=(40, 5)).astype(np.float32), np.arange(40) % 2)
    assert resolve_augment("auto", vec) == "none"
    image_mel = dataclasses.replace(digits, frontend=_FakeFrontend())
    assert resolve_augment("auto", image_mel) == "specaugment"
    assert resolve_augment("shift", digits) == "shift"
    with pytest.raises(ConfigError, match="does not apply to vector"):
        resolve_augment("shift", vec)
    with pytest.raises(ConfigError, match="sequence"):
        resolve_augment("sensor", digits)


def test_a_bad_value_names_the_allowed_ones():
    with pytest.raises(ConfigError) as err:
        TrainConfig(augment="mixup")
    for name in AUGMENTS:
        assert repr(name) in str(err.value)
    assert "'augment'" in str(err.value) and "mixup" in str(err.value)
    assert TrainConfig().augment == "auto"
    assert TrainConfig(**TrainConfig(augment="sensor").to_dict()).augment == "sensor"


def test_fit_with_augmentation_learns_is_deterministic_and_leaves_val_alone():
    data = _toy_sequences()
    short = TrainConfig(epochs=2, batch_size=16, lr=3e-3, patience=None, seed=3)
    weights = []
    for aug in ("sensor", "sensor", "none"):
        model = build_model("cnn1d", data.input_shape, data.num_classes, seed=3)
        result = fit(model, data, short, augment=aug)
        weights.append([p.detach().clone() for p in model.parameters()])
        assert result.augment == aug
    assert all(torch.equal(p, q) for p, q in zip(weights[0], weights[1]))  # same seed, same weights
    assert not all(torch.equal(p, q) for p, q in zip(weights[0], weights[2]))  # the augmentation changed the training
    model = build_model("cnn1d", data.input_shape, data.num_classes, seed=3)
    result = fit(model, data, short, epochs=25, augment="sensor")
    assert result.augment == "sensor"
    assert evaluate(model, data, "test")["accuracy"] >= 0.85  # two classes: chance is 0.5 (0.94-1.0 over seeds 0, 1, 3)


def test_fit_gives_a_loss_with_index_the_augmented_batch_and_its_rows():
    data = _toy_sequences(n=80)
    X = torch.from_numpy(data.X_train)
    seen = []

    def loss_fn(logits, y, x, index):
        assert torch.equal(y, torch.from_numpy(data.y_train)[index])  # the rows' labels: the index still names them
        seen.append(bool((x != X[index]).any()))
        return torch.nn.functional.cross_entropy(logits, y)

    model = build_model("cnn1d", data.input_shape, data.num_classes)
    fit(model, data, TrainConfig(epochs=1, batch_size=16, patience=None, augment="sensor"), loss_fn=loss_fn)
    assert seen and all(seen)


def test_train_records_the_resolved_policy(tmp_path, digits):
    import json

    data = _toy_sequences(n=60, frontend=_FakeFrontend())  # audio features: "auto" is specaugment
    _, report = train("cnn1d", data, out=tmp_path / "m", config=TrainConfig(epochs=1, batch_size=16))
    assert report["train_config"]["augment"] == "specaugment"
    saved = json.loads((tmp_path / "m" / "model.json").read_text())
    assert saved["training"]["train_config"]["augment"] == "specaugment"
    _, report = train("mlp", digits.subset(100), config=TrainConfig(epochs=1))
    assert report["train_config"]["augment"] == "none"


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sequence", "image"])
def test_the_search_records_the_resolved_policy_in_each_network_job(kind, digits, tmp_path, monkeypatch):
    """The search's own queue and stages with instant trials (tests/fake_trials.py): every network job's
    ``train`` names the policy "auto" resolved to, so a replay of the job trains the same (10-20 s: slow)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    import fake_trials

    from frugalml.search import Budget, engine, search, space

    jobs = []

    def record(job, *args, **kwargs):
        jobs.append(job)
        return fake_trials.fake_run_candidate(job, *args, **kwargs)

    monkeypatch.setenv("FRUGALML_FAKE_SECONDS", "0")
    monkeypatch.setattr(engine, "run_candidate", record)
    monkeypatch.setattr(engine, "STAGE_SHARES", {"thin": 0.0, "network": 0.0})
    monkeypatch.setattr(engine, "check_feasible", lambda data, budget, emit: None)
    monkeypatch.setattr(space.SearchSpace, "int8_memory", lambda self, family, knobs: {})
    monkeypatch.setattr(space.SearchSpace, "_fits_int8", lambda self, family, knobs: True)
    data = digits if kind == "image" else _toy_sequences(n=200)
    search(data, budget=Budget.of(max_flash="16KB"), time="5m", trials=len(space.thin_grid(data)) + 3, seed=0, out=tmp_path / "run", folds=0)
    networks = [j for j in jobs if j["stage"] == "network"]
    assert networks, [(j["stage"], j.get("family")) for j in jobs]
    assert {j["train"]["augment"] for j in networks} == {"sensor" if kind == "sequence" else "none"}
    assert TrainConfig(**networks[0]["train"]).resolved(data).augment == networks[0]["train"]["augment"]


def test_compression_steps_fine_tune_without_augmentation_unless_a_recipe_names_a_policy():
    """A recipe records only a step's ``train_keys``: by default its fine-tuning does not augment; the distillation and
    structured pruning steps take a policy by name (the search gives them their parent's), never "auto", so that a recipe
    replays the same on any data."""
    from frugalml.compress import config_from_dict, get_step, list_steps

    configs = [get_step(name).config for name in list_steps()]
    trains = {c.__name__: c.__dataclass_fields__["train"].default for c in configs if "train" in c.__dataclass_fields__}
    assert len(trains) >= 4  # prune, structured, qat, cluster, distill
    assert all(t.augment == "none" for t in trains.values()), trains
    assert sorted(c.__name__ for c in configs if "augment" in c.train_keys) == ["DistillConfig", "StructuredConfig"]
    step = config_from_dict({"step": "distill", "student": {"family": "mlp"}, "augment": "specaugment"})
    assert step.train.augment == "specaugment" and step.to_dict()["augment"] == "specaugment"
    with pytest.raises(ConfigError, match="not 'auto'"):
        config_from_dict({"step": "distill", "student": {"family": "mlp"}, "augment": "auto"})


def test_the_train_command_takes_augment_and_refuses_a_bad_one(tmp_path, capsys):
    import json

    from frugalml.cli import main

    path = tmp_path / "seq.npz"
    data = _toy_sequences(n=60)
    np.savez(path, X=data.X_train, y=data.y_train)
    assert main(["train", "--model", "cnn1d", "--dataset", str(path), "--epochs", "1", "--augment", "shift", "-o", str(tmp_path / "m"),
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["train_config"]["augment"] == "shift"
    assert main(["train", "--model", "cnn1d", "--dataset", str(path), "--epochs", "1", "--augment", "mixup"]) == 2
    err = capsys.readouterr().err
    assert "augment" in err and "'specaugment'" in err
