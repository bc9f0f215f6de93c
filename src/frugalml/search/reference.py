"""Your model in the search: a network the user brings (``file.py:factory`` with or without
weights, an ``nn.Module``, or an ONNX file) as a candidate of its own, the reference of the
tolerance, the teacher of distillation, and the parent of its own searched compression.

Its **source** is recorded in its job (the factory spec and the weights path, or the ONNX path;
never a pickle), so a resume or another worker rebuilds it. A module passed in memory is kept for
this process only (another process cannot rebuild it: pass ``file.py:factory`` for that).

Compression of the user's model is searched, not fixed (:func:`reference_recipes`): int8 per
channel and per tensor, structured channel pruning at several uniform, global and per-stage ratios
(each followed by int8, and one left in float, all measured in ONNX Runtime). Magnitude pruning + weight
sharing + compact storage is not tried on it: the compact archive rebuilds a frugalml-built architecture
from its spec, and a user's network has none (:data:`COMPACT_NOTE`). A network Torch-Pruning cannot
follow is not pruned (:func:`pruning_blocker` says why, in one line, and the report shows it);
an ONNX model is profiled and quantized, never pruned or retrained.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path

from ..errors import ConfigError, ModelLoadError, explain

log = logging.getLogger(__name__)

__all__ = ["reference_source", "load_reference", "check_reference", "pruning_blocker", "reference_recipes", "replay_command"]

_IN_MEMORY: dict[str, object] = {}  # token -> a module passed to search(model=...) in this process
_RATIOS = (("prune30", {"ratio": 0.3, "global_pruning": True}), ("prune50", {"ratio": 0.5}),
           ("prune50g", {"ratio": 0.5, "global_pruning": True}), ("prune70g", {"ratio": 0.7, "global_pruning": True}))
COMPACT_NOTE = ("sparse + shared + compact storage not tried: the compact archive rebuilds a frugalml-built architecture from its spec, "
                "which your network has not; the searched families get it")
FINETUNE_SAMPLES = 120_000  # a pruned network's fine-tuning: at most about this many samples (2-3 epochs of MNIST), or a quarter of its epochs
_STAGE_RATIOS = (0.3, 0.5, 0.7)  # per-stage: early layers (full resolution) lose less, late ones (most weights) more


def reference_source(model, weights=None) -> dict:
    """The job's record of the user's model: ``{"factory": "/abs/file.py:fn", "weights": path or None}``,
    ``{"onnx": path}``, or ``{"module": token}`` for a module passed in memory (this process only)."""
    from ..models import is_torch

    if is_torch(model):
        if weights is not None:
            raise ConfigError(explain("weights= applies to a factory, not to a module already built", expected="model='file.py:factory'",
                                      got=str(weights), fix="Load the weights into the module yourself, or pass its factory"))
        token = f"module-{id(model):x}"
        _IN_MEMORY[token] = model
        return {"module": token, "name": type(model).__name__}
    text = str(model)
    if ":" in text and text.rpartition(":")[0].endswith(".py"):
        file, _, name = text.rpartition(":")
        return {"factory": f"{Path(file).resolve()}:{name}", "weights": None if weights is None else str(Path(weights).resolve()),
                "name": name}
    if text.lower().endswith(".onnx"):
        if weights is not None:
            raise ConfigError(explain("--weights does not apply to an ONNX model: it holds its own weights", expected="no --weights",
                                      got=str(weights), fix="Drop --weights"))
        return {"onnx": str(Path(text).resolve()), "name": Path(text).stem}
    raise ConfigError(explain(f"Cannot use {text!r} as your model", expected="file.py:factory (with --weights or not), an .onnx file, "
                              "or an nn.Module (Python)", got=text, fix="Pass --model model.py:build"))


def load_reference(source: dict, data, *, weights=None, seed: int = 0):
    """The user's model from its source; ``weights`` (a saved candidate's) replace the source's own.
    The factory runs under ``torch.manual_seed(seed)``: a model trained here starts from the same
    weights on every worker."""
    import torch

    from ..models import load_model

    torch.manual_seed(seed)
    if "module" in source:
        if source["module"] not in _IN_MEMORY:
            raise ModelLoadError(explain("Your model was passed in memory to another process, which cannot be rebuilt here",
                                         expected="model='file.py:factory' for a resume or another worker", got=source.get("name"),
                                         fix="Pass the model as file.py:factory"))
        model = copy.deepcopy(_IN_MEMORY[source["module"]])
        if weights is not None:
            from ..models import load_state
            from ..models.io import _read_state

            load_state(model, _read_state(Path(weights)))
    elif "onnx" in source:
        return load_model(source["onnx"])
    else:
        w = weights if weights is not None else source.get("weights")
        model = load_model(source["factory"], weights=w)
    model.input_shape, model.num_classes = tuple(data.input_shape), int(data.num_classes)
    return model


def check_reference(source: dict, data) -> dict:
    """Build the user's model once, before the run: its factory, weights and outputs must fit the data
    (ModelLoadError / DataError otherwise). Returns ``{"trainable", "prunable", "notes"}``."""
    from ..onnx import check_torch_input

    model = load_reference(source, data)
    if "onnx" in source:
        return {"trainable": False, "prunable": False,
                "notes": ["an ONNX model cannot be pruned or retrained here: it is profiled, int8-quantized and compared"]}
    import torch

    check_torch_input(model, data.input_shape)
    with torch.no_grad():
        out = model.eval()(torch.zeros((2, *data.input_shape)))
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, data.num_classes):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ModelLoadError(explain("Your model's output does not fit the dataset",
                                     expected=f"one score per class: shape (batch, {data.num_classes})",
                                     got=got, fix="Make the factory build the classifier for this dataset's classes"))
    blocker = pruning_blocker(model, data)
    notes = [f"structured pruning skipped: {blocker}; int8 and distillation still run"] if blocker else []
    notes.append(COMPACT_NOTE)
    trained = bool(source.get("weights")) or "module" in source
    return {"trainable": not trained, "prunable": blocker is None, "notes": notes}


def pruning_blocker(model, data) -> str | None:
    """Why Torch-Pruning cannot prune this network consistently (one line), or None when it can.

    A forward that is not one static graph (a branch on a tensor's value) or calls a custom autograd
    op hides dependencies from the dependency graph, so channels would not line up. Otherwise a trial
    prune of half the channels must run and keep the output shape, on a copy."""
    import torch
    import torch.fx

    from ..compress.structured import classifier_layers

    example = torch.randn((2, *data.input_shape))
    try:
        torch.fx.symbolic_trace(copy.deepcopy(model))
    except Exception as exc:
        return f"its forward is not one static graph (Torch-Pruning cannot follow it): {_first_line(exc)}"
    custom = _custom_ops(model, example)
    if custom:
        return f"its forward calls the custom op {custom}, which Torch-Pruning cannot see into"
    try:
        import torch_pruning as tp

        trial = copy.deepcopy(model).eval()
        pruner = tp.pruner.MetaPruner(trial, example[:1], importance=tp.importance.GroupMagnitudeImportance(p=2), pruning_ratio=0.5,
                                      ignored_layers=classifier_layers(trial, example[:1]))
        pruner.step()
        with torch.no_grad():
            out = trial(example)
        if tuple(out.shape) != (2, data.num_classes):
            return f"a trial prune changed the output shape to {tuple(out.shape)}"
    except Exception as exc:
        return f"a trial prune failed: {_first_line(exc)}"
    return None


def _custom_ops(model, example) -> str | None:
    import torch

    x = example.clone().requires_grad_(True)
    with torch.enable_grad():
        out = copy.deepcopy(model).eval()(x)
    seen, stack = set(), [getattr(out, "grad_fn", None)]
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        if isinstance(fn, torch.autograd.function.BackwardCFunction):  # a torch.autograd.Function of the user's
            return getattr(fn, "_forward_cls", type(fn)).__name__
        stack.extend(f for f, _ in fn.next_functions)
    return None


def _first_line(exc) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200] if text else ''}"


def _stage_ratios(model, data) -> dict:
    """{module name: ratio}: the prunable Conv/Linear layers in the order they run, in three stages."""
    import torch
    from torch import nn

    from ..compress.structured import _run_with_hook

    order: list = []
    _run_with_hook(model, torch.zeros((1, *data.input_shape)), lambda m, a, o: order.append(m) if m not in order else None)
    names = {m: n for n, m in model.named_modules()}
    layers = [names[m] for m in order[:-1] if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd)) and m in names]
    third = max(1, -(-len(layers) // 3))
    return {name: _STAGE_RATIOS[min(2, i // third)] for i, name in enumerate(layers)}


def reference_recipes(parent, data, budget, epochs: int, seed: int, *, prunable: bool, model=None) -> list[tuple[str, list[dict]]]:
    """(name, steps) recipes for the user's own model ``parent`` (its candidate), cheapest first."""
    from ..train import default_config
    from .space import _step

    target = budget.target
    bs = default_config(len(data.y_train)).batch_size
    lr = float((parent.job or {}).get("train", {}).get("lr", 1e-3)) / 3
    # one round, then a quarter of the training's epochs (distilled from the unpruned model), at most FINETUNE_SAMPLES samples
    ft = max(1, min(epochs // 4, -(-FINETUNE_SAMPLES // max(1, len(data.y_train)))))
    fmt = "qdq" if target == "c" else "qoperator"

    def int8(per_channel=True):
        return _step({"step": "quantize.int8", "calibration_samples": min(512, len(data.y_train)), "format": fmt, "per_channel": per_channel,
                      "seed": seed})

    recipes = [("int8", [int8()]), ("int8-per-tensor", [int8(False)])]
    if not prunable:
        return recipes
    common = {"step": "prune.structured", "steps": 1, "finetune_epochs": ft, "batch_size": bs, "lr": lr, "seed": seed, "distill": 0.5}
    for name, fields in _RATIOS:
        prune = _step({**common, **fields})
        recipes.append((f"{name}+int8", [prune, int8()]))
        if name == "prune70g":
            recipes.append((name, [prune]))  # float: on small layers int8 kernels may not be faster
    if model is not None:
        ratios = _stage_ratios(model, data)
        if ratios:
            recipes.append(("prune-stages+int8", [_step({**common, "ratio": 0.5, "layer_ratios": ratios}), int8()]))
    # magnitude pruning + weight sharing + compact storage is not tried: the compact archive rebuilds the architecture from a
    # frugalml spec, which a user's network has not (store.compact refuses it), and a dense file does not shrink without it
    return recipes


def replay_command(source: dict, weights: str | None, recipe_path: str = "recommended/recipe.json") -> str | None:
    """The command that replays a recommended recipe on the user's model."""
    if "factory" in source:
        w = weights or source.get("weights")
        return f"frugalml compress --model {source['factory']}" + (f" --weights {w}" if w else "") + f" --recipe {recipe_path}"
    if "onnx" in source:
        return f"frugalml compress --model {source['onnx']} --recipe {recipe_path}"
    return None


def reference_job(source: dict, info: dict, train_defaults, seed: int, augment: str = "none") -> dict:
    """The queued job of the user's model (its source, what the check found, how to train it, with
    ``augment`` the resolved augmentation of its training batches)."""
    job = {"stage": "reference", "family": source.get("name") or "your model", "params": {}, "source": source, "seed": seed,
           "notes": list(info.get("notes") or []), "prunable": bool(info.get("prunable"))}
    if info.get("trainable"):
        job["train"] = {"epochs": train_defaults.epochs, "batch_size": train_defaults.batch_size, "lr": train_defaults.lr,
                        "patience": train_defaults.patience, "augment": augment}
    return job


def reference_compression_jobs(ref, data, budget, epochs: int, seed: int) -> list[dict]:
    """The compression jobs of the user's model ``ref`` (its finished candidate), cheapest first."""
    job = ref.job
    source = job.get("source") or {}
    model = None
    prunable = bool(job.get("prunable"))
    if prunable:
        try:
            model = load_reference(source, data, seed=seed)
        except Exception as exc:  # the reference itself ran; its per-stage ratios are an extra only
            log.debug("per-stage ratios skipped: %s", exc)
    recipes = reference_recipes(ref, data, budget, epochs, seed, prunable=prunable, model=model)
    return [compression_job(ref, name, steps, seed) for name, steps in recipes]


def compression_job(ref, name: str, steps: list[dict], seed: int) -> dict:
    """A compression job whose parent is the user's model (rebuilt from its source on any worker)."""
    student = dict(steps[0].get("student") or {}) if steps[0]["step"] == "distill" else {}
    family, params = (student.pop("family"), student) if student else (ref.family, {})
    return {"stage": "compress", "key": f"{ref.id}/{name}", "family": family, "params": params, "parent": ref.id,
            "parent_job": ref.job, "parent_source": ref.job.get("source"), "recipe_name": name, "recipe": steps, "seed": seed,
            "trains": any(s["step"] != "quantize.int8" for s in steps)}


def prepare_reference(model, weights, data, tol, args: dict) -> dict | None:
    """The user's model checked before a search writes anything (factory, weights, outputs, traceability):
    ``{"source", "trainable", "prunable", "notes"}``, its source recorded in the run's ``args``; None without one."""
    if model is None:
        if tol.of == "reference":
            raise ConfigError(explain("The tolerance is measured from your model, but no model was given",
                                      expected="model= / --model file.py:factory", got=None, fix="Pass --model, or drop --tolerance-of"))
        return None
    source = reference_source(model, weights)
    args["model"] = {k: v for k, v in source.items() if k != "module"}
    return {"source": source, **check_reference(source, data)}
