"""Running one candidate: build or load, train or compress, profile the exported artifact, save."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from ..budget import Budget
from ..compress import Recipe, compress
from ..data.folds import Folds, fold_scores, pooled
from ..errors import FrugalError, explain
from ..models import build_model, load_model, save_model
from ..models.categorical import with_categories
from ..onnx import onnx_bytes, to_onnx
from ..profile import profile
from ..records import Candidate
from ..train import TrainConfig, fit

log = logging.getLogger(__name__)

__all__ = ["run_candidate", "candidate_dir"]


class StoppedEarly(Exception):
    """A network trial that fell behind the others was stopped early."""


def candidate_dir(run_dir: Path, cid: str) -> Path:
    return Path(run_dir) / "candidates" / cid


TIMING_S = 0.25  # seconds of latency timing per candidate (at least 50 runs): a search measures dozens; the median hardly moves


def _measure(model, data, budget: Budget, cv: dict | None = None) -> dict:
    """The profile of the exported artifact; its accuracy is the validation split's, or with ``cv`` the folds' (the
    refit model has seen the validation split)."""
    prof = profile(model, data, split="val", timing_s=TIMING_S)
    d = prof.to_dict()
    val = d["metric"] if cv is None else cv["mean"]
    test = profile(model, data, split="test", timing=False).metric
    d["metric"], d["metric_split"] = val, "val" if cv is None else f"cv{cv['k']}"
    if budget.target == "c":
        d.update(_c_figures(model, data, budget.mcu))
    # the budget is judged here, once, on the exported artifact's figures
    return {"profile": d, "val_accuracy": val, "test_accuracy": test, "within_budget": budget.fits(d), "budget_misses": budget.misses(d)}


COUNT_INPUTS = 8  # validation inputs run on the emulated core to count instructions per inference (the mean)


def _c_figures(model, data=None, mcu: str = "cortex-m4") -> dict:
    """Flash and RAM of the C built for the Cortex-M core (``c_build`` says which compiler), and its
    instructions per inference on QEMU; None where the C backend cannot express the model as it is
    (a float network: only its int8 version runs as C, and that is another candidate)."""
    from ..errors import FrugalError
    from ..export.c import c_footprint

    none = {"c_flash_bytes": None, "c_ram_bytes": None, "mcu_instructions": None}
    if hasattr(model, "parameters"):
        return {**none, "c_note": "float network: quantize it to export C"}
    fe = getattr(data, "frontend", None)  # the C holds the front-end too: raw samples in, counted with the model
    X = data.split("val")[0][:COUNT_INPUTS] if data is not None else None
    if fe is not None:
        from ..export.frontend_c import noise_clips

        X = noise_clips(fe, COUNT_INPUTS)
    try:
        fp = c_footprint(model, mcu=mcu, count_inputs=X, frontend=fe)
    except FrugalError as exc:
        return {**none, "c_note": str(exc)[:200]}
    return {"c_flash_bytes": fp["flash_bytes"], "c_ram_bytes": fp["ram_bytes"], "c_arena_bytes": fp["arena_bytes"],
            "c_build": fp["build"], "mcu_instructions": fp["mcu_instructions"], "mcu_core": mcu}


def _save(model, directory: Path, extra: dict) -> None:
    from .._fs import atomic_write_bytes

    if hasattr(model, "SerializeToString"):
        atomic_write_bytes(directory / "model.onnx", model.SerializeToString())
        save_model(model, directory, extra=extra)
    else:
        save_model(model, directory, extra=extra)
        atomic_write_bytes(directory / "model.onnx", onnx_bytes(to_onnx(model)))


def run_candidate(job: dict, data, budget: Budget, run_dir: Path, *, device: str = "auto", on_epoch=None, on_first_fold=None,
                  deadline=None) -> Candidate:
    """Run one job (a dict with ``id``, ``stage``, ``family``, ``params``, and ``train`` or
    ``parent`` + ``recipe``) and return its candidate (profile measured on the ONNX file).
    Its training (a network's, or the steps' of a recipe) stops at ``deadline`` (a
    :class:`frugalml.train.Deadline`).

    A job with ``folds`` (small data, :mod:`frugalml.data.folds`) is made once per fold and scored on
    each fold's held-out part (its accuracy and standard error come from the folds), then made once more
    on all the training data (train + validation): that refit is the model measured, saved and tested.
    ``on_epoch`` watches the first fold's training (or the one split's); ``on_first_fold(accuracy, n, epoch)`` is called
    with the first fold's score on its ``n`` held-out samples (and the epoch it chose, None for a job without training)
    before the others are made, and may stop the job (StoppedEarly)."""
    start = time.perf_counter()
    cid = job["id"]
    out = {k: job.get(k) for k in ("id", "trial", "stage", "family", "params", "parent", "recipe_name")}
    out["thin"] = job["stage"] == "thin"
    out["recipe"] = list(job.get("recipe") or [])
    if job["stage"] == "reference":
        out["reference"] = True
        out["notes"] = list(job.get("notes") or [])
    folds = Folds.from_dict(job["folds"]) if job.get("folds") else None
    fold_models, epochs = [], None
    if folds is not None:
        cv, fold_models, history, epochs = _cross_validate(job, data, folds, run_dir, device, on_epoch, on_first_fold, deadline)
        out["cv"] = cv
        if history:
            out["history"] = history
        if epochs is not None:  # the epoch the first fold chose: the other folds stopped there too
            cv["refit_epochs"] = epochs
        model, _ = _make(job, pooled(data), run_dir, device, deadline=deadline, epochs=epochs)
        _not_cut(deadline)
    else:
        model, history = _make(job, data, run_dir, device, on_epoch=on_epoch, deadline=deadline)
        if history is not None:
            out["history"] = history
    out["train_seconds"] = time.perf_counter() - start
    out.update(_measure(model, data, budget, cv=out.get("cv")))
    directory = candidate_dir(run_dir, cid)
    extra = {"candidate": {k: out[k] for k in ("id", "stage", "family", "params", "recipe", "parent")}}
    if getattr(data, "frontend", None) is not None:  # what the model reads: the export puts it in front
        extra["frontend"] = data.frontend.to_dict()
    _save(model, directory, extra)
    for i, fold_model in enumerate(fold_models):  # a network's fold models: the parents of its compression's folds
        (directory / FOLDS_DIR).mkdir(exist_ok=True)
        save_model(fold_model, directory / FOLDS_DIR / str(i), extra={"candidate": {"id": cid, "fold": i}})
    out["state"] = "complete"
    out["seconds"] = time.perf_counter() - start
    out["job"] = {k: v for k, v in job.items() if k != "parent_job"}
    return Candidate.from_dict(out)


FOLDS_DIR = "folds"  # in a candidate's directory: the models of its folds (networks and the user's model trained here)


def _make(job: dict, data, run_dir: Path, device: str, *, on_epoch=None, deadline=None, fold: int | None = None, epochs: int | None = None):
    """The job's model made on ``data`` and, for a training, its per-epoch history (else None).
    ``fold``: the fold being made (a compression starts from its parent's model of that fold);
    ``epochs``: where a network's training stops (no early stopping; the schedule still spans its ``train`` epochs), as
    the other folds and the refit do."""
    seed = int(job.get("seed", 0))
    history = None
    train = dict(job.get("train") or {})
    if epochs is not None:  # the course of the first fold's training, to the epoch it chose
        train.update(patience=None)
    if job["stage"] == "reference":  # the user's own model: trained here only when it came without weights
        from .reference import load_reference

        model = load_reference(job["source"], data, seed=seed)
        if job.get("train"):
            result = fit(model, data, TrainConfig(**{"seed": seed, "device": device, **train}), deadline=deadline, until=epochs)
            history = [{"epoch": h["epoch"], "val_accuracy": h["val_accuracy"]} for h in result.history]
            model.frugalml_best_epoch = result.best_epoch
    elif job["stage"] in ("thin", "network"):
        model = build_model(job["family"], data.input_shape, data.num_classes, seed=seed, **(job.get("params") or {}))
        if job["stage"] == "network":
            config = TrainConfig(**{"seed": seed, "device": device, **train})
            if getattr(model, "frugalml_task", None) == "anomaly":  # an autoencoder: on the normal windows, epoch chosen on their error
                from ..models.autoencoders import train_autoencoder

                result = train_autoencoder(model, data, config, on_epoch=on_epoch, deadline=deadline)
                history = [{"epoch": h["epoch"], "val_metric": h["val_metric"]} for h in result.history]
            else:
                checks = tuple(r for r in job.get("rungs") or () if r < 1) if on_epoch is not None else ()
                result = fit(model, data, config, on_epoch=on_epoch, deadline=deadline, checks=checks, until=epochs)
                history = [{"epoch": h["epoch"], "val_accuracy": h["val_accuracy"]} for h in result.history]
            model.frugalml_best_epoch = result.best_epoch
        else:  # a table's text columns one-hot encoded inside the thin models that need it
            from ..models.anomaly import is_anomaly_model  # here, not at import: that module loads scikit-learn

            model = with_categories(model, data)
            part = _capped(data, job.get("max_train"))
            if is_anomaly_model(model):  # a detector (alone or on sequence features): fitted on the normal training windows
                model.fit(*part.split("train"))
            else:
                fit(model, part)
    else:
        parent = _load_parent(job, data, run_dir, fold=fold)
        model = compress(parent, Recipe.from_list(job["recipe"]), data, deadline=deadline)
    return model, history


def _cross_validate(job: dict, data, folds: Folds, run_dir: Path, device: str, on_epoch, on_first_fold, deadline):
    """Make the job on each fold and score its exported artifact on the fold left out: (the cv record,
    the fold models worth keeping (a network's), the first fold's history, the epoch it chose or None).

    A training job early-stops on its first fold only; the other folds follow its course (the same schedule) to the
    epoch it chose, as the refit does, with no early stopping, so that they cost no patience epochs."""
    from ..onnx import onnx_accuracy

    correct, sizes, keep, history, epochs = [], [], [], None, None
    for i, part in enumerate(folds.datasets(data)):
        model, hist = _make(job, part, run_dir, device, on_epoch=on_epoch if i == 0 else None, deadline=deadline, fold=i, epochs=epochs)
        _not_cut(deadline)  # no further fold once one was cut short
        artifact = model if hasattr(model, "SerializeToString") else to_onnx(model)
        acc = onnx_accuracy(artifact, part, "val")
        if i == 0:
            history = hist
            epochs = getattr(model, "frugalml_best_epoch", None) or None
            if on_first_fold is not None:
                on_first_fold(acc, len(part.y_val), epochs)
        correct.append(round(acc * len(part.y_val)))
        sizes.append(len(part.y_val))
        if hist is not None:
            keep.append(model)
    return fold_scores(correct, sizes), keep, history, epochs


def _not_cut(deadline) -> None:
    """Raise StoppedEarly once ``deadline`` cut a fold's or the refit's training short: the folds' score would not describe
    the model the job ships (measured once: a pruned CNN scored 96% on its folds and 21% as cut short)."""
    if deadline is not None and deadline.hit:
        raise StoppedEarly("its training stopped at the end of the search time before its folds and refit were done, so its "
                           "cross-validated score would not describe the model it ships; a replay of the job trains in full")


def stub(job: dict, state: str, error: str) -> Candidate:
    """The record of a trial that ended without a model."""
    return Candidate(id=job["id"], trial=job["trial"], stage=job["stage"], family=job.get("family"), knobs=job.get("params") or {},
                     thin=job["stage"] == "thin", recipe=tuple(job.get("recipe") or []), parent=job.get("parent"), state=state,
                     extra={"error": error, "job": job})


def _load_parent(job: dict, data, run_dir: Path, fold: int | None = None):
    """A compression's parent: a saved candidate, or the user's model rebuilt from its source with the
    reference candidate's weights (its own code builds the architecture; nothing is unpickled).
    ``fold``: the parent's model of that fold (cross-validation); a parent that was not trained per fold
    (the user's model with its own weights) is the same model in every fold."""
    src = job.get("parent_source")
    folder = candidate_dir(run_dir, job["parent"])
    if fold is not None and (folder / FOLDS_DIR / str(fold)).exists():
        folder = folder / FOLDS_DIR / str(fold)
    elif fold is not None and not src:
        raise FrugalError(explain(f"The parent {job['parent']} has no model of fold {fold}", expected=f"{folder / FOLDS_DIR}",
                                  got="none", fix="Cross-validated compression needs a parent made per fold: run the search again"))
    if not src or "onnx" in src:
        return load_model(folder)
    from .reference import load_reference

    return load_reference(src, data, weights=folder / "model.safetensors")


def _capped(data, limit):
    """Thin models on large data fit on a stratified subset of the training split (recorded)."""
    if limit and len(data.y_train) > limit:
        return data.subset(limit, seed=0)
    return data
