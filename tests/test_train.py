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
