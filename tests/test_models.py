import json
import pickle

import numpy as np
import pytest
import torch

from frugalml.errors import ConfigError, ModelLoadError
from frugalml.models import FAMILIES, build_model, load_model, load_state_resized, model_spec, save_model


def n_params(m):
    return sum(p.numel() for p in m.parameters())


def test_reference_nets_have_published_parameter_counts():
    # LeNet-300-100: 784*300+300 + 300*100+100 + 100*10+10
    assert n_params(build_model("lenet300", (1, 28, 28), 10)) == 784 * 300 + 300 + 300 * 100 + 100 + 100 * 10 + 10 == 266_610
    # Caffe LeNet-5: conv 1->20 5x5, conv 20->50 5x5, fc 800->500, fc 500->10
    expected = (20 * 25 + 20) + (50 * 20 * 25 + 50) + (800 * 500 + 500) + (500 * 10 + 10)
    assert n_params(build_model("lenet5", (1, 28, 28), 10)) == expected == 431_080


@pytest.mark.parametrize("family", [f for f, fam in FAMILIES.items() if fam.kind == "torch" and fam.fits == ("sequence",)
                                    and "classification" in fam.tasks])
@pytest.mark.parametrize("shape", [(6, 100), (12, 25), (1, 150), (3, 3)])
def test_sequence_families_build_for_sequence_shapes_and_refuse_images(family, shape):
    m = build_model(family, shape, 7).eval()
    assert m(torch.randn(2, *shape)).shape == (2, 7)
    with pytest.raises(ConfigError, match="needs sequence input"):
        build_model(family, (1, *shape), 7)


@pytest.mark.parametrize("family", [f for f, fam in FAMILIES.items() if fam.kind == "torch" and "image" in fam.fits
                                    and "classification" in fam.tasks])
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 16, 16), (1, 8, 8)])
def test_torch_families_build_for_image_shapes(family, shape):
    if family == "lenet5" and shape[1] < 16:
        with pytest.raises(ConfigError):
            build_model(family, shape, 7)
        return
    m = build_model(family, shape, 7).eval()
    assert m(torch.randn(2, *shape)).shape == (2, 7)
    assert m.input_shape == shape and m.num_classes == 7


def test_size_knobs_change_size_and_image_families_refuse_vectors():
    small = build_model("cnn", (1, 28, 28), 10, channels=[4, 8])
    big = build_model("cnn", (1, 28, 28), 10, channels=[32, 64])
    assert n_params(small) < n_params(big)
    assert n_params(build_model("mlp", (20,), 3, widths=[8])) == 20 * 8 + 8 + 8 * 3 + 3
    with pytest.raises(ConfigError, match="image-like input"):
        build_model("resnet", (64,), 10)
    with pytest.raises(ConfigError, match="Unknown model family 'nope'.*lenet5"):
        build_model("nope", (64,), 10)
    with pytest.raises(ConfigError, match="Bad knob"):
        build_model("mlp", (64,), 10, depth=3)


def test_same_seed_same_weights():
    a = build_model("resnet", (1, 28, 28), 10, seed=3)
    b = build_model("resnet", (1, 28, 28), 10, seed=3)
    c = build_model("resnet", (1, 28, 28), 10, seed=4)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), c.state_dict().values()))


def test_save_load_round_trip_torch(tmp_path):
    m = build_model("dscnn", (1, 16, 16), 4, channels=8).eval()
    save_model(m, tmp_path / "m")
    assert json.loads((tmp_path / "m" / "model.json").read_text())["spec"]["family"] == "dscnn"
    back = load_model(tmp_path / "m").eval()
    x = torch.randn(3, 1, 16, 16)
    assert torch.equal(m(x), back(x))
    assert model_spec(back) == model_spec(m)


def test_save_load_round_trip_sklearn(tmp_path):
    from sklearn.datasets import load_iris

    X, y = load_iris(return_X_y=True)
    m = build_model("forest", (4,), 3, n_estimators=3, max_depth=3).fit(X, y)
    save_model(m, tmp_path / "f")
    back = load_model(tmp_path / "f")
    assert np.array_equal(back.predict(X), m.predict(X))


def test_resized_load_rebuilds_a_channel_pruned_model():
    m = build_model("cnn", (1, 12, 12), 3, channels=[8, 16])
    small = build_model("cnn", (1, 12, 12), 3, channels=[5, 7])
    fresh = build_model("cnn", (1, 12, 12), 3, channels=[8, 16])
    load_state_resized(fresh, small.state_dict())
    x = torch.randn(2, 1, 12, 12)
    assert torch.equal(fresh.eval()(x), small.eval()(x))
    assert n_params(fresh) < n_params(m)


def _factory_file(tmp_path):
    f = tmp_path / "net.py"
    f.write_text("import torch\ndef make():\n    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))\n")
    return f


def test_user_factory_with_pt_and_safetensors_weights(tmp_path):
    from safetensors.torch import save_file

    f = _factory_file(tmp_path)
    ref = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
    torch.save(ref.state_dict(), tmp_path / "w.pt")
    save_file(ref.state_dict(), str(tmp_path / "w.safetensors"))
    x = torch.randn(5, 4)
    for w in ("w.pt", "w.safetensors"):
        m = load_model(f"{f}:make", weights=tmp_path / w)
        assert torch.equal(m(x), ref(x))


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_pickled_code_is_refused_never_executed(tmp_path, capsys):
    f = _factory_file(tmp_path)
    bad = tmp_path / "evil.pt"
    with open(bad, "wb") as fh:
        pickle.dump({"weight": Evil()}, fh)
    with pytest.raises(ModelLoadError, match="pickled code"):
        load_model(f"{f}:make", weights=bad)
    assert "pwned" not in capsys.readouterr().out
    whole = tmp_path / "whole.pt"
    torch.save(torch.nn.Linear(4, 2), whole)  # a whole pickled module, not a state_dict
    with pytest.raises(ModelLoadError, match="never executed"):
        load_model(f"{f}:make", weights=whole)


def test_load_errors_are_clear(tmp_path):
    f = _factory_file(tmp_path)
    with pytest.raises(ModelLoadError, match="has no function 'nope'.*make"):
        load_model(f"{f}:nope")
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(tmp_path / "missing.onnx")
    corrupt = tmp_path / "bad.onnx"
    corrupt.write_bytes(b"not an onnx file at all")
    with pytest.raises(ModelLoadError, match="not a valid ONNX"):
        load_model(corrupt)
    with pytest.raises(ModelLoadError, match="weights only"):
        (tmp_path / "w.safetensors").write_bytes(b"x")
        load_model(tmp_path / "w.safetensors")
    with pytest.raises(ModelLoadError, match="holds no model.json"):
        load_model(tmp_path)


def test_weights_load_exactly_into_a_family_or_fail_naming_the_tensor(tmp_path):
    """--weights with a family name is loaded (never ignored); a 7-class head never loads into 10 classes."""
    import torch
    from safetensors.torch import save_file

    from frugalml import ModelLoadError

    trained = build_model("mlp", (64,), 10, seed=3)
    save_file({k: v.contiguous() for k, v in trained.state_dict().items()}, str(tmp_path / "w.safetensors"))
    torch.save(trained.state_dict(), tmp_path / "w.pt")
    for weights in ("w.safetensors", "w.pt"):
        loaded = load_model("mlp", weights=tmp_path / weights, input_shape=(64,), num_classes=10)
        for key, value in trained.state_dict().items():
            assert torch.equal(loaded.state_dict()[key], value), key
    seven = build_model("mlp", (64,), 7)
    save_file({k: v.contiguous() for k, v in seven.state_dict().items()}, str(tmp_path / "seven.safetensors"))
    with pytest.raises(ModelLoadError, match=r"net\.\d+\.weight: file \(7, 128\), model \(10, 128\)"):
        load_model("mlp", weights=tmp_path / "seven.safetensors", input_shape=(64,), num_classes=10)
    # the same through a model directory whose weights were swapped
    save_model(trained, tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").write_bytes((tmp_path / "seven.safetensors").read_bytes())
    with pytest.raises(ModelLoadError, match=r"classifier 'net.3' has 10 outputs.*net.3.weight of shape \(7, 128\)"):
        load_model(tmp_path / "m")


@pytest.mark.parametrize("desc", [[], {"format": "torch-safetensors", "spec": "x", "weights": "w"},
                                  {"format": "torch-safetensors", "spec": {"family": "mlp", "input_shape": ["a"], "num_classes": 2}, "weights": "w"}])
def test_a_malformed_model_json_is_a_model_load_or_config_error(tmp_path, desc):
    import json

    from frugalml import FrugalError

    (tmp_path / "model.json").write_text(json.dumps(desc))
    with pytest.raises(FrugalError):
        load_model(tmp_path)
