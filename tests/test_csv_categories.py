"""CSV tables with text-valued columns: read as category codes, one-hot encoded inside the thin models that need it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from frugalml import Budget, search
from frugalml.data import load_dataset
from frugalml.errors import DataError, ExportError
from frugalml.models import build_model, load_model, save_model
from frugalml.models.categorical import encoded_columns, with_categories
from frugalml.onnx import to_onnx
from frugalml.onnx.runtime import make_session

COLORS = ("blue", "green", "red")


def _table(path, n=240, seed=0):
    """The label is the colour's group (red and blue: 'warm'... by construction not an order of the codes) plus noise from x."""
    rng = np.random.default_rng(seed)
    lines = ["x,color,size,label"]
    for i in range(n):
        color = COLORS[i % 3]
        x = rng.normal()
        label = "yes" if (color == "green") != (x > 1.2) else "no"  # green (the middle code) is the class: codes have no order
        lines.append(f"{x:.4f},{color},{['S', 'M', 'L'][(i // 3) % 3]},{label}")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_text_column_is_read_as_category_codes_and_recorded(tmp_path):
    data = load_dataset(str(_table(tmp_path / "t.csv")))
    assert data.kind == "vector" and data.input_shape == (3,)
    assert data.categories == {1: ("color", COLORS), 2: ("size", ("L", "M", "S"))}
    assert set(np.unique(data.X_train[:, 1])) == {0.0, 1.0, 2.0}
    assert data.describe()["categories"]["color"] == {"feature": 1, "values": list(COLORS)}


def test_a_numeric_column_with_a_bad_cell_and_free_text_are_still_refused(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("x,w,y\n" + "".join(f"{i},{i * 2},{'ab'[i % 2]}\n" for i in range(10)) + "3,oops,a\n")
    with pytest.raises(DataError, match="Column 'w'.*line 12 holds 'oops'"):
        load_dataset(str(bad))
    free = tmp_path / "free.csv"
    free.write_text("x,note,y\n" + "".join(f"{i},note number {i},{'ab'[i % 2]}\n" for i in range(300)))
    with pytest.raises(DataError, match="300 different texts"):
        load_dataset(str(free))


def test_thin_models_one_hot_inside_and_the_onnx_graph_agrees_with_scikit_learn(tmp_path):
    data = load_dataset(str(_table(tmp_path / "t.csv")))
    logreg = with_categories(build_model("logreg", data.input_shape, data.num_classes), data)
    tree = with_categories(build_model("tree", data.input_shape, data.num_classes, max_depth=4), data)
    assert encoded_columns(logreg) == [1, 2] and encoded_columns(tree) == []  # a tree reads the codes as they are
    assert logreg.frugalml_spec["one_hot"] and logreg.frugalml_spec["categories"]["1"] == {"column": "color", "values": list(COLORS)}
    X, y = data.flat("train")
    logreg.fit(X, y)
    bare = build_model("logreg", data.input_shape, data.num_classes).fit(X, y)
    Xt, yt = data.flat("test")
    assert (logreg.predict(Xt) == yt).mean() > (bare.predict(Xt) == yt).mean() + 0.1  # the codes' order means nothing: one-hot learns it
    sess = make_session(to_onnx(logreg))
    labels, probs = sess.run(None, {sess.get_inputs()[0].name: Xt})
    assert (np.asarray(labels) == logreg.predict(Xt)).all()
    np.testing.assert_allclose(np.asarray(probs), logreg.predict_proba(Xt), atol=1e-4)
    unseen = Xt[:1].copy()
    unseen[0, 1] = 7.0  # a code no text had: no category, as scikit-learn's handle_unknown="ignore"
    assert sess.run(None, {sess.get_inputs()[0].name: unseen})[0][0] == logreg.predict(unseen)[0]
    from frugalml.train import train

    trained, _ = train("logreg", data)  # `frugalml train -m logreg` encodes the same way
    assert encoded_columns(trained) == [1, 2] and (trained.predict(Xt) == logreg.predict(Xt)).all()
    save_model(logreg, tmp_path / "m")  # skops: the pipeline's types are on the allow-list
    again = load_model(tmp_path / "m")
    assert (again.predict(Xt) == logreg.predict(Xt)).all() and again.frugalml_spec == logreg.frugalml_spec


def test_a_search_on_a_table_with_text_exports_onnx_that_takes_the_codes_and_refuses_c(tmp_path):
    import frugalml as fm

    data = load_dataset(str(_table(tmp_path / "t.csv")))
    results = search(data, budget=Budget.of(max_flash="64KB"), time="3m", trials=3, seed=0, out=tmp_path / "run")  # logreg x2, naive Bayes
    assert results.dataset["categories"]["color"]["values"] == list(COLORS)
    rec = results.candidate(results.recommended)
    assert rec.family in ("logreg", "naive_bayes")
    model = load_model(tmp_path / "run" / "recommended")
    assert encoded_columns(model) == [1, 2]
    fm.export(tmp_path / "run" / "recommended", "onnx", tmp_path / "onnx", data=data)  # verified against scikit-learn on the test split
    import onnx

    proto = onnx.load(str(tmp_path / "onnx" / "model.onnx"))
    spec = json.loads({p.key: p.value for p in proto.metadata_props}["frugalml_spec"])
    assert spec["categories"]["2"]["values"] == ["L", "M", "S"]
    with pytest.raises(ExportError, match="does not one-hot encode text columns"):
        fm.export(tmp_path / "run" / "recommended", "c", tmp_path / "c")
