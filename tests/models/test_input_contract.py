"""The input contract (issue 14, item 4): a model is fed exactly what the data holds unless it
says otherwise. edgeopt's own files carry their normalization and get it; a PyTorch model gets
the train split's (edgeopt trains it on that); any other file gets the raw values unless its
spec asks (``?normalize=auto|none|MEAN,STD``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper
from onnx import numpy_helper

from edgeopt.config import TrainConfig
from edgeopt.data import load_data
from edgeopt.errors import InputError
from edgeopt.measure import profile
from edgeopt.models import bind_data
from edgeopt.models import load_model
from edgeopt.pipeline import Recipe
from edgeopt.pipeline import Step
from edgeopt.pipeline import run


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """cnn-s trained on digits: an edgeopt file, its normalization in its metadata."""
    out = tmp_path_factory.mktemp("contract") / "cnn.onnx"
    run("zoo:cnn-s", Recipe(steps=(Step(TrainConfig(epochs=3)),)), data="digits", output=out)
    return out


def _foreign(trained: Path, folder: Path) -> Path:
    """The same network as a third party ships it: the normalization inside the graph (a Sub
    and a Div before the first layer), raw 0-16 pixels in, no edgeopt metadata."""
    model = onnx.load(str(trained))
    props = {p.key: p.value for p in model.metadata_props}
    import json

    norm = json.loads(props["edgeopt.normalization"])
    graph = model.graph
    raw, first = "raw_pixels", graph.input[0].name
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.array(norm["mean"], np.float32).reshape(1, -1, 1, 1), "mu"),
            numpy_helper.from_array(np.array(norm["std"], np.float32).reshape(1, -1, 1, 1), "sd"),
        ]
    )
    nodes = [
        helper.make_node("Sub", [raw, "mu"], ["centred"]),
        helper.make_node("Div", ["centred", "sd"], [first]),
    ]
    for index, node in enumerate(nodes):
        graph.node.insert(index, node)
    graph.input[0].name = raw
    del model.metadata_props[:]
    out = folder / "foreign.onnx"
    onnx.save(model, str(out))
    return out


def test_each_kind_of_model_is_fed_what_it_expects(trained: Path, tmp_path: Path) -> None:
    data = load_data("digits")
    own = profile(str(trained), data=data, is_latency_measured=False)
    foreign = _foreign(trained, tmp_path)
    as_shipped = profile(str(foreign), data=data, is_latency_measured=False)
    assert as_shipped.accuracy == own.accuracy  # raw pixels in, the graph normalizes
    assert "as the data gives it" in as_shipped.provenance["accuracy"]
    assert "metadata" in own.provenance["accuracy"]
    twice = profile(f"{foreign}?normalize=auto", data=data, is_latency_measured=False)
    assert twice.accuracy is not None and twice.accuracy < own.accuracy - 0.3  # normalized twice
    assert bind_data(load_model("zoo:cnn-s"), data) is data  # PyTorch: the train split's
    scaled = bind_data(load_model(f"{foreign}?normalize=8,4"), data)
    np.testing.assert_allclose(scaled.arrays("test")[0], (data.raw["test"] - 8.0) / 4.0)


def test_a_bad_normalize_value_is_one_sentence(trained: Path) -> None:
    with pytest.raises(InputError, match="normalize must be auto, none or MEAN,STD"):
        load_model(f"{trained}?normalize=0,0")
