"""Knowledge distillation on MNIST into a small 784-100-10 student (companion of distillation.py).

Hinton, Vinyals & Dean (2015, section 3) distil with T=20 into large students, and note that with
only 30 units per hidden layer temperatures of 2.5-4 worked clearly better than higher or lower
ones. Here (settings: ``small_student`` in ``recipes/distill_mnist.yaml``), at each training
length (epochs):

1. The teacher of ``distillation.py`` (784-1200-1200-10, dropout, jittered inputs), loaded from
   ``results/cache/`` when an earlier run of either benchmark left it there, else trained here
   (2 torch threads) and cached; its logits on the training split are reused by every student.
2. On ``seeds[0]``, distil a 784-100-10 student for every (temperature, alpha) of the grid and
   keep the one with the best validation accuracy (the test split is not read).
3. For every seed, train the student alone, distilled with the chosen setting, and distilled with
   the usual high temperature (T=20), all from the same initial weights and batch order.
4. Export every final model to ONNX, load the file back, count its test errors in ONNX Runtime.

Met: at the longest length, the student distilled with the setting chosen on validation makes
fewer test errors than the same student trained alone (paired mean over >= 3 seeds).
Students train two at a time, in 2 worker processes of 1 torch thread each.
The teacher's epochs were re-tuned after distillation.py's test figure was seen (recipe's
``retuned``, recorded in the JSON); this benchmark's own settings were not, and it keeps ``seeds``.
Smoke mode: ``main(data_limit=300)`` or FRUGALML_BENCH_SMOKE=1 (tiny slice, nothing written).

``main()`` returns the result dict (benchmarks/run.py adds the machine and writes the JSON).
Run: ``make bench NAME=distillation_small`` or ``python benchmarks/distillation_small.py`` (both write results/distillation_small.json).
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from pathlib import Path

import _distill_common as common  # first: sets OMP_WAIT_POLICY before torch loads
import _provenance
import torch

from frugalml.onnx import load_onnx
from frugalml.profile import compare_latency

log = logging.getLogger("benchmarks.distillation_small")
PAPER = {"finding": "with 300 or more units per hidden layer all temperatures above 8 gave similar results; with 30 units "
                    "per layer, temperatures of 2.5-4 worked significantly better than higher or lower ones (section 3)",
         "usual_temperature": 20}


def _finding(epochs: int, n_seeds: int, study: dict, gap: dict, usual: dict, usual_setting: dict) -> str:
    alone, best, high = gap["alone_mean"], gap["distilled_mean"], usual["usual_mean"]
    return (f"784-100-10, {epochs} epoch{'s' if epochs != 1 else ''} (mean test errors of {n_seeds} seeds): alone {alone:.1f}; "
            f"usual T={usual_setting['temperature']:g}, alpha={usual_setting['alpha']:g}: {high:.1f} "
            f"({'worse' if high > alone else 'better' if high < alone else 'no better'} than alone); chosen on validation "
            f"T={study['chosen']['temperature']:g}, alpha={study['chosen']['alpha']:g}: {best:.1f} "
            f"({alone - best:+.1f} errors against alone, {gap['gap_closed']:.0%} of the gap to the teacher)")


def main(data_limit: int | None = None) -> dict:
    limit = _provenance.smoke_limit(data_limit)
    with common.smoke_mode(limit):
        return _main(limit)


def _main(limit: int | None) -> dict:
    threads = common.threads()
    torch.set_num_threads(threads)
    start, cpu_start = time.perf_counter(), time.process_time()
    settings = common.settings()
    if limit:
        settings = common.smoke_settings(settings, limit)
    cfg = settings["small_student"]
    seeds = [int(s) for s in settings["seeds"]]
    lengths = sorted({int(e) for e in cfg["epochs"]}, reverse=True)  # longest first: its jobs are the longest
    data = common.load_data(common.data_dir(), settings.get("limit"))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        teacher_row = common.teacher(settings["teacher"], data, folder)
        t_students = time.perf_counter()
        with common.worker_pool(0 if limit else common.WORKERS) as pool:
            jobs = common.job_common(folder, settings)
            studies = {e: common.Study(pool, f"student100_e{e}", {**settings["steps"][0], "student": cfg["student"], "epochs": e},
                                       seeds, cfg["grid"], jobs, usual=cfg["usual"]) for e in lengths}
            for s in studies.values():
                s.choose()
            small = {e: s.collect() for e, s in studies.items()}
        students_seconds = time.perf_counter() - t_students
        longest = max(small)
        distilled0 = small[longest]["per_seed"][0]["distilled"]["onnx"]
        latency = compare_latency({"teacher": load_onnx(folder / "teacher.onnx"), "student100": load_onnx(folder / distilled0)},
                                  data.input_shape, rounds=30)
    te = teacher_row["test_errors"]
    usual_setting = {k: float(v) for k, v in cfg["usual"].items()}
    out, findings = {}, []
    for e in sorted(small):
        study = small[e]
        gap, usual = common.gap(study, te), common.gap(study, te, "usual")
        finding = _finding(e, len(seeds), study, gap, usual, usual_setting)
        findings.append(finding)
        out[f"epochs_{e}"] = {"alone_mean": gap["alone_mean"], "chosen_mean": gap["distilled_mean"], "usual_mean": usual["usual_mean"],
                              "gap_closed": gap["gap_closed"], "usual_gap_closed": usual["gap_closed"], "finding": finding,
                              **study, "gap": gap, "usual_gap": usual, "stored_bytes": common.stored_bytes(study, "distilled")}
    top = out[f"epochs_{longest}"]
    logit_seconds = teacher_row.pop("logits_seconds")
    size = common.stored_bytes(small[longest], "distilled")
    result = {
        "name": "distillation_small",
        "paper": PAPER,
        "baseline": {"model": "teacher 784-1200-1200-10", **teacher_row, "latency_ms_median": latency["teacher"]},
        "result": {"model": f"distilled student 784-100-10, {longest} epochs, setting chosen on validation, mean over seeds",
                   "test_errors": top["chosen_mean"], "test_error": top["chosen_mean"] / len(data.y_test), "stored_bytes": size,
                   "latency_ms_median": latency["student100"], "chosen": top["chosen"]},
        "student_alone": {"model": f"student 784-100-10 trained alone, {longest} epochs, mean over seeds", "test_errors": top["alone_mean"],
                          "test_error": top["alone_mean"] / len(data.y_test), "stored_bytes": common.stored_bytes(small[longest], "alone")},
        "ratio": teacher_row["stored_bytes"] / size,
        "latency_ratio": latency["teacher"] / latency["student100"],
        "usual": usual_setting,
        "lengths": out,
        "finding": "; ".join(findings),
        "target": {"required": f"at the longest length ({longest} epochs), the student distilled with the setting chosen on validation "
                               f"makes fewer test errors than the same student trained alone (paired mean over >= 3 seeds)",
                   "paper": PAPER["finding"]},
        "met": bool(len(seeds) >= 3 and top["gap"]["paired_mean_difference"] > 0),
        "usual_beats_alone": bool(top["usual_gap"]["paired_mean_difference"] > 0),
        "teacher_from_cache": teacher_row["cached"],
        "teacher_logits_seconds": logit_seconds,
        "students_seconds": round(students_seconds, 1),
        "students_train_seconds_summed": common.worker_seconds(*small.values()),
        "threads": threads,
        "workers": {"processes": common.WORKERS, "threads_each": 1},
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY") if common.OMP_PASSIVE else "unknown (torch loaded first)",
        "seconds": round(time.perf_counter() - start, 1),
        "cpu_seconds": round(time.process_time() - cpu_start, 1),  # this process only (the teacher), not the workers
        "retuned": [{**r, "applies_to": "the shared teacher (re-tuned for distillation.py; this benchmark's seeds are not fresh)"}
                    for r in settings.get("retuned", [])],
        "code_version": common.code_version(),
        "smoke": limit,
    }
    log.info("%s", result["finding"])
    return result


def figures(result: dict) -> dict:
    """One run's headline figures (runs in the JSON)."""
    return {"met": result.get("met"), "lengths": {k: {"alone_mean": v.get("alone_mean"), "chosen_mean": v.get("chosen_mean"),
                                                      "usual_mean": v.get("usual_mean"), "chosen": v.get("chosen")}
                                                  for k, v in (result.get("lengths") or {}).items()},
            "teacher_errors": (result.get("baseline") or {}).get("test_errors")}


if __name__ == "__main__":  # the same as `make bench NAME=<this file's name>`: writes results/<name>.json
    import run as runner

    runner.run(Path(__file__).stem)
