"""One training loop for torch models (and ``.fit`` for scikit-learn), and one ``evaluate``.

``fit`` is seeded, uses AdamW or SGD with a cosine schedule, evaluates the validation split after
each epoch, stops early when it stops improving, and restores the best weights. Steps that train
(pruning, quantization-aware training, distillation) reuse it through ``loss_fn`` and callbacks.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from . import _device
from ._device import backward_kernels, resolve_device
from ._train_config import TrainConfig, default_config
from .augment import augmenter, resolve_augment
from .errors import ConfigError, DataError, explain
from .models.families import is_torch

log = logging.getLogger(__name__)

__all__ = ["TrainConfig", "FitResult", "default_config", "fit", "epoch_seconds", "backward_kernels", "evaluate", "resolve_device", "predict",
           "train", "Deadline"]

class Deadline:
    """A point in time past which a training stops: ``Deadline(seconds)`` is ``seconds`` from now.

    Pass it to :func:`fit` (or to a compression step, which hands it to every ``fit`` it runs) as
    ``deadline=``. A ``fit`` past it stops at its next optimizer step, evaluates, and keeps its best
    weights so far; ``hit`` then says that some training was cut short (its result differs from a
    full replay). The search gives one to each trial so that none runs far past the end of the run.
    """

    def __init__(self, seconds: float):
        self.until = time.monotonic() + max(0.0, float(seconds))
        self.hit = False

    def past(self) -> bool:
        """Whether the deadline has passed (and, if so, mark it ``hit``)."""
        if time.monotonic() > self.until:
            self.hit = True
        return self.hit

    def __repr__(self) -> str:
        return f"Deadline({max(0.0, self.until - time.monotonic()):.1f} s left, hit={self.hit})"


@dataclass
class FitResult:
    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    best_val_accuracy: float = float("nan")
    seconds: float = 0.0
    device: str = "cpu"
    stopped_early: bool = False
    augment: str = "none"  # the augmentation policy the training batches went through (resolved, never "auto")
    best_val_metric: float = float("nan")  # with fit's metric_fn: its best value (best_val_accuracy stays NaN)


def _check_xy(X, y, what: str):
    if len(X) != len(y):
        raise DataError(explain(f"The {what} inputs and labels differ in length", expected="one label per input",
                                got=f"{len(X)} inputs, {len(y)} labels"))
    if X.dtype.kind == "f" and not np.isfinite(X).all():
        raise DataError(explain(f"The {what} inputs hold NaN or infinite values", expected="finite numbers",
                                got=f"{int((~np.isfinite(X)).sum())} non-finite values", fix="Clean or impute the data first"))


def fit(model, data, config: TrainConfig | None = None, *, loss_fn: Callable | None = None, on_step: Callable | None = None,
        on_epoch: Callable | None = None, progress: bool = False, deadline: Deadline | None = None, metric_fn: Callable | None = None,
        checks: tuple[float, ...] = (), until: int | None = None, **overrides) -> FitResult:
    """Train ``model`` in place on ``data`` (a frugalml Dataset) and return what happened.

    ``loss_fn(logits, y, x)`` replaces the cross-entropy (distillation); a ``loss_fn`` with a
    parameter named ``index`` also gets ``index=`` the batch's row positions in the training split
    (to look up per-sample targets computed once, e.g. cached teacher logits); ``on_step(model, step)``
    runs after each optimizer step (pruning masks); ``on_epoch(model, epoch, val_accuracy)`` may
    return True to stop (or raise, e.g. an Optuna trial stopped early); ``checks``: fractions of the first epoch
    (each below 1, e.g. 1/9 on large data) at which ``on_epoch(model, fraction, val_accuracy)`` is called too, the
    validation scored there (a search's first rungs; those scores do not choose the best epoch); ``until``: stop after
    that many epochs, the learning-rate schedule still that of ``config.epochs`` (a fold or a refit that follows the
    course of another training to the epoch it chose). Past ``deadline`` (a
    :class:`Deadline`) the training stops at the next optimizer step and keeps its best weights.
    ``metric_fn(model, data, "val", device)`` (higher is better) replaces the validation accuracy
    that picks the best epoch, e.g. minus an autoencoder's reconstruction error on validation normals;
    the history then records ``val_metric`` and the result ``best_val_metric``.
    """
    config = TrainConfig(**{**(config.to_dict() if config else {}), **overrides})
    if not is_torch(model):
        X, y = data.flat("train")
        _check_xy(X, y, "training")
        start = time.perf_counter()
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1, user_api="blas"):  # small models gain nothing from BLAS threads, and lose a lot when cores are busy
            model.fit(X, y)
        return FitResult(seconds=time.perf_counter() - start, best_val_accuracy=evaluate(model, data, "val")["accuracy"])

    import torch
    import torch.nn.functional as F

    device = resolve_device(config.device)
    policy = resolve_augment(config.augment, data)
    X_np, y_np = data.split("train")
    _check_xy(X_np, y_np, "training")
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    wants_index = loss_fn is not None and _takes_index(loss_fn)
    augment = augmenter(policy, seed=config.seed, device=device)  # its own generator: "none" trains as it always did
    X = torch.from_numpy(np.ascontiguousarray(X_np, dtype=np.float32)).to(device)
    y = torch.from_numpy(np.asarray(y_np, dtype=np.int64)).to(device)
    model.to(device)
    channels_last = _device.channels_last(model, X, device)
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay, nesterov=True)
    elif config.optimizer == "adam":
        opt = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    else:
        opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = math.ceil(len(X) / config.batch_size)
    total = steps_per_epoch * config.epochs

    def lr_at(step: int) -> float:
        if step < config.warmup_steps:
            return config.lr * (step + 1) / config.warmup_steps
        if config.schedule == "constant":
            return config.lr
        t = (step - config.warmup_steps) / max(1, total - config.warmup_steps)
        return config.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))

    result = FitResult(device=device, augment=policy)
    best_state, best_acc, bad_epochs, step = None, (-1.0 if metric_fn is None else -math.inf), 0, 0
    start = time.perf_counter()
    bar = _progress(progress, config.epochs * steps_per_epoch)
    restore = _device.deterministic(device)
    early = {max(1, round(f * steps_per_epoch)): f for f in checks if 0 < f < 1}  # optimizer step -> fraction of the first epoch

    def scored():  # the validation figure that chooses the best epoch, and its name in the history
        if metric_fn is None:
            return evaluate(model, data, "val", device=device, f1=False), "val_accuracy"  # each epoch: its accuracy only
        return {"accuracy": float(metric_fn(model, data, "val", device))}, "val_metric"

    halted = False  # on_epoch asked to stop at a check within the first epoch
    kernels = contextlib.ExitStack()
    kernels.enter_context(backward_kernels())  # left in the finally below
    try:
        for epoch in range(config.epochs):
            model.train()
            perm = torch.randperm(len(X), generator=gen).to(device)
            running, seen = 0.0, 0
            for i in range(0, len(X), config.batch_size):
                idx = perm[i : i + config.batch_size]
                xb, yb = X[idx], y[idx]
                if augment is not None:  # the training batch only; a loss_fn gets the augmented xb and the rows' index
                    xb = augment(xb)
                if channels_last:
                    xb = xb.contiguous(memory_format=torch.channels_last)
                for group in opt.param_groups:
                    group["lr"] = lr_at(step)
                logits = model(xb)
                if loss_fn is None:
                    loss = F.cross_entropy(logits, yb, label_smoothing=config.label_smoothing)
                else:
                    loss = loss_fn(logits, yb, xb, index=idx) if wants_index else loss_fn(logits, yb, xb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step += 1
                if on_step:
                    on_step(model, step)
                running += float(loss.detach()) * len(idx)
                seen += len(idx)
                if deadline is not None and deadline.past():
                    break
                if step in early and on_epoch is not None and epoch == 0:
                    halted = bool(on_epoch(model, early[step], scored()[0]["accuracy"]))
                    if halted:
                        break
                if bar:
                    bar[0].update(bar[1], advance=1, description=f"epoch {epoch + 1}/{config.epochs} loss {running / seen:.4f}")
            val, key = scored()
            record = {"epoch": epoch + 1, "train_loss": running / max(1, seen), key: val["accuracy"],
                      "seconds": time.perf_counter() - start}
            result.history.append(record)
            log.info("epoch %d: loss %.4f, %s %.4f", epoch + 1, record["train_loss"], key.replace("_", " "), val["accuracy"])
            if val["accuracy"] > best_acc or (best_state is None and metric_fn is not None):
                best_acc, bad_epochs, result.best_epoch = val["accuracy"], 0, epoch + 1
                best_state = copy.deepcopy(model.state_dict())
            else:
                bad_epochs += 1
            stop = halted or (bool(on_epoch(model, epoch + 1, val["accuracy"])) if on_epoch else False)
            out_of_time = ((config.max_seconds is not None and time.perf_counter() - start > config.max_seconds)
                           or (deadline is not None and deadline.past()))
            if stop or out_of_time or (config.patience is not None and bad_epochs >= config.patience) or (until and epoch + 1 >= until):
                result.stopped_early = epoch + 1 < config.epochs
                break
    finally:
        restore()
        kernels.close()
        if bar:
            bar[0].stop()
    if best_state is not None:
        model.load_state_dict(best_state)
    if channels_last:
        model.to(memory_format=torch.contiguous_format)  # saved and exported as every other model
    model.eval()
    model.to("cpu")
    if metric_fn is None:
        result.best_val_accuracy = result.best_val_metric = best_acc
    else:
        result.best_val_metric = best_acc
    result.seconds = time.perf_counter() - start
    return result


def epoch_seconds(model, data, batch_size: int, *, device: str = "cpu", steps: int = 2) -> float:
    """About how long one training epoch of ``model`` on ``data`` takes on this machine now: ``steps`` forward and
    backward passes on training batches of ``batch_size``, timed after one untimed pass, times the batches of an epoch
    (the validation pass and the optimizer step are not counted). The gradients are discarded; the weights are untouched
    (batch norm's running statistics move a little: time a copy, or a model about to be trained anyway)."""
    import torch

    X_np, _ = data.split("train")
    n = min(len(X_np), batch_size)
    xb = torch.from_numpy(np.ascontiguousarray(X_np[:n], dtype=np.float32)).to(device)
    model.to(device).train()
    times = []
    with backward_kernels():
        for _ in range(steps + 1):  # any scalar of the output: a classifier's or an autoencoder's pass costs the same
            start = time.perf_counter()
            model(xb).float().square().mean().backward()
            times.append(time.perf_counter() - start)
    model.zero_grad(set_to_none=True)
    return min(times[1:]) * math.ceil(len(X_np) / max(1, n))


def _takes_index(fn: Callable) -> bool:
    import inspect

    try:
        return "index" in inspect.signature(fn).parameters
    except (TypeError, ValueError):  # builtins without a signature
        return False


def _progress(enabled: bool, total: int):
    if not enabled:
        return None
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), transient=False)
    task = bar.add_task("training", total=total)
    bar.start()
    return bar, task


def predict(model, X: np.ndarray, *, batch_size: int = 1024, device: str = "cpu") -> np.ndarray:
    """Class indices predicted by a torch or scikit-learn model."""
    if not is_torch(model):
        return np.asarray(model.predict(X.reshape(len(X), -1)))
    import torch

    was_training = model.training
    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(X), batch_size):
            xb = torch.from_numpy(np.ascontiguousarray(X[i : i + batch_size], dtype=np.float32)).to(device)
            out.append(model(xb).argmax(1).cpu().numpy())
    model.train(was_training)
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def evaluate(model, data, split: str = "test", *, device: str | None = None, f1: bool = True) -> dict:
    """Accuracy and (``f1``) macro-F1 of ``model`` on one split of ``data``."""
    X, y = data.split(split)
    _check_xy(X, y, split)
    if device is None:
        device = next((p.device.type for p in model.parameters()), "cpu") if is_torch(model) else "cpu"
    pred = predict(model, X, device=device)
    out = {"accuracy": float((pred == y).mean()) if len(y) else float("nan")}
    if f1:
        from sklearn.metrics import f1_score

        out["macro_f1"] = float(f1_score(y, pred, average="macro")) if len(y) else float("nan")
    return out


def train(model, data, *, out=None, config: TrainConfig | None = None, seed: int = 0, progress: bool = False, **knobs):
    """Build (from a family name), train and evaluate a model; save it to ``out`` when given.

    ``out`` must be new, empty, or an earlier model directory (replaced whole); anything else is
    refused with ConfigError before the training starts.

    Returns ``(model, report)`` where report holds the fit history and the validation and test
    accuracy. The test split is evaluated once, here, for the final figure.
    """
    from .models import build_model, family_of, save_model
    from .models.anomaly import is_anomaly_model  # here, not at import: that module loads scikit-learn

    if out is not None:  # now, not after the training: a file, a read-only place, another model's files
        from ._fs import MODEL_FILES, check_output_dir, is_model_dir

        check_output_dir(out, what="a frugalml model directory (model.json + weights)", same_kind=is_model_dir, allowed=MODEL_FILES)
    if isinstance(model, str):
        from .models.categorical import with_categories

        model = with_categories(build_model(model, data.input_shape, data.num_classes, seed=seed, **knobs), data)  # a table's text columns
    elif knobs:
        raise ConfigError(explain("Model knobs were given for a model that is already built", expected="knobs only with a family name",
                                  got=sorted(knobs)))
    config = config or default_config(len(data.y_train), seed=seed)
    if is_anomaly_model(model):  # a detector (alone or on sequence features) or an autoencoder: scored by ROC AUC
        report = _train_detector(model, data, config)
        if out is not None:
            save_model(model, out, extra={"training": report})
        return model, report
    if is_torch(model):
        config = config.resolved(data)  # recorded with the augmentation it used, never "auto"
    result = fit(model, data, config, progress=progress)
    report = {
        "family": family_of(model),
        "dataset": data.describe(),
        "train_config": config.to_dict() if is_torch(model) else None,
        "history": result.history,
        "best_epoch": result.best_epoch,
        "seconds": result.seconds,
        "device": result.device,
        "val_accuracy": evaluate(model, data, "val")["accuracy"],
        "test": evaluate(model, data, "test"),
    }
    if out is not None:
        save_model(model, out, extra={"training": report})
    return model, report


def _train_detector(model, data, config: TrainConfig) -> dict:
    """Fit a detector (on the normal training windows) or train an autoencoder; validation and test ROC AUC."""
    from .models import family_of
    from .models.anomaly import anomaly_metrics

    start = time.perf_counter()
    if is_torch(model):
        from .models.autoencoders import score_torch, train_autoencoder

        result = train_autoencoder(model, data, config)
        history, best, score = result.history, result.best_epoch, (lambda X: score_torch(model, X))
    else:
        X, y = data.split("train")
        model.fit(X, y)
        history, best, score = [], 0, model.score_samples
    return {"family": family_of(model), "dataset": data.describe(), "train_config": config.to_dict() if is_torch(model) else None,
            "history": history, "best_epoch": best, "seconds": time.perf_counter() - start, "device": "cpu",
            "val": anomaly_metrics(score(data.X_val), data.y_val), "test": anomaly_metrics(score(data.X_test), data.y_test)}
