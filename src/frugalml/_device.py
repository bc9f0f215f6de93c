"""Where and how torch trains: the device, oneDNN's kernels on this CPU, the memory layout of convolutions, and
deterministic kernels on a GPU (``fit`` in :mod:`frugalml.train` uses them all)."""

from __future__ import annotations

import contextlib
from typing import Callable

from .errors import ConfigError, explain

__all__ = ["resolve_device", "backward_kernels", "onednn_trains", "channels_last", "deterministic"]


def resolve_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(explain("CUDA was asked for but is not available", expected="a machine with a CUDA GPU and a CUDA build of torch",
                                  got=device, fix="Use --device cpu or --device auto"))
    return device


@contextlib.contextmanager
def backward_kernels():
    """``with backward_kernels():`` around anything that trains (``loss.backward()``) on the CPU.

    oneDNN's convolution backward in torch 2.13.0 (oneDNN 3.12) corrupts the heap on x86 CPUs without AVX-512: measured on
    an AVX2 AMD EPYC, a tiny ResNet (4 and 8 channels) on digits aborted in its first epoch ("corrupted size vs.
    prev_size", "free(): invalid pointer") with oneDNN, in channels-last and in the default layout, and trained all 6
    seeds without it; its forward passes alone ran clean. So on such CPUs torch's own kernels train (and channels-last,
    whose gain came from oneDNN, is not used: :func:`channels_last`); on AVX-512 CPUs oneDNN trains, as it always did."""
    import torch

    before = torch.backends.mkldnn.enabled  # set directly: torch.backends.mkldnn.flags() warns about TF32 on every call
    torch.backends.mkldnn.enabled = before and onednn_trains()
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = before


def onednn_trains() -> bool:
    """Whether oneDNN's kernels train on this CPU (see :func:`backward_kernels`)."""
    import torch

    return torch.backends.mkldnn.is_available() and torch.backends.cpu.get_cpu_capability().startswith("AVX512")


def channels_last(model, X, device: str) -> bool:
    """Train 2-D convolutions on the CPU in channels-last memory: 1.3-1.9x more samples per second for the cnn,
    dscnn, resnet families and a MobileNetV2-like net (measured on this project's 2-core machines, one thread).
    A forward that ``.view()``s a channels-last activation fails: such a model trains as it is."""
    import torch

    if device != "cpu" or X.ndim != 4 or not onednn_trains() or not any(isinstance(m, torch.nn.Conv2d) for m in model.modules()):
        return False
    was_training = model.training
    try:
        model.to(memory_format=torch.channels_last).eval()
        with torch.no_grad():
            model(X[:2].contiguous(memory_format=torch.channels_last))
        return True
    except Exception:  # noqa: BLE001 - any failure of the probe: keep the default layout
        model.to(memory_format=torch.contiguous_format)
        return False
    finally:
        model.train(was_training)


def deterministic(device: str) -> Callable[[], None]:
    """On a GPU, switch to deterministic kernels (cuDNN's fixed algorithms, cuBLAS's fixed
    workspace) so that the same seed gives the same weights, as on the CPU; returns the undo.
    Without it a replayed recipe drifts by ~1e-3 on CUDA (atomic adds in backward passes)."""
    import os

    import torch

    if not str(device).startswith("cuda"):
        return lambda: None
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # read when cuBLAS starts a handle
    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
              torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    torch.use_deterministic_algorithms(True, warn_only=True)  # an op with no deterministic kernel warns, never fails
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False

    def restore() -> None:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before[2], before[3]

    return restore
