"""The embedded scikit-learn digits: shapes, deterministic and disjoint splits, normalization."""

from __future__ import annotations

import numpy as np
import pytest

from edgeopt.data import SPLITS
from edgeopt.data import load_data
from edgeopt.errors import InputError

DIGITS_SAMPLES = 1797


def _row_keys(x: np.ndarray) -> set[bytes]:
    """One key per sample: the digits' 1,797 images are all distinct, so keys identify samples."""
    return {row.tobytes() for row in x.reshape(len(x), -1)}


def test_digits_has_one_channel_8x8_inputs_and_ten_classes() -> None:
    data = load_data("digits")
    assert data.input_shape == (1, 8, 8)
    assert data.classes == tuple(str(c) for c in range(10))
    assert data.raw["train"].dtype == np.uint8
    assert data.raw["train"].max() <= 16


def test_digits_splits_cover_every_sample_once() -> None:
    sizes = load_data("digits").sizes()
    assert sizes["train"] + sizes["val"] + sizes["test"] == DIGITS_SAMPLES
    assert sizes["test"] == pytest.approx(0.2 * DIGITS_SAMPLES, abs=10)
    assert sizes["val"] == pytest.approx(0.1 * (DIGITS_SAMPLES - sizes["test"]), abs=10)
    assert sizes["calib"] == 512


def test_digits_test_split_holds_every_class_in_proportion() -> None:
    data = load_data("digits")
    counts = np.bincount(data.labels["test"], minlength=10)
    assert counts.min() >= 34 and counts.max() <= 38  # 20% of 174..183 samples per class


def test_digits_two_loads_give_identical_splits() -> None:
    first, second = load_data("digits"), load_data("digits")
    for split in SPLITS:
        np.testing.assert_array_equal(first.raw[split], second.raw[split])
        np.testing.assert_array_equal(first.labels[split], second.labels[split])
    assert first.normalization == second.normalization


def test_digits_train_val_test_are_disjoint_and_calib_is_drawn_from_train() -> None:
    data = load_data("digits")
    keys = {split: _row_keys(data.raw[split]) for split in SPLITS}
    assert not keys["train"] & keys["val"]
    assert not keys["train"] & keys["test"]
    assert not keys["val"] & keys["test"]
    assert keys["calib"] <= keys["train"]


def test_digits_normalization_maps_train_to_zero_mean_unit_std() -> None:
    data = load_data("digits")
    x, y = data.arrays("train")
    assert x.dtype == np.float32 and y.dtype == np.int64
    assert float(x.mean()) == pytest.approx(0.0, abs=1e-5)
    assert float(x.std()) == pytest.approx(1.0, abs=1e-4)


def test_digits_normalization_is_recorded_with_raw_dtype() -> None:
    data = load_data("digits")
    recorded = data.describe()["normalization"]
    assert recorded["raw_dtype"] == "uint8"
    assert recorded["mean"] == [pytest.approx(float(data.raw["train"].mean()))]
    assert recorded["std"] == [pytest.approx(float(data.raw["train"].std()))]


def test_digits_refuses_unknown_parameter() -> None:
    with pytest.raises(InputError, match="unknown parameter 'size'"):
        load_data("digits?size=28x28")


def test_unknown_data_scheme_names_the_known_ones() -> None:
    with pytest.raises(InputError, match="known schemes: audio, digits, idx, images, npz"):
        load_data("csv:/tmp/data.csv")
