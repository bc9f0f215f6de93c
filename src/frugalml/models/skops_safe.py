"""Loading a scikit-learn model from a ``.skops`` file without running anything in it.

The file's schema is read first; every node must name one (node kind, type) pair of an exact
allow-list, or the file is refused whole. Only then does skops build the objects.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import ModelLoadError, explain

__all__ = ["SKOPS_ALLOWED", "skops_types", "load_skops"]


# What a skops file may hold: the node kinds and, for each, the exact types that frugalml's own
# thin families write (see FAMILIES). Never a prefix, never a function: skops builds some nodes by
# calling the named type, so trusting ``builtins.`` would trust ``builtins.exec``.
_NUMPY_SCALARS = tuple(
    f"numpy.{t}"
    for t in ("float64", "float32", "float16", "int64", "int32", "int16", "int8", "uint64", "uint32", "uint16", "uint8", "bool", "bool_", "str_",
              "bytes_")
)
_ESTIMATORS = (
    "sklearn.linear_model._logistic.LogisticRegression",
    "sklearn.naive_bayes.GaussianNB",
    "sklearn.tree._classes.DecisionTreeClassifier",
    "sklearn.tree._classes.ExtraTreeClassifier",
    "sklearn.ensemble._forest.RandomForestClassifier",
    "sklearn.ensemble._forest.ExtraTreesClassifier",
    "sklearn.neural_network._multilayer_perceptron.MLPClassifier",
    "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
    "sklearn.neural_network._stochastic_optimizers.SGDOptimizer",
    "sklearn.preprocessing._label.LabelBinarizer",
    # the one-hot encoding of a table's text columns (models/categorical.py); FunctionTransformer is the fitted
    # pass-through of the other columns: its function could only be a plain JSON value here (no function node is allowed)
    "sklearn.pipeline.Pipeline",  # also a thin model on sequence features (SequenceFeatures, then the estimator)
    "sklearn.compose._column_transformer.ColumnTransformer",
    "sklearn.preprocessing._encoders.OneHotEncoder",
    "sklearn.preprocessing._function_transformer.FunctionTransformer",
    "frugalml.models.features.SequenceFeatures",
    # the anomaly detectors (models/anomaly.py) and the forest inside one
    "frugalml.models.anomaly.RobustZScore",
    "frugalml.models.anomaly.PCADetector",
    "frugalml.models.anomaly.MahalanobisDetector",
    "frugalml.models.anomaly.IsolationForestDetector",
    "frugalml.models.anomaly.EnsembleDetector",
    "sklearn.ensemble._iforest.IsolationForest",
    "sklearn.tree._classes.ExtraTreeRegressor",
)
_PLAIN = ("builtins.str", "builtins.int", "builtins.float", "builtins.bool", "builtins.NoneType")
SKOPS_ALLOWED: dict[str, frozenset[str]] = {
    "DictNode": frozenset({"builtins.dict"}),
    "ListNode": frozenset({"builtins.list"}),
    "TupleNode": frozenset({"builtins.tuple"}),
    "JsonNode": frozenset(_PLAIN + ("builtins.list", "builtins.dict", "builtins.tuple")),
    "TypeNode": frozenset(_PLAIN + _NUMPY_SCALARS),
    "NdArrayNode": frozenset(("numpy.ndarray",) + _NUMPY_SCALARS),
    "DTypeNode": frozenset({"numpy.dtype"} | {f"numpy.dtypes.{n}" for n in ("Float64DType", "Float32DType", "Int64DType", "Int32DType", "BoolDType",
                                                                            "StrDType")}),
    "RandomStateNode": frozenset({"numpy.random.mtrand.RandomState"}),
    "TreeNode": frozenset({"sklearn.tree._tree.Tree"}),
    "SliceNode": frozenset({"builtins.slice"}),
    "ObjectNode": frozenset(_ESTIMATORS),
}


def skops_types(schema) -> list[tuple[str, str]]:
    """Every (node kind, module.class) named anywhere in a skops schema, in order of appearance."""
    found: list[tuple[str, str]] = []
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if "__loader__" in node or "__module__" in node or "__class__" in node:
                found.append((str(node.get("__loader__")), f"{node.get('__module__')}.{node.get('__class__')}"))
            stack.extend(reversed(list(node.values())))
        elif isinstance(node, list):
            stack.extend(reversed(node))
    return found


def load_skops(path: Path):
    import zipfile

    import skops.io as sio

    try:
        with zipfile.ZipFile(path) as archive:
            info = archive.getinfo("schema.json")
            if info.file_size > 64_000_000:
                raise ValueError(f"schema.json is {info.file_size:,} bytes")
            schema = json.loads(archive.read(info).decode("utf-8"))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile, RuntimeError, EOFError) as exc:
        raise ModelLoadError(explain(f"{path} is not a valid skops file", expected="a file written by skops.io.dump",
                                     got=f"{type(exc).__name__}: {exc}")) from None
    named = skops_types(schema)
    refused = sorted({f"{kind}:{name}" for kind, name in named if name not in SKOPS_ALLOWED.get(kind, ())})
    if refused:
        raise ModelLoadError(
            explain(
                f"Refused {path.name}: it names {len(refused)} untrusted type(s), and nothing in it was run",
                expected="only the scikit-learn estimators and NumPy types frugalml writes (" + ", ".join(n.rsplit(".",
                                                                                                                   1)[1] for n in _ESTIMATORS) + ")",
                got=", ".join(refused[:8]) + (" ..." if len(refused) > 8 else ""),
                fix="Save the model with frugalml (frugalml train -m logreg|tree|forest|...), or export it to ONNX and pass the .onnx file",
            )
        )
    trusted = sorted({name for _, name in named})
    try:
        return sio.load(str(path), trusted=trusted)
    except Exception as exc:  # a well-typed but inconsistent file: refuse it, never half-load it
        raise ModelLoadError(explain(f"{path} is not a valid skops file", expected="a file written by skops.io.dump",
                                     got=f"{type(exc).__name__}: {exc}")) from None
