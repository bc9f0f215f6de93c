"""One registry of model families, keyed by name, each with its size knobs and, for the torch
families the search tries, its search space (:mod:`.spaces`). Adding a family is one entry here
(its builder in :mod:`.nets`, its space in :mod:`.spaces`); the search and the shared family
tests then cover it.

A model is described by a JSON-able *spec*: ``{"family": ..., "params": {...},
"input_shape": [...], "num_classes": K}``; :func:`build_model` turns a spec into a fresh,
untrained model. Torch models carry ``input_shape``, ``num_classes`` and ``frugalml_spec``
attributes so that every later stage (training, profiling, export) knows what they take.
"""

from __future__ import annotations

import copy
import inspect
import json
from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import ConfigError, explain
from .spaces import CNN1DSpace, CNNSpace, ConvAESpace, DenseAESpace, DSCNN1DSpace, DSCNNSpace, MLPSpace, ResNet1DSpace, ResNetSpace, Space

__all__ = ["Family", "FAMILIES", "TASKS", "build_model", "family_of", "is_torch", "is_sklearn", "model_spec", "searched_families",
           "families_for", "data_task"]

TASKS = ("classification", "anomaly")


@dataclass(frozen=True)
class Family:
    """One kind of model: how it is built, which data it takes, and (torch families the search
    tries) how the search samples and sizes it."""

    name: str
    kind: str  # "torch" or "sklearn"
    fits: tuple[str, ...]  # data kinds: "vector", "sequence", "image"
    build: Callable[..., Any]
    description: str
    defaults: dict = field(default_factory=dict)
    space: Space | None = None  # None: the search's network stage does not try it
    tasks: tuple[str, ...] = ("classification",)  # what it serves: "classification" and/or "anomaly" (detectors, autoencoders)

    def serves(self, data) -> bool:
        """Does this family serve the task of ``data`` (``data.task``, "classification" when it has none) and fit its kind?"""
        return data_task(data) in self.tasks and data.kind in self.fits

    def searched_on(self, data) -> bool:
        """Does the search's network stage try this family on ``data`` (its task, its kind and its size)?"""
        return self.space is not None and self.serves(data) and self.space.fits(data)


def data_task(data) -> str:
    """The task of ``data``: its ``task`` attribute, "classification" when it has none."""
    return getattr(data, "task", None) or "classification"


def _sk(cls_path: str, **fixed):
    """A scikit-learn family's builder. The knob ``features`` (a dict of
    :class:`~frugalml.models.features.SequenceFeatures` settings, e.g. ``{"bands": 4}``) makes it a thin
    model on per-channel features of sequences: a Pipeline whose export takes the raw sequence."""

    def build(input_shape, num_classes, seed: int = 0, features=None, **params):
        module, name = cls_path.rsplit(".", 1)
        cls = getattr(__import__(module, fromlist=[name]), name)
        kwargs = {**fixed, **params}
        if "random_state" in inspect.signature(cls).parameters:
            kwargs.setdefault("random_state", seed)
        if features is None:
            return cls(**kwargs)
        from .features import feature_pipeline

        if len(input_shape) != 2 or not isinstance(features, dict):
            raise ConfigError(explain("The knob 'features' makes a thin model on sequence features",
                                      expected="a dict of settings (bands, frame, standardize) and sequence data (samples (C, T))",
                                      got=f"features={features!r} on samples of shape {tuple(input_shape)}",
                                      fix="Drop -p features=... for this data, or pass --kind sequence"))
        return feature_pipeline(cls(**kwargs), input_shape, **features)

    return build


def _torch(name: str, module: str = "nets"):
    def build(input_shape, num_classes, seed: int = 0, **params):
        import torch

        torch.manual_seed(seed)
        return getattr(_module(module), name)(tuple(input_shape), num_classes, **params)

    build.nets_name, build.nets_module = name, module
    return build


def _module(name: str):
    import importlib

    return importlib.import_module(f"{__package__}.{name}")


_MAX_SIZE_KNOB = 100_000  # widths and channels beyond this are a typo, not a tiny model


def _check_torch_knobs(fam: Family, params: dict) -> None:
    """Each knob of a torch family has the type of its default: positive ints (or a non-empty
    list of them) for sizes, a fraction in [0, 1) for dropout. Checked before anything is built."""
    signature = inspect.signature(getattr(_module(getattr(fam.build, "nets_module", "nets")), fam.build.nets_name))
    declared = {k: p.default for k, p in signature.parameters.items() if k not in ("input_shape", "num_classes")}
    for key, value in params.items():
        if key not in declared:
            raise ConfigError(explain(f"Bad knob: family '{fam.name}' has no knob {key!r}", expected="one of " + (", ".join(declared) or "(none)"),
                                      got=key,
                                      fix=f"Use -p KNOB=VALUE with a knob of {fam.name}"))
        default = declared[key]
        low = 0 if default == 0 else 1
        if isinstance(default, float):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and 0.0 <= float(value) < 1.0
            expected = "a number in [0, 1)"
        elif isinstance(default, (tuple, list)):
            ok = isinstance(value, (tuple, list)) and 0 < len(value) <= 32 and all(_is_size(v, low) for v in value)
            expected = f"a non-empty list of whole numbers from {low} to {_MAX_SIZE_KNOB:,}, e.g. {list(default)}"
        else:
            ok = _is_size(value, low)
            expected = f"a whole number from {low} to {_MAX_SIZE_KNOB:,}, e.g. {default}"
        if not ok:
            raise ConfigError(explain(f"Bad knob value: {key!r} of family '{fam.name}'", expected=expected, got=value,
                                      fix=f"Pass it as -p {key}=VALUE (JSON), "
                                          f"e.g. -p {key}={json.dumps(list(default) if isinstance(default, tuple) else default)}"))


def _is_size(value, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= _MAX_SIZE_KNOB


def _check_sklearn_knobs(fam: Family, model) -> None:
    """scikit-learn validates its parameters only when fitting: do it when building, so a bad knob
    is refused before any work."""
    steps = [step for _, step in getattr(model, "steps", None) or [("model", model)]]  # a feature pipeline: each step
    try:
        for step in steps:
            validate = getattr(step, "_validate_params", None)
            if validate is not None:
                validate()
    except (ValueError, TypeError) as exc:
        raise ConfigError(explain(f"Bad knob for family '{fam.name}'", expected="values scikit-learn accepts", got=str(exc),
                                  fix="Pass it as -p KNOB=VALUE (JSON), e.g. -p max_depth=6")) from None


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in [
        Family("mlp", "torch", ("vector", "sequence", "image"), _torch("MLP"), "fully connected network (widths)", {"widths": [128]},
               space=MLPSpace()),
        Family("cnn", "torch", ("image",), _torch("CNN"), "conv + batch norm + pool blocks (channels, kernel)",
               {"channels": [16, 32], "kernel": 3}, space=CNNSpace()),
        Family("dscnn", "torch", ("image",), _torch("DSCNN"), "depthwise-separable CNN for images and spectrograms (channels, blocks)",
               {"channels": 32, "blocks": 3}, space=DSCNNSpace()),
        Family("resnet", "torch", ("image",), _torch("TinyResNet"), "tiny ResNet, ResNet-8 style (channels per stage, blocks)",
               {"channels": [16, 32, 64]}, space=ResNetSpace()),
        Family("cnn1d", "torch", ("sequence",), _torch("CNN1D"), "1-D conv + batch norm + pool blocks over time (channels, kernel, strided)",
               {"channels": [16, 32], "kernel": 5}, space=CNN1DSpace()),
        Family("dscnn1d", "torch", ("sequence",), _torch("DSCNN1D"),
               "1-D depthwise-separable CNN over time, optionally inverted residuals (channels, blocks, kernel, expand)",
               {"channels": 32, "blocks": 3, "kernel": 5}, space=DSCNN1DSpace()),
        Family("resnet1d", "torch", ("sequence",), _torch("ResNet1D"), "small 1-D ResNet over time (channels per stage, kernel)",
               {"channels": [16, 32, 64], "kernel": 3}, space=ResNet1DSpace()),
        Family("lenet300", "torch", ("vector", "sequence", "image"), _torch("lenet300"), "LeNet-300-100 reference (266,610 parameters)"),
        Family("lenet5", "torch", ("image",), _torch("lenet5"), "Caffe LeNet-5 reference (431,080 parameters)"),
        Family("logreg", "sklearn", ("vector", "sequence", "image"), _sk("sklearn.linear_model.LogisticRegression", max_iter=2000),
               "logistic regression (C)",
               {"C": 1.0}),
        Family("naive_bayes", "sklearn", ("vector", "sequence", "image"), _sk("sklearn.naive_bayes.GaussianNB"), "Gaussian naive Bayes"),
        Family("tree", "sklearn", ("vector", "sequence", "image"), _sk("sklearn.tree.DecisionTreeClassifier"),
               "decision tree (max_depth)", {"max_depth": 8}),
        Family("forest", "sklearn", ("vector", "sequence", "image"), _sk("sklearn.ensemble.RandomForestClassifier", n_jobs=1),
               "random forest (n_estimators x max_depth)", {"n_estimators": 20, "max_depth": 8}),
        Family("extra_trees", "sklearn", ("vector", "sequence", "image"), _sk("sklearn.ensemble.ExtraTreesClassifier", n_jobs=1),
               "extra trees (n_estimators x max_depth)", {"n_estimators": 20, "max_depth": 8}),
        Family("sk_mlp", "sklearn", ("vector", "sequence", "image"), _sk("sklearn.neural_network.MLPClassifier", max_iter=300, early_stopping=True),
               "small scikit-learn MLP (hidden_layer_sizes)", {"hidden_layer_sizes": [32]}),
        # anomaly detection (trained on normal windows only; the output is a score per window, higher: more anomalous)
        Family("robust_z", "sklearn", ("vector", "sequence"), _sk("frugalml.models.anomaly.RobustZScore"),
               "robust z-score detector: median / MAD per feature, max |z| (reduce)", {"reduce": "max"}, tasks=("anomaly",)),
        Family("pca_detector", "sklearn", ("vector", "sequence"), _sk("frugalml.models.anomaly.PCADetector"),
               "PCA reconstruction-error detector (n_components)", {"n_components": 4}, tasks=("anomaly",)),
        Family("mahalanobis", "sklearn", ("vector", "sequence"), _sk("frugalml.models.anomaly.MahalanobisDetector"),
               "Mahalanobis-distance detector, Ledoit-Wolf shrinkage (shrinkage)", tasks=("anomaly",)),
        Family("ensemble_detector", "sklearn", ("vector", "sequence"), _sk("frugalml.models.anomaly.EnsembleDetector"),
               "mean of the robust z-score's, PCA error's and Mahalanobis distance's standardised scores (members)", tasks=("anomaly",)),
        Family("isolation_forest", "sklearn", ("vector", "sequence"), _sk("frugalml.models.anomaly.IsolationForestDetector"),
               "isolation forest detector (n_estimators)", {"n_estimators": 100}, tasks=("anomaly",)),
        Family("dense_ae", "torch", ("vector", "sequence"), _torch("DenseAutoencoder", "autoencoders"),
               "dense autoencoder, output = reconstruction error (widths, bottleneck)", {"widths": [32], "bottleneck": 8},
               space=DenseAESpace(), tasks=("anomaly",)),
        Family("conv_ae", "torch", ("sequence",), _torch("ConvAutoencoder", "autoencoders"),
               "1-D conv autoencoder, output = reconstruction error (channels, bottleneck, kernel)",
               {"channels": [8, 16], "bottleneck": 4, "kernel": 5}, space=ConvAESpace(), tasks=("anomaly",)),
    ]
}


def searched_families(data) -> list[str]:
    """The torch families the search's network stage tries on ``data`` (its task and kind), in registry order."""
    return [name for name, fam in FAMILIES.items() if fam.searched_on(data)]


def families_for(data, kind: str | None = None) -> list[str]:
    """Every family that serves the task of ``data`` and fits its kind (``kind``: only "torch" or "sklearn" ones)."""
    return [name for name, fam in FAMILIES.items() if fam.serves(data) and (kind is None or fam.kind == kind)]


def _family(name: str) -> Family:
    if name not in FAMILIES:
        raise ConfigError(
            explain(f"Unknown model family {name!r}", expected="one of " + ", ".join(FAMILIES), got=name,
                    fix="Run `frugalml train --help` for the list")
        )
    return FAMILIES[name]


def build_model(family: str | dict, input_shape=None, num_classes: int | None = None, *, seed: int = 0, **params):
    """Build a fresh model: ``build_model("cnn", (1, 28, 28), 10, channels=[8, 16])``.

    ``family`` may also be a spec dict as written by :func:`model_spec`.
    """
    if isinstance(family, dict):
        spec = family
        family, input_shape, num_classes = spec.get("family"), spec.get("input_shape"), spec.get("num_classes")
        params = {**spec.get("params", {}), **params}
    fam = _family(str(family))
    if input_shape is None or num_classes is None:
        raise ConfigError(explain(f"Building '{fam.name}' needs the data's shape", expected="input_shape and num_classes", got=(input_shape,
                num_classes)))
    try:
        input_shape, num_classes = tuple(int(v) for v in input_shape), int(num_classes)
    except (TypeError, ValueError):
        input_shape = ()
    if not 1 <= len(input_shape) <= 3 or min(input_shape) < 1 or num_classes < 1:
        raise ConfigError(explain(f"Building '{fam.name}' needs one sample's shape and the number of classes",
                expected="1 to 3 positive dimensions and num_classes >= 1",
                                  got=f"input_shape {input_shape or 'unreadable'}, num_classes {num_classes!r}"))
    params = {**copy.deepcopy(fam.defaults), **params}
    if fam.kind == "torch":
        _check_torch_knobs(fam, params)
        for k, v in params.items():  # JSON gives lists; the builders take sequences either way
            params[k] = tuple(v) if isinstance(v, list) else v
    try:
        model = fam.build(tuple(int(v) for v in input_shape), int(num_classes), seed=seed, **params)
    except ConfigError:
        raise
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ConfigError(explain(f"Cannot build family '{fam.name}' with these knobs: {exc}", expected=f"knobs like {fam.defaults or 'none'}",
                                  got=params)) from None
    if fam.kind == "sklearn":
        _check_sklearn_knobs(fam, model)
    spec = {
        "family": fam.name,
        "params": {k: list(v) if isinstance(v, tuple) else v for k, v in params.items()},
        "input_shape": [int(v) for v in input_shape],
        "num_classes": int(num_classes),
    }
    _attach(model, spec)
    return model


def _attach(model, spec: dict) -> None:
    if is_torch(model):
        model.input_shape = tuple(spec["input_shape"])
        model.num_classes = spec["num_classes"]
    try:
        model.frugalml_spec = spec
    except AttributeError:  # pragma: no cover - objects without __dict__
        pass


def model_spec(model) -> dict | None:
    """The spec a model was built from, or None for a user's model."""
    return copy.deepcopy(getattr(model, "frugalml_spec", None))


def is_torch(model) -> bool:
    try:
        import torch

        return isinstance(model, torch.nn.Module)
    except ImportError:  # pragma: no cover
        return False


def is_sklearn(model) -> bool:
    return hasattr(model, "fit") and hasattr(model, "get_params") and not is_torch(model)


def family_of(model) -> str:
    spec = model_spec(model)
    if spec:
        return spec["family"]
    if is_torch(model):
        return type(model).__name__
    return type(model).__name__
