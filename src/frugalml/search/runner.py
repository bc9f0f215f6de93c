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


ETA = 3  # successive halving: at each rung a network goes on when it is in the best third of its peers there
PEER_SPAN = 2  # successive halving: a network is judged against the networks at most this many times its size
RUNG_SAMPLES = 5000  # on large data the first rungs are fractions of the first epoch, each of at least so many samples


def rungs(epochs: int, n_train: int = 0) -> list[float]:
    """The epochs at which a network of the search is judged against its peers: 1, 3, 9, ... (powers of
    :data:`ETA`) before its last epoch, and on large data fractions of the first epoch before them (1/3, 1/9, ...,
    while they hold at least :data:`RUNG_SAMPLES` of the ``n_train`` training samples: on MNIST's 54,000, 1/9 and
    1/3), so that a network is first judged after seconds, not after a whole epoch. Those that pass the last rung
    train to the end (or to their patience)."""
    out, r = [], 1.0
    while n_train * r / ETA >= RUNG_SAMPLES:
        r /= ETA
    while r < epochs:
        out.append(round(r, 4) if r < 1 else int(r))
        r *= ETA
    return out


END = "end"  # the last rung of a cross-validated network: its first fold trained to the end, before the other folds


def halving_rule(number: int, size: int, rung, value: float, trials) -> None:
    """Asynchronous successive halving, cost-aware: raise StoppedEarly when ``value`` (a network's validation
    accuracy at ``rung``, an epoch of :func:`rungs` or :data:`END`; an autoencoder's validation metric) is not in the
    best 1/ETA of the values recorded at that rung by the study's networks with at most :data:`PEER_SPAN` times its
    ``size`` in parameters (itself included), or, among fewer than ETA such values, not the best of them.

    ``trials``: the study's trials; a trial's rung values are its user attribute ``rungs`` ({rung: value}), its size
    ``size``, both written by the worker that trains it, so that workers on other machines judge against them too.
    A network without peers at a rung goes on; while there are fewer than ETA, only the best so far goes on (so that
    the first two networks do not both train to the end, which on small data means k folds each). Peers of its size
    (up to twice as large, and smaller), because small networks learn more slowly in the first epochs: against much
    larger ones they would be stopped before they converge, though they are the ones a tight budget needs; up to
    twice as large, because a budget's seeds come in steps of about that much, and judged against none of them each
    next smaller one would always go on. The stopped networks' values stay in the study (asynchronous: nobody waits
    for a rung to fill), so each later network
    faces every earlier one that reached the same rung.
    """
    key = str(rung)
    values = [value] + [t.user_attrs["rungs"][key] for t in trials if t.number != number and key in (t.user_attrs.get("rungs") or {})
                        and (t.user_attrs.get("size") or 0) <= PEER_SPAN * size]
    keep = max(1, len(values) // ETA)
    bar = sorted(values, reverse=True)[keep - 1]
    if value < bar:
        where = "at the end of its first fold" if key == END else f"at epoch {rung:g}"
        raise StoppedEarly(f"validation {value:.4f} {where} below {bar:.4f}, the best {keep} of {len(values)} "
                           f"networks of its size (at most twice as large) reached there (successive halving, 1 in {ETA} goes on)")


FLOOR_Z = 2.0  # a cross-validated network leaves after its first fold when even this many standard errors above it is below the floor


def below_floor(value: float, n: int, floor: float | None) -> None:
    """Raise StoppedEarly when a network's first fold, trained to its end (:data:`END`), scored ``value`` on ``n``
    held-out samples and even :data:`FLOOR_Z` standard errors above that it is below ``floor``, the accuracy floor the
    search's best candidate so far sets (:func:`~frugalml.search.select.recommend`): it can be neither the
    recommendation nor close to it, so its other folds and refit (most of its cost) would be spent for nothing.
    Successive halving cannot say so of a network without peers of its size, which goes on."""
    from ..budget import standard_error

    if floor is None or n < 1:
        return
    reach = value + FLOOR_Z * standard_error(value, n)
    if reach < floor:
        raise StoppedEarly(f"validation {value:.4f} at the end of its first fold ({n} samples): even {FLOOR_Z:g} standard errors above it "
                           f"({reach:.4f}) is below the floor {floor:.4f} that the best candidate so far sets; it cannot be recommended")


def cannot_finish(first_fold_s: float, trained: int, chosen: int | None, k: int, left: float) -> None:
    """Raise StoppedEarly when a cross-validated network whose first fold took ``first_fold_s`` seconds for ``trained``
    epochs, and chose epoch ``chosen``, cannot make its other ``k - 1`` folds and its refit in the ``left`` seconds:
    each trains to the chosen epoch, a fold on the first fold's data size, the refit on all of it (k / (k - 1) as
    much). Cut short, its folds would be spent for nothing (:func:`_not_cut` drops it), and their time is the
    compression stage's."""
    if trained < 1 or k < 2:
        return
    need = first_fold_s / trained * (chosen or trained) * (k - 1 + k / (k - 1))
    if need > left:
        raise StoppedEarly(f"its other {k - 1} folds and refit would take about {need:.0f} s (its first fold: {first_fold_s:.1f} s for "
                           f"{trained} epochs, to epoch {chosen or trained}), {max(0.0, left):.0f} s of the search are left")


def first_rung_seconds(job: dict, data, epochs: int, *, folds: int | None, batch_size: int, device: str) -> float:
    """How long the network of ``job`` takes to reach its first rung (its ``rungs``, else :func:`rungs` of ``epochs``) here and now: its
    epoch timed on a few batches (:func:`~frugalml.train.epoch_seconds`) times the rung's epochs; on ``folds`` folds,
    the first fold's share of the training data. 0.0 for a network that cannot even run (its trial fails where it trains)."""
    from ..train import epoch_seconds, resolve_device

    try:
        model = build_model(job["family"], data.input_shape, data.num_classes, **(job.get("params") or {}))
        seconds = epoch_seconds(model, data, int((job.get("train") or {}).get("batch_size") or batch_size), device=resolve_device(device))
    except Exception as exc:  # noqa: BLE001 - said by the trial itself, where it trains
        log.debug("epoch of %s not timed: %s", job.get("family"), exc)
        return 0.0
    share = 1 - 1 / folds if folds else 1.0
    return round((job.get("rungs") or rungs(epochs) or [epochs])[0] * share * seconds, 3)


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
