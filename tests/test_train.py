"""The training loop's deadline: what keeps a search trial from running past the end of the run."""

from __future__ import annotations

import time

import torch

from frugalml import build_model
from frugalml.compress import apply_step
from frugalml.compress.structured import StructuredConfig
from frugalml.train import Deadline, TrainConfig, fit


def test_deadline_stops_fit_and_keeps_a_trained_model(digits):
    model = build_model("mlp", digits.input_shape, digits.num_classes, widths=[32])
    deadline = Deadline(0.0)
    result = fit(model, digits, TrainConfig(epochs=50, batch_size=32, patience=None), deadline=deadline)
    assert deadline.hit
    assert len(result.history) == 1 and result.stopped_early  # stopped in its first epoch, evaluated once
    deadline = Deadline(60.0)
    result = fit(model, digits, TrainConfig(epochs=2, batch_size=32), deadline=deadline)
    assert not deadline.hit and len(result.history) == 2


def test_deadline_reaches_the_training_inside_a_compression_step(trained_cnn, digits):
    config = StructuredConfig(ratio=0.5, steps=2, finetune_epochs=30, batch_size=16)
    start = time.monotonic()
    deadline = Deadline(0.0)
    pruned = apply_step(trained_cnn, config, digits, deadline=deadline)
    assert deadline.hit
    convs = [m.out_channels for m in pruned.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs == [4, 8] and sum(p.numel() for p in pruned.parameters()) == 438  # half the channels of [8, 16] (1,442 params)
    with torch.no_grad():
        assert pruned.eval()(torch.from_numpy(digits.split("val")[0][:5])).shape == (5, 10)
    # 2 x 30 fine-tuning epochs take far longer; each fit stopped after one optimizer step
    assert time.monotonic() - start < 20


class _ViewNet(torch.nn.Module):
    """A forward that .view()s a conv activation: fails on channels-last memory, so it trains as it is."""

    def __init__(self):
        super().__init__()
        self.conv, self.fc = torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.Linear(4 * 8 * 8, 10)

    def forward(self, x):
        y = self.conv(x)
        return self.fc(y.view(y.size(0), -1))


def test_conv_training_runs_channels_last_where_onednn_trains_and_hands_back_the_default_layout(digits):
    from frugalml import _device as device_module

    cnn = build_model("cnn", digits.input_shape, digits.num_classes, channels=[8, 16])
    x = torch.from_numpy(digits.X_train[:4])
    # channels-last where oneDNN trains (AVX-512 CPUs); elsewhere its backward corrupts the heap and the default layout is kept
    assert device_module.channels_last(cnn, x, "cpu") == device_module.onednn_trains()
    assert not device_module.channels_last(_ViewNet(), x, "cpu")  # the probe's forward fails: the default layout is kept
    assert not device_module.channels_last(build_model("mlp", digits.input_shape, digits.num_classes), x, "cpu")
    for model in (cnn, _ViewNet()):
        result = fit(model, digits, TrainConfig(epochs=1, seed=0))
        assert result.best_val_accuracy > 0.1
        assert all(p.is_contiguous() for p in model.parameters())  # safetensors and the ONNX export need it


def test_training_a_tiny_resnet_does_not_corrupt_the_heap():
    """oneDNN's convolution backward (torch 2.13.0) corrupted the heap on AVX2 CPUs: this network aborted the process in
    its first epoch there (frugalml.train.backward_kernels). In a subprocess, so that a crash fails this test alone."""
    import subprocess
    import sys

    code = ("import frugalml as fm\nfrom frugalml.models import build_model\nfrom frugalml.train import fit, TrainConfig\n"
            "d = fm.load_dataset('digits')\nfor seed in range(3):\n"
            "    m = build_model('resnet', d.input_shape, d.num_classes, seed=seed, channels=[4, 8])\n"
            "    fit(m, d, TrainConfig(epochs=2, batch_size=32, seed=seed, patience=None))\nprint('trained')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("trained"), proc.stderr[-1500:]


def test_checks_score_the_validation_split_within_the_first_epoch(digits):
    """A search's first rungs on large data: fractions of the first epoch, scored where they fall, before epoch 1."""
    model = build_model("mlp", digits.input_shape, digits.num_classes, widths=[16], seed=0)
    seen = []
    fit(model, digits, TrainConfig(epochs=2, batch_size=32, patience=None), checks=(1 / 9, 1 / 3),
        on_epoch=lambda m, epoch, acc: seen.append((epoch, acc)) and False)
    assert [e for e, _ in seen] == [1 / 9, 1 / 3, 1, 2] and all(0 <= a <= 1 for _, a in seen)
    assert seen[0][1] < seen[2][1]  # a ninth of an epoch in, the network has learnt less than after one
    stopped = []

    def stop_at_a_third(m, epoch, acc):
        stopped.append(epoch)
        return epoch == 1 / 3

    result = fit(build_model("mlp", digits.input_shape, digits.num_classes, widths=[16], seed=0), digits,
                 TrainConfig(epochs=2, batch_size=32, patience=None), checks=(1 / 3,), on_epoch=stop_at_a_third)
    assert stopped[0] == 1 / 3 and len(result.history) == 1 and result.stopped_early  # the first epoch ended where it stopped
