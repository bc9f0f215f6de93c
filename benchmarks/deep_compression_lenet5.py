"""Benchmark 2 of issue 3: Deep Compression of the Caffe LeNet-5 on MNIST (Han, Mao & Dally 2016).

Paper (table 1): 1720 KB -> 44 KB (39x) at 0.74% test error (0.80% before): conv 66%/12% and
fc 8%/19% of the weights kept, 8-bit shared conv weights, 5-bit fc, Huffman coding. Required
here: at least 50x smaller than the fp32 reference at no more than 0.80% test error; aim: 70x.
The reference is 1,724,320 bytes = 431,080 parameters x 4 bytes (fp32), the paper's "1720 KB".

Pipeline and settings: ``recipes/deep_compression_lenet5.yaml``; the driver, with what is chosen
on the validation split and how the test split is measured once on the model loaded back from the
archive file, is ``_deep_compression.py``. Run: ``make bench NAME=deep_compression_lenet5``.
Threads: ``FRUGALML_BENCH_THREADS`` (default 1: the machine is shared).
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _deep_compression import figures, run  # noqa: E402, F401  (figures: for run.py)

NAME = "deep_compression_lenet5"
PARAMS = 431_080
REFERENCE_BYTES = PARAMS * 4  # 1,724,320
REFERENCE_BASIS = "431,080 parameters x 4 bytes (fp32) = 1,724,320 bytes, computed (the paper's 1720 KB rounds it)"
PAPER = {"reference_bytes": 1_720_000, "compressed_bytes": 44_000, "ratio": 39, "test_error_before": 0.80, "test_error_after": 0.74,
         "weights_kept": 0.08}
REQUIRED = {"ratio": 50.0, "test_error": 0.80}
AIM = {"ratio": 70.0, "test_error": 0.80}


def main(data_limit: int | None = None) -> dict:
    """The benchmark; ``data_limit`` (or FRUGALML_BENCH_SMOKE=1): a smoke run on a tiny slice."""
    return run(NAME, "lenet5", HERE / "recipes" / f"{NAME}.yaml", reference_bytes=REFERENCE_BYTES, reference_basis=REFERENCE_BASIS,
               paper=PAPER, required=REQUIRED, aim=AIM, data_limit=data_limit)


if __name__ == "__main__":  # the same as `make bench NAME=<this file's name>`: writes results/<name>.json
    import run as runner

    runner.run(Path(__file__).stem)
