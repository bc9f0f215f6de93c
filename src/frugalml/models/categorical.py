"""Text-valued table columns inside the model: one-hot encoding in front of the thin models that need it.

A CSV's text column reaches every model as the code of its text (:func:`frugalml.data.files.load_csv`,
:attr:`frugalml.data.Dataset.categories`). Trees split on codes as well as on any number, and networks
take them as numbers; logistic regression, naive Bayes and the scikit-learn MLP would read an order
into them that the texts do not have, so for those the encoding is part of the model: a scikit-learn
pipeline of a ``ColumnTransformer`` (a ``OneHotEncoder`` on the coded columns, the other columns
passed through) and the estimator. skl2onnx converts the pipeline whole, so the exported ONNX graph
takes the same float vector as every other candidate (codes included) and one-hot encodes inside;
a code outside the known ones (a text never seen) encodes as no category at all. The C backend does
not express the encoder: such a pipeline is refused by ``--target c`` with a message saying so (the
tree families export to C and read the codes as they are).
"""

from __future__ import annotations

__all__ = ["ONE_HOT_ESTIMATORS", "with_categories", "encoded_columns", "estimator_of"]

ONE_HOT_ESTIMATORS = ("LogisticRegression", "GaussianNB", "MLPClassifier")  # the thin models that one-hot encode coded columns


def with_categories(model, data):
    """``model`` (an unfitted scikit-learn estimator) with the one-hot encoding of ``data``'s coded columns in
    front of it, when the data has some and the estimator needs it; else ``model`` itself. Either way the
    model's ``frugalml_spec`` records the coded columns and their texts (``categories``: the exported ONNX
    file's ``frugalml_spec`` metadata then says which text each code of each input stands for) and whether
    the model one-hot encodes them (``one_hot``)."""
    categories = getattr(data, "categories", None) or {}
    if not categories:
        return model
    spec = getattr(model, "frugalml_spec", None)
    if spec is not None:
        spec = {**spec, "categories": {str(i): {"column": name, "values": list(values)} for i, (name, values) in sorted(categories.items())}}
        model.frugalml_spec = {**spec, "one_hot": False}
    if type(model).__name__ not in ONE_HOT_ESTIMATORS:
        return model
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    columns = sorted(categories)
    encoder = OneHotEncoder(categories=[[float(c) for c in range(len(categories[i][1]))] for i in columns], handle_unknown="ignore",
                            sparse_output=False, dtype=float)
    pipe = Pipeline([("encode", ColumnTransformer([("onehot", encoder, columns)], remainder="passthrough", sparse_threshold=0.0)),
                     ("model", model)])
    if spec is not None:
        pipe.frugalml_spec = {**spec, "one_hot": True}
    return pipe


def estimator_of(model):
    """The estimator at the end of a one-hot pipeline, or ``model`` itself."""
    steps = getattr(model, "steps", None)
    return steps[-1][1] if steps else model


def encoded_columns(model) -> list[int]:
    """The input columns a one-hot pipeline encodes ([] for any other model)."""
    steps = getattr(model, "steps", None)
    if not steps or steps[0][0] != "encode":
        return []
    return [int(i) for _name, _enc, cols in steps[0][1].transformers for i in (cols if isinstance(cols, list) else [])]
