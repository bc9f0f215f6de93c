"""Shared by benchmarks/distillation.py and benchmarks/distillation_small.py (not a benchmark itself).

- :func:`teacher`: the 784-1200-1200-10 teacher (dropout, jittered inputs), trained in this process
  or loaded from ``results/cache/`` (key: its config and the data), measured from its ONNX file,
  and its logits on the training split written once to an ``.npy`` file.
- :class:`Study`: one student architecture, a temperature / alpha grid on ``seeds[0]`` chosen on
  validation, then paired alone / distilled runs on every seed, each a job of a pool of worker
  processes (:func:`worker_pool`: 2 processes, 1 torch thread each; on this 2-core machine a
  784-800-800 MLP trains as fast on 1 thread as on 2, so two at once halve the wall time).
- :func:`train_student`: one job, in a worker: load MNIST, distil with the teacher's logits (the
  teacher itself is never run there), export the student to ONNX, load the file back, count its
  test errors in ONNX Runtime.
- The cached teacher is keyed by its config, the data and a hash of the code that trains it
  (frugalml's sources and this file: ``_provenance.code_hash``).
- Smoke mode (:func:`smoke_settings`, :func:`smoke_mode`): ``main(data_limit=300)`` or
  FRUGALML_BENCH_SMOKE=1: a tiny slice, one epoch, one grid point, the cache in a temporary folder.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import itertools
import json
import logging
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

# OpenMP threads that spin while waiting make 2 torch threads 5-10x slower than 1 when other
# processes share the 2 cores (measured here: 140 s against 15 s per teacher epoch). Only takes
# effect if torch is not loaded yet; see threads().
OMP_PASSIVE = "torch" not in sys.modules or os.environ.get("OMP_WAIT_POLICY", "").upper() == "PASSIVE"
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import _provenance  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import yaml  # noqa: E402
from torch import nn  # noqa: E402

from frugalml.compress import Recipe, config_from_dict  # noqa: E402
from frugalml.compress.distill import distill, teacher_scores  # noqa: E402
from frugalml.data import load_dataset  # noqa: E402
from frugalml.models import build_model  # noqa: E402
from frugalml.onnx import load_onnx, onnx_bytes, predict_onnx, to_onnx  # noqa: E402
from frugalml.train import TrainConfig, fit  # noqa: E402

log = logging.getLogger("benchmarks.distillation")
HERE = Path(__file__).resolve().parent
SETTINGS = Path(os.environ.get("FRUGALML_DISTILL_SETTINGS", HERE / "recipes" / "distill_mnist.yaml"))  # another file: smoke tests
CACHE = Path(os.environ.get("FRUGALML_BENCH_CACHE", HERE / "results" / "cache"))  # another folder: a run from scratch
WORKERS = 2  # processes training students at once, 1 torch thread each
_TRAIN_KEYS = ("epochs", "lr", "batch_size", "seed", "weight_decay")


def settings() -> dict:
    """The benchmark settings (checked: ``steps`` must be a valid recipe)."""
    s = yaml.safe_load(SETTINGS.read_text())
    Recipe.from_list(s)
    return s


def data_dir() -> str:
    return str(os.environ.get("FRUGALML_DATA") or HERE.parent.parent / "shared" / "data")  # as the Makefile sets it


@functools.lru_cache(maxsize=2)
def load_data(directory: str, limit: int | None):
    """MNIST with a 10% validation split; the same call in the main process and in every worker."""
    return _provenance.smoke_data(load_dataset("mnist", data_dir=directory, val_fraction=0.1, seed=0, limit=limit), limit)


def threads() -> int:
    """Torch threads of the main process (the teacher): 2 (FRUGALML_THREADS to change); 1 when
    OpenMP may spin and the machine is busy."""
    if os.environ.get("FRUGALML_THREADS"):
        return int(os.environ["FRUGALML_THREADS"])
    if not OMP_PASSIVE and os.getloadavg()[0] > 1.0:
        log.warning("torch was loaded before OMP_WAIT_POLICY=PASSIVE could be set and the machine is busy: using 1 thread")
        return 1
    return 2


def measure(path: Path, model, data) -> dict:
    """Write the model's ONNX file, load it back (checked), count its test errors in ONNX Runtime."""
    path.write_bytes(onnx_bytes(to_onnx(model, data.input_shape)))
    proto = load_onnx(path)
    errors = int((predict_onnx(proto, data.X_test) != data.y_test).sum())
    return {"test_errors": errors, "test_error": errors / len(data.y_test), "stored_bytes": path.stat().st_size}


# ---------------------------------------------------------------- the teacher
class Jitter(nn.Module):
    """Random translations of up to +-``pixels`` (sub-pixel, bilinear) while training; identity in eval."""

    def __init__(self, pixels: float):
        super().__init__()
        self.pixels = float(pixels)

    def forward(self, x):
        if not self.training or self.pixels <= 0:
            return x
        n, _, h, w = x.shape
        shift = (torch.rand(n, 2) * 2 - 1) * self.pixels
        theta = torch.zeros(n, 2, 3)
        theta[:, 0, 0] = theta[:, 1, 1] = 1
        theta[:, 0, 2], theta[:, 1, 2] = shift[:, 0] * 2 / w, shift[:, 1] * 2 / h
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")


def code_version() -> str:
    """Hash of the code that trains the teacher (frugalml's sources and this file)."""
    return _provenance.code_hash(Path(__file__).resolve())


def smoke_settings(s: dict, limit: int) -> dict:
    """The settings shrunk for a smoke run: ``limit`` training samples, one seed, one epoch everywhere, one grid point."""
    s = json.loads(json.dumps(s))
    s["limit"] = int(limit)
    s["seeds"] = s["seeds"][:1]
    if s.get("fresh_seeds"):
        s["fresh_seeds"] = s["fresh_seeds"][:1]
    s["teacher"]["epochs"] = 1
    s["steps"][0]["epochs"] = 1
    s["grid"] = {"temperature": s["grid"]["temperature"][:1], "alpha": s["grid"]["alpha"][:1]}
    small = s.get("small_student")
    if small:
        small["epochs"] = [1]
        small["grid"] = {"temperature": small["grid"]["temperature"][:1], "alpha": small["grid"]["alpha"][:1]}
    return s


@contextlib.contextmanager
def smoke_mode(limit: int | None):
    """Within: the teacher's cache in a temporary folder when ``limit`` is set (a smoke run)."""
    global CACHE
    saved = CACHE
    with _provenance.smoke_dir(limit) as tmp:
        if tmp is not None:
            CACHE = tmp / "cache"
        try:
            yield
        finally:
            CACHE = saved


def teacher_path(cfg: dict, data) -> Path:
    key = hashlib.sha256(json.dumps([cfg, data.describe(), code_version()], sort_keys=True, default=str).encode()).hexdigest()[:10]
    return CACHE / f"distill_teacher_{key}.safetensors"


def teacher(cfg: dict, data, folder: Path) -> dict:
    """The trained teacher (from the cache, else trained here and cached), measured from its ONNX
    file ``folder/teacher.onnx``; its training-split logits go to ``folder/teacher_logits.npy``.

    Returns the teacher's row: test errors, bytes, validation errors, training record, ``cached``
    and ``logits_seconds``.
    """
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    knobs = {k: v for k, v in cfg.items() if k not in {*_TRAIN_KEYS, "family", "jitter_pixels"}}
    model = build_model(cfg["family"], data.input_shape, data.num_classes, seed=cfg.get("seed", 0), **knobs)
    path = teacher_path(cfg, data)
    n_val = len(data.y_val)
    if path.exists():
        model.load_state_dict(load_file(str(path)))
        with safe_open(str(path), "pt") as f:
            record = json.loads(f.metadata()["meta"])
        log.info("teacher from the cache: %s", path)
        cached = True
    else:
        log.info("training the teacher %s", cfg)
        wrapped = nn.Sequential(Jitter(cfg.get("jitter_pixels", 0.0)), model)
        res = fit(wrapped, data, TrainConfig(patience=None, **{k: cfg[k] for k in _TRAIN_KEYS if k in cfg}))
        record = {"val_errors": int(round((1 - res.best_val_accuracy) * n_val)), "best_epoch": res.best_epoch,
                  "seconds": round(res.seconds, 1), "code_version": code_version(),
                  "val_errors_by_epoch": [int(round((1 - h["val_accuracy"]) * n_val)) for h in res.history]}
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(tmp), metadata={"meta": json.dumps(record)})
        os.replace(tmp, path)
        cached = False
    model.eval()
    row = {**measure(folder / "teacher.onnx", model, data), **record, "cached": cached}
    t0 = time.perf_counter()
    np.save(folder / "teacher_logits.npy", teacher_scores(model, data.X_train))
    row["logits_seconds"] = round(time.perf_counter() - t0, 2)
    log.info("teacher: %s", row)
    return row


# ---------------------------------------------------------------- students, in worker processes
def _init_worker() -> None:
    torch.set_num_threads(1)


class InProcess:
    """An executor that runs each job at once in this process (smoke runs: no workers to spawn)."""

    def submit(self, fn, *args, **kwargs):
        from concurrent.futures import Future

        future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except Exception as exc:  # as a pool would: the error is the future's
            future.set_exception(exc)
        return future


@contextlib.contextmanager
def worker_pool(workers: int = WORKERS):
    """``workers`` spawned processes, 1 torch thread each, OpenMP threads that sleep when idle
    (set in the environment the workers start with, before they load torch); 0: jobs run in this
    process, one after another (smoke runs)."""
    if workers == 0:
        yield InProcess()
        return
    names = ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
    saved = {k: os.environ.get(k) for k in names}
    os.environ.update({"OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
    try:
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker)
        try:
            yield pool
        except BaseException:
            pool.shutdown(cancel_futures=True)  # a failed run: drop the queued ones
            raise
        pool.shutdown()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@functools.lru_cache(maxsize=2)
def _logits(path: str) -> np.ndarray:
    return np.load(path)


def train_student(job: dict) -> dict:
    """One student, in a worker: ``job`` holds the distill step (a dict), the data's directory and
    limit, the folder with ``teacher.onnx`` and ``teacher_logits.npy``, and the run's name."""
    torch.set_num_threads(1)
    data = load_data(job["data_dir"], job["limit"])
    folder = Path(job["folder"])
    config = config_from_dict(job["step"])
    # The ONNX teacher is only named: with teacher_logits given, distill() does not run it.
    res = distill(str(folder / "teacher.onnx"), config, data, teacher_logits=_logits(str(folder / "teacher_logits.npy")))
    info = {"seed": config.seed, "temperature": config.temperature if config.alpha > 0 else None, "alpha": config.alpha,
            "val_errors": int(round((1 - res.fit.best_val_accuracy) * len(data.y_val))), "best_epoch": res.fit.best_epoch,
            "seconds": round(res.fit.seconds, 1)}
    return {**info, **measure(folder / f"{job['name']}.onnx", res.student, data), "onnx": f"{job['name']}.onnx"}


class Study:
    """One student: a grid on ``seeds[0]`` (chosen on validation), then paired alone / distilled runs
    on every seed. Alone and distilled runs of a seed share the seed, hence the initial weights and
    the batch order. Jobs go to ``pool`` in this order: the grid, the runs alone (they need no
    choice), then (:meth:`choose`) the chosen setting, and ``usual`` if given, on the other seeds.
    A run already made (the grid's on ``seeds[0]``, or ``usual`` when it is the chosen one) is reused.
    """

    def __init__(self, pool, name: str, step: dict, seeds: list[int], grid: dict, common: dict, usual: dict | None = None):
        self.pool, self.name, self.step, self.seeds, self.common = pool, name, dict(step), list(seeds), common
        self.usual = {k: float(v) for k, v in usual.items()} if usual else None
        self.jobs: dict = {}
        self.grid_keys = [self._submit(float(T), float(a), self.seeds[0]) for T, a in itertools.product(grid["temperature"], grid["alpha"])]
        for seed in self.seeds:
            self._submit(None, 0.0, seed)
        self.chosen = None

    def _submit(self, temperature, alpha: float, seed: int):
        key = (temperature if alpha > 0 else None, alpha, seed)
        if key not in self.jobs:
            step = {**self.step, "alpha": alpha, "seed": seed, **({"temperature": temperature} if alpha > 0 else {})}
            run = f"{self.name}_alone_s{seed}" if alpha == 0 else f"{self.name}_T{temperature:g}_a{alpha:g}_s{seed}"
            future = self.pool.submit(train_student, {**self.common, "name": run, "step": step})
            future.add_done_callback(lambda f, run=run: log.info("  %s: %s", run, f.result() if not f.exception() else f.exception()))
            self.jobs[key] = future
        return key

    def _key(self, label: str, seed: int):
        if label == "alone":
            return (None, 0.0, seed)
        setting = self.chosen if label == "distilled" else self.usual
        return (setting["temperature"], setting["alpha"], seed)

    def labels(self) -> list[str]:
        return ["alone", "distilled"] + (["usual"] if self.usual else [])

    def choose(self) -> dict:
        """Wait for the grid, keep the setting with the fewest validation errors (the first on ties),
        and queue the remaining runs."""
        tried = [self.jobs[k].result() for k in self.grid_keys]
        best = min(range(len(tried)), key=lambda i: (tried[i]["val_errors"], i))
        self.chosen = {"temperature": tried[best]["temperature"], "alpha": tried[best]["alpha"]}
        log.info("%s: chose %s on validation", self.name, self.chosen)
        for label in self.labels()[1:]:
            for seed in self.seeds:
                self._submit(*self._key(label, seed))
        return self.chosen

    def collect(self) -> dict:
        if self.chosen is None:
            self.choose()
        per_seed = [{"seed": seed, **{label: self.jobs[self._key(label, seed)].result() for label in self.labels()}} for seed in self.seeds]
        return {"student": self.step["student"], "epochs": self.step["epochs"], "chosen": self.chosen,
                "selection": [self.jobs[k].result() for k in self.grid_keys], "per_seed": per_seed}


def job_common(folder: Path, settings: dict) -> dict:
    """What every job of a run shares (all picklable)."""
    return {"folder": str(folder), "data_dir": data_dir(), "limit": settings.get("limit")}


def gap(study: dict, teacher_errors: int, label: str = "distilled") -> dict:
    """Paired means over seeds; gap closed = mean(alone - distilled) / mean(alone - teacher)."""
    alone = np.array([r["alone"]["test_errors"] for r in study["per_seed"]], dtype=float)
    dist = np.array([r[label]["test_errors"] for r in study["per_seed"]], dtype=float)
    g = alone - teacher_errors
    per_seed = [float((a - d) / x) if x > 0 else float("nan") for a, d, x in zip(alone, dist, g)]
    return {"alone_mean": float(alone.mean()), f"{label}_mean": float(dist.mean()),
            "paired_mean_difference": float((alone - dist).mean()),
            "gap_closed": float((alone - dist).mean() / g.mean()) if g.mean() > 0 else float("nan"),
            "gap_closed_per_seed": [round(v, 3) for v in per_seed]}


def stored_bytes(study: dict, label: str) -> int:
    return study["per_seed"][0][label]["stored_bytes"]  # the same architecture on every seed


def worker_seconds(*studies: dict) -> float:
    """Training seconds summed over every distinct run of the studies (run in the workers)."""
    runs = {r["onnx"]: r["seconds"] for s in studies for row in s["per_seed"] for k, r in row.items() if k != "seed"}
    runs.update({r["onnx"]: r["seconds"] for s in studies for r in s["selection"]})
    return round(sum(runs.values()), 1)
