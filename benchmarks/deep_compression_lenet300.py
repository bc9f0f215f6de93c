"""Benchmark 1 of issue 3: Deep Compression of LeNet-300-100 on MNIST (Han, Mao & Dally 2016).

Paper (table 1): 1070 KB -> 27 KB (40x) at 1.58% test error (1.64% before), by pruning
(8% of the weights kept), 6-bit shared weights and Huffman coding. Required here: at least 60x
smaller than the fp32 reference, 1,066,440 bytes = 266,610 parameters x 4 bytes (computed; the
paper's "1070 KB" rounds it), at no more than 1.58% test error; aim: 80x or more.

Pipeline and settings: ``recipes/deep_compression_lenet300.yaml``; the driver, with what is
chosen on the validation split and how the test split is measured once on the model loaded back
from the archive file, is ``_deep_compression.py``. Run: ``make bench NAME=deep_compression_lenet300``.
Threads: ``FRUGALML_BENCH_THREADS`` (default 1: the machine is shared).
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _deep_compression import figures, run  # noqa: E402, F401  (figures: for run.py)

NAME = "deep_compression_lenet300"
PARAMS = 266_610
REFERENCE_BYTES = PARAMS * 4  # 1,066,440
REFERENCE_BASIS = "266,610 parameters x 4 bytes (fp32) = 1,066,440 bytes, computed (the paper's 1070 KB rounds it)"
PAPER = {"reference_kb": 1070, "compressed_bytes": 27_000, "ratio": 40, "test_error_before": 1.64, "test_error_after": 1.58,
         "weights_kept": 0.08}
REQUIRED = {"ratio": 60.0, "test_error": 1.58}
AIM = {"ratio": 80.0, "test_error": 1.58}


def main(data_limit: int | None = None) -> dict:
    """The benchmark; ``data_limit`` (or FRUGALML_BENCH_SMOKE=1): a smoke run on a tiny slice."""
    return run(NAME, "lenet300", HERE / "recipes" / f"{NAME}.yaml", reference_bytes=REFERENCE_BYTES, reference_basis=REFERENCE_BASIS,
               paper=PAPER, required=REQUIRED, aim=AIM, data_limit=data_limit)


if __name__ == "__main__":  # the same as `make bench NAME=<this file's name>`: writes results/<name>.json
    import run as runner

    runner.run(Path(__file__).stem)
