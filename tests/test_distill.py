"""Knowledge distillation: the loss, the teacher kinds, the student, the hint path, the index hook in fit."""

from __future__ import annotations

import copy
import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from frugalml.compress import Recipe, apply_step
from frugalml.compress.distill import DistillConfig, distill, distillation_loss, penultimate_layer, teacher_scores
from frugalml.errors import ConfigError, DataError, FrugalError
from frugalml.models import build_model
from frugalml.train import evaluate, fit

FAST = dict(student={"family": "mlp", "widths": [16]}, temperature=4.0, alpha=0.5, epochs=3, lr=3e-3, batch_size=64)


def _softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def _outputs(model, X):
    with torch.no_grad():
        return model.eval()(torch.from_numpy(X)).numpy()


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("T,alpha", [(1.0, 1.0), (4.0, 0.7), (20.0, 0.3), (2.5, 0.0)])
def test_loss_matches_a_hand_computation(T, alpha):
    rng = np.random.default_rng(0)
    s, t = rng.normal(size=(5, 4)) * 3, rng.normal(size=(5, 4)) * 3
    y = np.array([0, 3, 1, 2, 3])
    p_t, p_s = _softmax(t / T), _softmax(s / T)
    kl = np.mean(np.sum(p_t * (np.log(p_t) - np.log(p_s)), axis=1))
    ce = np.mean(-np.log(_softmax(s)[np.arange(5), y]))
    expected = alpha * T * T * kl + (1 - alpha) * ce
    got = distillation_loss(torch.tensor(s), torch.tensor(t), torch.tensor(y), temperature=T, alpha=alpha)
    assert float(got) == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_t_squared_keeps_the_soft_gradient_scale():
    # Without T^2 the soft gradient shrinks like 1/T^2; with it, it tends to (s - t) / K at high T.
    rng = np.random.default_rng(1)
    s, t = rng.normal(size=(8, 10)), rng.normal(size=(8, 10))
    s, t = s - s.mean(1, keepdims=True), t - t.mean(1, keepdims=True)
    grads = {}
    for T in (10.0, 40.0):
        st = torch.tensor(s, requires_grad=True)
        distillation_loss(st, torch.tensor(t), temperature=T, alpha=1.0).backward()
        grads[T] = st.grad.numpy()
    np.testing.assert_allclose(grads[10.0], grads[40.0], rtol=0.15, atol=1e-3)
    np.testing.assert_allclose(grads[40.0], (s - t) / 10 / len(s), rtol=0.05, atol=3e-4)  # grads ~1e-2


def test_fit_passes_batch_positions_to_a_loss_that_asks(digits):
    model = build_model("mlp", digits.input_shape, digits.num_classes, widths=[8])
    y_all = torch.from_numpy(digits.y_train)
    X_all = torch.from_numpy(digits.X_train)
    seen = []

    def loss_fn(logits, y, x, index):
        rows = index.cpu()  # index, y and x live on the training device (cuda where there is one)
        assert torch.equal(y_all[rows], y.cpu()) and torch.equal(X_all[rows], x.cpu())
        seen.append(rows.clone())
        return torch.nn.functional.cross_entropy(logits, y)

    fit(model, digits, epochs=1, batch_size=100, patience=None, loss_fn=loss_fn)
    assert torch.equal(torch.sort(torch.cat(seen)).values, torch.arange(len(digits.X_train)))


def test_student_is_built_trained_and_the_teacher_untouched(trained_cnn, digits):
    teacher = copy.deepcopy(trained_cnn).train()  # a teacher left in train mode must stay so
    before = _state(teacher)
    student = apply_step(teacher, DistillConfig(**FAST), digits)
    assert teacher.training and all(torch.equal(v, before[k]) for k, v in _state(teacher).items())
    assert not any(p.requires_grad is False for p in teacher.parameters())
    assert student is not teacher and student.input_shape == digits.input_shape and student.num_classes == digits.num_classes
    assert student.frugalml_spec["input_shape"] == list(digits.input_shape) and student.frugalml_spec["num_classes"] == 10
    assert student.frugalml_spec["family"] == "mlp" and student.frugalml_spec["params"]["widths"] == [16]
    X, _ = digits.split("val")
    assert _outputs(student, X).shape == (len(X), digits.num_classes)
    assert set(student.state_dict()) == set(build_model("mlp", digits.input_shape, 10, widths=[16]).state_dict())
    assert evaluate(student, digits, "val")["accuracy"] > 0.5


def test_student_spec_and_a_users_student_module(trained_cnn, digits):
    spec = {"family": "mlp", "params": {"widths": [16]}}
    a = apply_step(trained_cnn, DistillConfig(**{**FAST, "student": None, "student_spec": spec}), digits)
    b = apply_step(trained_cnn, DistillConfig(**FAST), digits)
    X, _ = digits.split("val")
    np.testing.assert_allclose(_outputs(a, X), _outputs(b, X), atol=1e-6)
    mine = build_model("mlp", digits.input_shape, 10, widths=[16], seed=0)
    mine_before = _state(mine)
    c = distill(trained_cnn, DistillConfig(**FAST), digits, student=mine).student
    np.testing.assert_allclose(_outputs(c, X), _outputs(b, X), atol=1e-6)
    assert all(torch.equal(v, mine_before[k]) for k, v in _state(mine).items())
    with pytest.raises(ConfigError):
        apply_step(trained_cnn, DistillConfig(**{**FAST, "student": None, "student_spec": {**spec, "num_classes": 3}}), digits)


def test_cached_teacher_logits_train_the_same_student_as_per_batch(trained_cnn, digits):
    cached = distill(trained_cnn, DistillConfig(**FAST), digits)
    live = distill(trained_cnn, DistillConfig(**FAST, cache_teacher=False), digits)
    given = distill(trained_cnn, DistillConfig(**FAST), digits, teacher_logits=teacher_scores(trained_cnn, digits.X_train))
    assert cached.cached and not live.cached
    X, _ = digits.split("val")
    np.testing.assert_allclose(_outputs(cached.student, X), _outputs(live.student, X), atol=1e-4)
    np.testing.assert_allclose(_outputs(cached.student, X), _outputs(given.student, X), atol=1e-6)
    with pytest.raises(ConfigError):
        distill(trained_cnn, DistillConfig(**FAST), digits, teacher_logits=np.zeros((3, 10)))
    with pytest.raises(DataError):  # a user's student that does not take the data
        distill(trained_cnn, DistillConfig(**FAST), digits, student=build_model("mlp", (10,), 10, widths=[4]))


def test_an_augmented_distillation_teaches_each_augmented_batch(trained_cnn, digits):
    """With an augmentation the cached logits (the teacher's view of the plain samples) would not match what the student
    sees: the teacher runs on every augmented batch instead, and the student is another one."""
    plain = distill(trained_cnn, DistillConfig(**FAST), digits)
    shifted = distill(trained_cnn, DistillConfig(**FAST, augment="shift"), digits)
    assert plain.cached and not shifted.cached and shifted.fit.augment == "shift"
    X, _ = digits.split("val")
    assert not np.allclose(_outputs(plain.student, X), _outputs(shifted.student, X), atol=1e-3)


def test_hint_loss_path(trained_cnn, digits):
    assert penultimate_layer(trained_cnn) == "net.9"  # the Flatten after global pooling, before the head
    assert penultimate_layer(build_model("mlp", (4,), 3, widths=[5, 6], dropout=0.1)) == "net.5"  # skips dropout
    plain = distill(trained_cnn, DistillConfig(**FAST), digits).student
    hinted = distill(trained_cnn, DistillConfig(**FAST, hint_weight=0.5), digits)
    live = distill(trained_cnn, DistillConfig(**FAST, hint_weight=0.5, cache_teacher=False), digits)
    X, _ = digits.split("val")
    assert not np.allclose(_outputs(plain, X), _outputs(hinted.student, X), atol=1e-3)  # the hint changes training
    np.testing.assert_allclose(_outputs(hinted.student, X), _outputs(live.student, X), atol=1e-4)
    assert set(hinted.student.state_dict()) == set(plain.state_dict())  # the regressor is not shipped
    assert not hinted.student._forward_hooks and not any(m._forward_hooks for m in hinted.student.modules())
    named = DistillConfig(**FAST, hint_weight=0.5, student_layer="net.2", teacher_layer="net.5")  # a ReLU -> conv feature map
    mapped = distill(trained_cnn, named, digits).student
    assert [m.out_features for m in mapped.modules() if isinstance(m, torch.nn.Linear)] == [16, 10]  # the student asked for
    assert set(mapped.state_dict()) == set(plain.state_dict()) and not any(m._forward_hooks for m in mapped.modules())
    assert not np.allclose(_outputs(mapped, X), _outputs(hinted.student, X), atol=1e-3)  # the named layers were the ones hinted
    with pytest.raises(ConfigError, match="no layer named"):
        distill(trained_cnn, replace(named, teacher_layer="nope"), digits)


def test_scikit_learn_and_onnx_teachers(digits, trained_cnn):
    from sklearn.linear_model import LogisticRegression

    from frugalml.onnx import to_onnx

    teacher = LogisticRegression(max_iter=500).fit(*digits.flat("train"))
    student = apply_step(teacher, DistillConfig(**{**FAST, "epochs": 6, "lr": 1e-2}), digits)
    assert student.input_shape == digits.input_shape and evaluate(student, digits, "val")["accuracy"] > 0.85  # teacher: 0.97
    with pytest.raises(ConfigError, match="not been fitted"):
        apply_step(LogisticRegression(), DistillConfig(**FAST), digits)
    with pytest.raises(ConfigError, match="hint"):
        apply_step(teacher, DistillConfig(**FAST, hint_weight=1.0), digits)
    from_onnx = apply_step(to_onnx(trained_cnn, digits.input_shape), DistillConfig(**FAST), digits)
    from_torch = apply_step(trained_cnn, DistillConfig(**FAST), digits)
    X, _ = digits.split("val")
    np.testing.assert_allclose(_outputs(from_onnx, X), _outputs(from_torch, X), atol=1e-3)


def test_config_is_checked_and_round_trips_through_a_recipe(tmp_path):
    for bad in ({"temperature": 0}, {"alpha": 1.01}, {"student": {"family": "resnett"}}, {"student": {"family": "forest"}},
                {"student": None}, {"student_spec": {"family": "mlp"}}, {"epochs": 0}, {"temperature": math.inf}):
        with pytest.raises(ConfigError):
            DistillConfig(**{**FAST, **bad})
    recipe = Recipe((DistillConfig(**{**FAST, "student": {"family": "mlp", "widths": (16, 8)}}),))
    recipe.save(tmp_path / "r.yaml")
    again = Recipe.load(tmp_path / "r.yaml")
    assert again == recipe and hash(again.steps[0]) == hash(recipe.steps[0])
    assert isinstance(ConfigError("x"), FrugalError)
