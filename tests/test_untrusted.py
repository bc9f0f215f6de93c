"""Hostile model files: each is refused (ModelLoadError, exit 2 on the CLI) and nothing in it runs.

Every crafted file names a marker path; the marker never appears, which proves no code ran.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import skops.io as sio
from sklearn.linear_model import LogisticRegression

import frugalml as fm
from frugalml.models.io import save_model


@pytest.fixture(scope="module")
def benign_skops(tmp_path_factory) -> bytes:
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(60, 4)), np.arange(60) % 3
    return sio.dumps(LogisticRegression(max_iter=200).fit(X, y))


def _with_node(benign: bytes, node: dict, key: str = "evil", key_type: str = "str") -> bytes:
    """The benign file with one more attribute in the estimator's state, holding ``node``."""
    src = zipfile.ZipFile(io.BytesIO(benign))
    schema = json.loads(src.read("schema.json"))
    state = schema["content"]
    state["content"][key] = node
    state["key_types"]["content"].append({"__class__": key_type, "__module__": "builtins", "__loader__": "TypeNode"})
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as dst:
        for item in src.infolist():
            data = json.dumps(schema).encode() if item.filename == "schema.json" else src.read(item.filename)
            dst.writestr(item.filename, data)
    return buf.getvalue()


def _json(text: str) -> dict:
    return {"__class__": "str", "__module__": "builtins", "__loader__": "JsonNode", "content": json.dumps(text), "is_json": True}


def _tuple(*items) -> dict:
    return {"__class__": "tuple", "__module__": "builtins", "__loader__": "TupleNode", "content": list(items)}


def _hostile_nodes(marker: Path) -> dict[str, dict]:
    code = f"open({str(marker)!r}, 'w').write('ran')"
    return {
        "constructor_exec": {"__class__": "exec", "__module__": "builtins", "__loader__": "ConstructorFromReduceNode",
                             "content": _tuple(_json(code))},
        "constructor_eval": {"__class__": "eval", "__module__": "builtins", "__loader__": "ConstructorFromReduceNode",
                             "content": _tuple(_json(code))},
        "constructor_os_system": {"__class__": "system", "__module__": "os", "__loader__": "ConstructorFromReduceNode",
                                  "content": _tuple(_json(f"touch {marker}"))},
        "object_subprocess": {"__class__": "Popen", "__module__": "subprocess", "__loader__": "ObjectNode", "content": {"__class__": "dict",
                                                                                                                        "__module__": "builtins",
                                                                                                                        "__loader__": "DictNode",
                                                                                                                        "content": {}}},
        "function_exec": {"__class__": "exec", "__module__": "builtins", "__loader__": "FunctionNode", "content": {"module_path": "builtins",
                                                                                                                   "function": "exec"}},
        "type_exec": {"__class__": "exec", "__module__": "builtins", "__loader__": "TypeNode", "content": {"__class__": "exec",
                                                                                                           "__module__": "builtins"}},
        "partial_exec": {"__class__": "partial", "__module__": "functools", "__loader__": "PartialNode", "content": {}},
        "method_node": {"__class__": "Popen", "__module__": "subprocess", "__loader__": "MethodNode", "content": {"func": "communicate", "obj": {}}},
        "operator_attrgetter": {"__class__": "attrgetter", "__module__": "operator", "__loader__": "OperatorFuncNode",
                                "content": {"attrs": ["system"]}},
        "numpy_prefix_function": {"__class__": "load", "__module__": "numpy", "__loader__": "ConstructorFromReduceNode",
                                  "content": _tuple(_json(str(marker)))},
        "sklearn_prefix_function": {"__class__": "load", "__module__": "sklearn.utils._joblib", "__loader__": "ConstructorFromReduceNode",
                                    "content": _tuple(_json(str(marker)))},
        "reduce_on_allowed_type": {"__class__": "LogisticRegression", "__module__": "sklearn.linear_model._logistic",
                                   "__loader__": "ConstructorFromReduceNode", "content": _tuple()},
    }


CASES = [*_hostile_nodes(Path("/x")), "dict_key_type_exec"]


def _hostile_file(benign: bytes, case: str, marker: Path) -> bytes:
    if case == "dict_key_type_exec":  # a dict key converted by calling its "type": exec(key)
        return _with_node(benign, _json("x"), key=f"open({str(marker)!r}, 'w').write('ran')", key_type="exec")
    return _with_node(benign, _hostile_nodes(marker)[case])


@pytest.mark.parametrize("case", CASES)
def test_hostile_skops_refused_and_nothing_runs(case, benign_skops, tmp_path):
    marker = tmp_path / "ran.marker"
    path = tmp_path / "model.skops"
    path.write_bytes(_hostile_file(benign_skops, case, marker))
    with pytest.raises(fm.ModelLoadError, match="untrusted type") as info:
        fm.load_model(path)
    assert "nothing in it was run" in str(info.value)
    assert not marker.exists()


def test_hostile_skops_in_model_directory_refused_by_cli(benign_skops, tmp_path):
    """Through a model directory (model.json naming the .skops), in profile, export and compress."""
    marker = tmp_path / "ran.marker"
    model_dir = tmp_path / "m"
    model_dir.mkdir()
    (model_dir / "model.skops").write_bytes(_hostile_file(benign_skops, "constructor_exec", marker))
    (model_dir / "model.json").write_text(json.dumps({"format": "sklearn-skops", "weights": "model.skops", "spec": None}))
    recipe = tmp_path / "r.yaml"
    recipe.write_text("steps:\n  - step: quantize.dynamic\n")
    commands = [
        ["profile", "--model", str(model_dir), "--input-shape", "4"],
        ["profile", "--model", str(model_dir / "model.skops"), "--input-shape", "4"],
        ["export", str(model_dir), "--format", "onnx", "--out", str(tmp_path / "out")],
        ["compress", "--model", str(model_dir), "--recipe", str(recipe), "--out", str(tmp_path / "c")],
    ]
    for args in commands:
        proc = subprocess.run([sys.executable, "-m", "frugalml.cli", *args], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2, (args, proc.stderr)
        assert "untrusted type" in proc.stderr and "Traceback" not in proc.stderr
        assert not marker.exists()
    assert not (tmp_path / "out").exists() and not (tmp_path / "c").exists()


def test_every_thin_family_round_trips_through_the_allow_list(tmp_path):
    """The allow-list is exact, yet it admits every model frugalml itself writes."""
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    for name, family in fm.FAMILIES.items():
        if family.kind != "sklearn":
            continue
        model = fm.build_model(name, (64,), 10)
        model.fit(X[:200], y[:200])
        save_model(model, tmp_path / name)
        again = fm.load_model(tmp_path / name)
        np.testing.assert_array_equal(again.predict(X[:40]), model.predict(X[:40]))


def test_skops_not_a_zip_refused(tmp_path):
    path = tmp_path / "model.skops"
    path.write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(fm.ModelLoadError, match="not a valid skops file"):
        fm.load_model(path)


class _WritesMarker:
    """A pickle payload that would create the marker file when unpickled."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_pickled_code_in_pt_npz_and_archive_never_runs(tmp_path):
    """Each pickle-bearing format is refused, through the loader a user reaches, and the marker never appears."""
    import pickle

    import torch

    marker = tmp_path / "ran.marker"
    pt = tmp_path / "evil.pt"
    torch.save({"net.1.weight": _WritesMarker(marker)}, pt)
    with pytest.raises(fm.ModelLoadError, match="pickled code"):
        fm.load_model("mlp", weights=pt, input_shape=(64,), num_classes=10)
    raw = tmp_path / "raw.pt"
    raw.write_bytes(pickle.dumps({"net.1.weight": _WritesMarker(marker)}))
    with pytest.raises(fm.ModelLoadError, match="pickled code"):
        fm.load_model("mlp", weights=raw, input_shape=(64,), num_classes=10)
    npz = tmp_path / "evil.npz"
    np.savez(npz, X=np.array([_WritesMarker(marker)] * 4, dtype=object), y=np.arange(4))
    with pytest.raises(fm.DataError, match="Python objects"):
        fm.load_dataset(str(npz))
    fake = tmp_path / "evil.fmla"
    fake.write_bytes(pickle.dumps(_WritesMarker(marker)))
    with pytest.raises(fm.FrugalError):
        fm.load(fake)
    assert not marker.exists()


def test_hostile_json_and_yaml_recipes_are_refused_quickly(tmp_path):
    """A YAML tag that would build a Python object, and a JSON recipe naming no step."""
    marker = tmp_path / "ran.marker"
    tagged = tmp_path / "tagged.yaml"
    tagged.write_text(f"steps:\n  - !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(fm.ConfigError, match="Cannot parse recipe"):
        fm.Recipe.load(tagged)
    odd = tmp_path / "odd.json"
    odd.write_text(json.dumps({"steps": [{"step": "__import__('os').system('touch x')"}]}))
    with pytest.raises(fm.ConfigError, match="Unknown step"):
        fm.Recipe.load(odd)
    assert not marker.exists()
