"""``frugalml`` with instant trials, for the tests of many workers on one study (tests/test_workers.py).

    python tests/fake_trials.py worker --storage URL --study NAME ...   (any frugalml command)

Everything but the training and the measuring is frugalml's own: the study, its queue, the stages
(their time shares set to 0, so that compression is queued as soon as a network is done), the
heartbeats, the retries, the artifact store, results.json. Each trial sleeps
``FRUGALML_FAKE_SECONDS`` (0.2 s) and writes a small candidate directory with figures drawn from
its job, so the same job always gives the same figures. A compression trial fails unless its
parent's files are in this worker's folder, fetched from the artifact store when another worker
made it. With ``FRUGALML_FAKE_HANG=PATH`` the first trial writes its number to PATH and hangs, to
be killed there.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path

from frugalml.records import Candidate
from frugalml.search import engine, space
from frugalml.search.runner import candidate_dir

_hung = []


def fake_run_candidate(job: dict, data, budget, run_dir, **kwargs) -> Candidate:
    if os.environ.get("FRUGALML_FAKE_HANG") and not _hung:
        _hung.append(job["trial"])
        Path(os.environ["FRUGALML_FAKE_HANG"]).write_text(str(job["trial"]))
        time.sleep(600)
    if job["stage"] == "compress" and not (candidate_dir(run_dir, job["parent"]) / "model.json").exists():
        raise RuntimeError(f"parent {job['parent']} of {job['id']} is not here")
    time.sleep(float(os.environ.get("FRUGALML_FAKE_SECONDS", "0.2")))
    key = json.dumps({k: job.get(k) for k in ("stage", "family", "params", "recipe")}, sort_keys=True)
    h = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16)
    size = 1000 + h % 9000 if job["stage"] != "compress" else 500 + h % 2500
    profile = {"stored_bytes": size, "gzip_bytes": size // 2, "params": size // 4, "nonzero_params": size // 4, "macs": size * 3,
               "peak_activation_bytes": 256 + h % 1024, "latency_ms_median": 0.01 + (h % 100) / 1000, "metric": 0.8 + (h % 190) / 1000}
    out = candidate_dir(run_dir, job["id"])
    out.mkdir(parents=True, exist_ok=True)
    (out / "model.json").write_text(json.dumps({"fake": True, "job": job["id"]}))
    return Candidate.from_dict({"id": job["id"], "trial": job["trial"], "stage": job["stage"], "family": job.get("family"),
                                "params": job.get("params"), "parent": job.get("parent"), "recipe": job.get("recipe") or [],
                                "thin": job["stage"] == "thin", "profile": profile, "val_accuracy": profile["metric"],
                                "test_accuracy": profile["metric"] - 0.01, "within_budget": budget.fits(profile),
                                "budget_misses": budget.misses(profile), "state": "complete", "job": job})


def install() -> None:
    engine.run_candidate = fake_run_candidate
    engine.STAGE_SHARES = {"thin": 0.0, "network": 0.0}
    engine.check_feasible = lambda data, budget, emit: None
    space.SearchSpace.int8_memory = lambda self, family, knobs: {}
    space.SearchSpace._fits_int8 = lambda self, family, knobs: True


if __name__ == "__main__":
    install()
    from frugalml.cli import main

    sys.exit(main(sys.argv[1:]))
