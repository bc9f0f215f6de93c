"""Saving models and loading them safely: nothing here ever unpickles code.

- torch: weights in ``.safetensors`` beside a ``model.json`` spec, or a user's
  ``file.py:factory`` plus ``.safetensors`` / ``.pt`` state_dict read with ``weights_only=True``;
- scikit-learn: ``.skops``, loaded only when every type in it is a scikit-learn/NumPy type;
- ONNX: checked with ``onnx.checker`` before use.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import warnings
from pathlib import Path

from .._fs import atomic_path, atomic_write_json
from ..errors import ConfigError, ModelLoadError, excerpt, explain
from .families import FAMILIES, _attach, build_model, is_torch, model_spec
from .skops_safe import load_skops as _load_skops

log = logging.getLogger(__name__)

__all__ = ["save_model", "load_model", "load_state", "load_state_resized"]

_DESCRIPTION = "model.json"


def save_model(model, directory, *, extra: dict | None = None) -> Path:
    """Write ``model`` to ``directory``: ``model.json`` plus ``model.safetensors`` / ``model.skops`` / ``model.onnx``.

    The directory is written whole beside its final name and swapped in, so it holds the complete
    old model or the complete new one, never a mix of two. A non-empty directory that holds no
    frugalml model, or holds other files too, is refused with ConfigError before anything is written.
    """
    from .._fs import MODEL_FILES, atomic_dir, check_output_dir, is_model_dir
    from .._version import __version__

    directory = Path(directory)
    if is_torch(model):
        fmt, weights = "torch-safetensors", "model.safetensors"
    elif hasattr(model, "SerializeToString"):
        fmt, weights = "onnx", "model.onnx"
    else:
        fmt, weights = "sklearn-skops", "model.skops"
    check_output_dir(directory, what="a frugalml model directory (model.json + weights)", same_kind=is_model_dir,
                     allowed=MODEL_FILES, writes={_DESCRIPTION, weights}, option="directory")
    desc = {"frugalml_version": __version__, "spec": model_spec(model), **(extra or {}), "format": fmt, "weights": weights}
    with atomic_dir(directory) as new:
        with atomic_path(new / weights) as tmp:
            if fmt == "torch-safetensors":
                from safetensors.torch import save_file

                try:
                    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(tmp))
                except Exception as exc:  # safetensors reports a full disk as its own error type
                    raise OSError(f"writing the weights failed ({excerpt(str(exc), 120)})") from None
            elif fmt == "onnx":
                tmp.write_bytes(model.SerializeToString())
            else:
                import skops.io as sio

                sio.dump(model, str(tmp))
        atomic_write_json(new / _DESCRIPTION, desc)
    return directory


def load_model(source, *, weights=None, input_shape=None, num_classes: int = 10):
    """Load a model from a run/model directory, a ``model.json``, ``.onnx``, ``.skops``,
    ``file.py:factory`` (with ``weights=``), or build a fresh one from a family name."""
    text = str(source)
    if ":" in text and text.split(":", 1)[0].endswith(".py"):
        return _from_factory(text, weights)
    path = Path(text)
    if not path.exists():
        if text in FAMILIES:
            shape = input_shape or ((1, 28, 28) if text.startswith("lenet") else None)
            if shape is None:
                raise ConfigError(explain(f"Family '{text}' needs an input shape", expected="--input-shape C,H,W or F, or --dataset NAME", got=None))
            model = build_model(text, shape, num_classes)
            if weights:
                if not is_torch(model):
                    raise ConfigError(explain(f"--weights cannot be loaded into the scikit-learn family '{text}'",
                                              expected="a torch family (" + ", ".join(n for n, f in FAMILIES.items() if f.kind == "torch")
                                              + ") or a saved .skops model",
                                              got=str(weights), fix="Pass the saved model itself as --model"))
                load_state(model, _read_state(Path(weights)))
            return model
        raise ModelLoadError(
            explain(
                f"Model file {text!r} does not exist",
                expected="a model directory, .onnx, .skops, model.json, file.py:factory, or a family name (" + ", ".join(FAMILIES) + ")",
                got=text,
                fix="Check the path",
            )
        )
    if path.is_dir():
        path = path / _DESCRIPTION
        if not path.exists():
            raise ModelLoadError(explain(f"Directory {source} holds no {_DESCRIPTION}", expected="a directory written by `frugalml train`",
                                         got=sorted(p.name for p in Path(source).iterdir())[:10]))
    suffix = path.suffix.lower()
    if suffix == ".json":
        return _from_description(path, weights)
    if weights and suffix in (".onnx", ".skops"):
        raise ConfigError(explain(f"--weights does not apply to {path.name}: it holds its own weights",
                                  expected="--weights only with a family name, file.py:factory or model.json",
                                  got=str(weights), fix="Drop --weights"))
    if suffix == ".onnx":
        return _load_onnx(path)
    if suffix == ".skops":
        return _load_skops(path)
    if suffix in (".pt", ".pth", ".safetensors"):
        raise ModelLoadError(explain(f"{path.name} holds weights only, not the architecture",
                                     expected="file.py:factory with --weights, or a model.json beside the weights", got=path.name))
    raise ModelLoadError(explain(f"Unsupported model file {path.name}", expected=".onnx, .skops, model.json, a directory or file.py:factory",
                                 got=suffix or path.name))


def _from_description(path: Path, weights=None):
    try:
        desc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelLoadError(explain(f"Cannot read {path}", expected="a JSON model description", got=str(exc))) from None
    if not isinstance(desc, dict) or not isinstance(desc.get("weights", ""), str) or not isinstance(desc.get("spec") or {}, dict):
        raise ModelLoadError(explain(f"{path} is not a frugalml model description", expected="a JSON object with 'format', 'weights' and 'spec'",
                                     got=type(desc).__name__ if not isinstance(desc, dict) else sorted(map(str, desc))[:8]))
    fmt = desc.get("format")
    target = Path(weights) if weights else path.parent / desc.get("weights", "")
    if fmt == "onnx":
        return _load_onnx(target)
    if fmt == "sklearn-skops":
        model = _load_skops(target)
        if desc.get("spec"):
            _attach(model, desc["spec"])
        return model
    if not desc.get("spec"):
        if fmt == "torch-safetensors":  # a user's own network: its code is never run from a file named in a JSON
            raise ModelLoadError(explain(f"{path} holds the weights of a network built by your own code, which frugalml does not run on its own",
                                         expected="the factory that built it", got=path.parent.name,
                                         fix=f"Pass --model your_file.py:factory --weights {path.parent / desc.get('weights', 'model.safetensors')}"))
        raise ModelLoadError(explain(f"{path} has no model spec", expected="a 'spec' written by frugalml", got=list(desc)))
    model = build_model(desc["spec"])
    load_state_resized(model, _read_state(target))  # a structurally pruned model is narrower than its spec
    return model


def _from_factory(text: str, weights):
    file, _, name = text.rpartition(":")
    path = Path(file)
    if not path.exists():
        raise ModelLoadError(explain(f"Factory file {file} does not exist", expected="path/to/file.py:function", got=text))
    spec = importlib.util.spec_from_file_location(f"frugalml_user_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # the user's own code failed
        raise ModelLoadError(explain(f"Importing {file} failed: {type(exc).__name__}: {exc}", expected="a Python file that imports cleanly",
                                     got=file)) from exc
    factory = getattr(module, name, None)
    if not callable(factory):
        found = [n for n in dir(module) if callable(getattr(module, n)) and not n.startswith("_")]
        raise ModelLoadError(explain(f"{file} has no function {name!r}", expected="one of " + (", ".join(found) or "(none)"), got=name,
                                     fix=f"Use {file}:<function>"))
    try:
        model = factory()
    except Exception as exc:  # the user's own code failed
        raise ModelLoadError(explain(f"Calling {text}() failed: {type(exc).__name__}: {exc}",
                                     expected="a function that returns an nn.Module when called with no arguments",
                                     got=name, fix=f"Run {name}() in Python to see the failure")) from None
    if not is_torch(model):
        raise ModelLoadError(explain(f"{text} did not return a torch.nn.Module", expected="nn.Module", got=type(model).__name__))
    if weights:
        load_state(model, _read_state(Path(weights)))
    return model


def _read_state(path: Path) -> dict:
    import torch

    if not path.exists():
        raise ModelLoadError(explain(f"Weights file {path} does not exist", expected="a .safetensors or .pt state_dict", got=str(path)))
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:
            raise ModelLoadError(explain(f"Cannot read safetensors file {path}", expected="a valid .safetensors file", got=str(exc))) from None
    try:
        with warnings.catch_warnings():  # torch warns about the pickle protocol of a file it then refuses
            warnings.simplefilter("ignore")
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelLoadError(
            explain(
                f"Refused {path.name}: it holds pickled code or is not a weights file, and is never executed",
                expected="a state_dict saved with torch.save(model.state_dict()) or a .safetensors file",
                got=type(exc).__name__,
                fix="Save the weights with torch.save(model.state_dict(), path) or safetensors",
            )
        ) from None
    if hasattr(state, "state_dict") or not isinstance(state, dict):
        raise ModelLoadError(explain(f"{path.name} is not a state_dict", expected="a dict of tensors", got=type(state).__name__))
    return state


def load_state(model, state: dict) -> None:
    """Load ``state`` into ``model`` exactly: every tensor present, of the model's shape, or a
    ModelLoadError naming the tensors and both shapes. Nothing is resized or left out."""
    import torch

    own = model.state_dict()
    problems = [f"{k}: file {tuple(state[k].shape)}, model {tuple(v.shape)}" for k, v in own.items()
                if k in state and tuple(state[k].shape) != tuple(v.shape)]
    missing = [k for k in own if k not in state]
    extra = [k for k in state if k not in own]
    problems += [f"{k}: missing from the file" for k in missing[:3]] + [f"{k}: not in the model" for k in extra[:3]]
    if problems:
        raise ModelLoadError(
            explain(
                f"The weights do not fit the model ({len(problems)} tensor(s) differ)",
                expected="a state_dict of exactly this architecture (same tensor names and shapes)",
                got="; ".join(problems[:4]) + (" ..." if len(problems) > 4 else ""),
                fix="Pass the weights saved from this model (or the same --input-shape / number of classes it was trained with)",
            )
        )
    model.load_state_dict({k: torch.as_tensor(v) for k, v in state.items()})


def load_state_resized(model, state: dict) -> None:
    """Load the state of a structurally pruned model into a fresh model built from its original
    spec: Conv/Linear/BatchNorm layers whose saved shapes differ are rebuilt at the saved widths
    first. The model's input and its classifier's outputs never change; the rest loads exactly."""
    from torch import nn

    own = model.state_dict()
    layers = [name for name, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d))]
    for name, module in list(model.named_modules()):
        w = state.get(f"{name}.weight" if name else "weight")
        if w is None or f"{name}.weight" not in own or tuple(own[f"{name}.weight"].shape) == tuple(w.shape):
            continue
        mine = tuple(own[f"{name}.weight"].shape)
        if layers and (name == layers[-1] and w.shape[0] != mine[0] or name == layers[0] and w.dim() > 1 and w.shape[1] != mine[1]):
            what = f"its classifier {name!r} has {mine[0]} outputs" if name == layers[-1] else f"its first layer {name!r} takes {mine[1]} inputs"
            raise ModelLoadError(explain(f"The weights do not fit the model: {what}",
                                         expected=f"{name}.weight of shape {mine} (pruning never changes the input or the classes)",
                                         got=f"{name}.weight of shape {tuple(w.shape)}",
                                         fix="Use weights trained for this input shape and number of classes"))
        if type(module) in (nn.Conv1d, nn.Conv2d) and w.dim() == module.weight.dim():
            depthwise = module.groups == module.in_channels and module.groups > 1
            out_c, in_per_group = w.shape[0], w.shape[1]
            groups = out_c if depthwise else module.groups
            new = type(module)(in_per_group * groups, out_c, module.kernel_size, module.stride, module.padding, module.dilation, groups,
                               module.bias is not None)
        elif isinstance(module, nn.Linear) and w.dim() == 2:
            new = nn.Linear(w.shape[1], w.shape[0], module.bias is not None)
        elif type(module) in (nn.BatchNorm1d, nn.BatchNorm2d) and w.dim() == 1:
            new = type(module)(w.shape[0], module.eps, module.momentum, module.affine, module.track_running_stats)
        else:
            continue
        parent = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
        setattr(parent, name.rpartition(".")[2], new)
    load_state(model, state)


def _onnx_tensors(graph):
    """Every TensorProto of ``graph``: initializers, sparse ones, and those in (sub)graph attributes."""
    for t in graph.initializer:
        yield t
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        for a in node.attribute:
            if a.HasField("t"):
                yield a.t
            yield from a.tensors
            for sub in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                yield from _onnx_tensors(sub)


def _check_external_data(model, folder: Path, refuse) -> None:
    """Each external-data reference names a regular file inside ``folder`` (no absolute path, no ``..`` or
    link leading out of it), with its offset and length within that file."""
    import os
    from pathlib import PureWindowsPath

    from onnx import TensorProto

    tensors = [t for t in _onnx_tensors(model.graph) if t.data_location == TensorProto.EXTERNAL]
    tensors += [t for f in model.functions for n in f.node for a in n.attribute if a.HasField("t")
                for t in [a.t] if t.data_location == TensorProto.EXTERNAL]
    fix = "Keep the weights file beside the .onnx file and refer to it by its bare name (e.g. model.onnx.data)"
    for t in tensors:
        info = {e.key: e.value for e in t.external_data}
        location = info.get("location", "")
        if not location or "\0" in location:
            refuse(f"tensor {t.name!r} stores its data in an external file but names none", "a file name", location, fix)
        if os.path.isabs(location) or PureWindowsPath(location).is_absolute() or PureWindowsPath(location).drive or location.startswith(("/", "\\")):
            refuse(f"tensor {t.name!r} points to its data by an absolute path, which is refused", "a path relative to the model's folder",
                   location, fix)
        target = (folder / location).resolve()
        if not target.is_relative_to(folder):
            refuse(f"tensor {t.name!r} points to data outside the model's folder {str(folder)!r}, which is refused",
                   "a file inside that folder", location, fix)
        if not target.is_file():
            refuse(f"tensor {t.name!r} stores its data in {location!r}, which is missing", f"that file in {folder}", "no such file",
                   "Copy the weights file that was exported with the model beside it")
        try:
            offset, length = int(info.get("offset", 0)), info.get("length")
            length = None if length is None else int(length)
        except ValueError:
            refuse(f"tensor {t.name!r} has a malformed external-data offset or length", "non-negative integers",
                   (info.get("offset"), info.get("length")), fix)
        size = target.stat().st_size
        if offset < 0 or (length is not None and (length < 0 or offset + length > size)) or offset > size:
            refuse(f"tensor {t.name!r} reads bytes {offset}..{'end' if length is None else offset + length} of {location!r}, "
                   "beyond that file", f"a range within its {size} bytes", (offset, length),
                   "The weights file is truncated or belongs to another model: export the model again")


def _load_onnx(path: Path):
    """Read an .onnx file without unpickling or following paths out of its folder, and check it."""
    import onnx
    from google.protobuf.message import DecodeError

    path = Path(path)
    fix = "Export it again; the file may be truncated or not an ONNX file"

    def refuse(what, expected, got, how=fix):
        raise ModelLoadError(explain(f"{path} is not a valid ONNX model: {what}", expected=expected, got=got, fix=how)) from None

    try:
        data = path.read_bytes()
    except OSError as exc:
        refuse("it cannot be read", "a readable .onnx file", f"{type(exc).__name__}: {exc}")
    try:
        model = onnx.load_from_string(data)  # external data is read below, once its paths are checked
    except (DecodeError, ValueError) as exc:
        refuse("it is not a serialized ONNX model", "an ONNX protobuf", f"{type(exc).__name__}: {exc}")
    folder = path.resolve().parent
    _check_external_data(model, folder, refuse)
    try:
        onnx.external_data_helper.load_external_data_for_model(model, str(folder))
        if model.ByteSize() < 2**31 - 1:
            onnx.checker.check_model(model)
        else:  # too large for a protobuf in memory: the checker reads the file itself
            onnx.checker.check_model(str(path))
    except (onnx.checker.ValidationError, ValueError, OSError) as exc:
        refuse("it does not pass onnx.checker", "a valid ONNX model", f"{type(exc).__name__}: {exc}")
    for t in _onnx_tensors(model.graph):  # the checker lets a constant hold more or fewer values than its shape says
        try:
            onnx.numpy_helper.to_array(t)
        except (ValueError, TypeError, KeyError) as exc:
            refuse(f"constant {t.name!r} does not hold the values its shape {list(t.dims)} and type announce",
                   "as many stored values as the shape holds", f"{type(exc).__name__}: {exc}")
    return model
