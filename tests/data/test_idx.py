"""MNIST-format IDX folders: small files written here, and Fashion-MNIST when a checkout has it."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from edgeopt.data import load_data
from edgeopt.errors import InputError
from edgeopt.testing import shared_data_dir

IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dims
LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dim


def _write_idx(path: Path, array: np.ndarray, magic: int) -> None:
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def _write_mnist_folder(folder: Path, *, train: int = 60, test: int = 20) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (train, 6, 5), dtype=np.uint8),
        "train-labels-idx1-ubyte": np.arange(train, dtype=np.uint8) % 3,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (test, 6, 5), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": np.arange(test, dtype=np.uint8) % 3,
    }
    folder.mkdir(parents=True, exist_ok=True)
    for stem, array in arrays.items():
        magic = IMAGES_MAGIC if array.ndim == 3 else LABELS_MAGIC
        _write_idx(folder / f"{stem}.gz", array, magic)
    return arrays


def test_idx_loads_images_as_nchw_with_t10k_as_test_split(tmp_path: Path) -> None:
    arrays = _write_mnist_folder(tmp_path / "tiny")
    data = load_data(f"idx:{tmp_path / 'tiny'}")
    assert data.input_shape == (1, 6, 5)
    assert data.classes == ("0", "1", "2")
    assert data.raw["test"].dtype == np.uint8
    np.testing.assert_array_equal(data.raw["test"][:, 0], arrays["t10k-images-idx3-ubyte"])
    np.testing.assert_array_equal(data.labels["test"], arrays["t10k-labels-idx1-ubyte"])
    assert data.sizes()["train"] + data.sizes()["val"] == 60
    assert data.split_rule.startswith("official t10k test split")


def test_idx_limit_keeps_the_first_training_samples(tmp_path: Path) -> None:
    _write_mnist_folder(tmp_path)
    data = load_data(f"idx:{tmp_path}?limit=30")
    assert data.sizes()["train"] + data.sizes()["val"] == 30
    assert data.sizes()["test"] == 20
    assert "limited to the first 30 samples" in data.split_rule


def test_idx_refuses_truncated_file_naming_it(tmp_path: Path) -> None:
    _write_mnist_folder(tmp_path)
    images = tmp_path / "train-images-idx3-ubyte.gz"
    with gzip.open(images, "rb") as handle:
        blob = handle.read()
    with gzip.open(images, "wb") as handle:
        handle.write(blob[:-7])
    with pytest.raises(InputError, match=r"train-images-idx3-ubyte\.gz: truncated IDX file"):
        load_data(f"idx:{tmp_path}")


def test_idx_refuses_bad_magic_number_naming_the_file(tmp_path: Path) -> None:
    _write_mnist_folder(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"PK\x03\x04junk"))
    with pytest.raises(InputError, match=r"t10k-labels-idx1-ubyte\.gz: not an IDX file"):
        load_data(f"idx:{tmp_path}")


def test_idx_refuses_missing_file_naming_it(tmp_path: Path) -> None:
    _write_mnist_folder(tmp_path)
    (tmp_path / "t10k-images-idx3-ubyte.gz").unlink()
    with pytest.raises(InputError, match=r"t10k-images-idx3-ubyte\[\.gz\] is missing"):
        load_data(f"idx:{tmp_path}")


def test_idx_refuses_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        load_data(f"idx:{tmp_path / 'nowhere'}")


def test_idx_refuses_label_count_that_differs_from_image_count(tmp_path: Path) -> None:
    _write_mnist_folder(tmp_path)
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(59, np.uint8), LABELS_MAGIC)
    with pytest.raises(InputError, match="59 labels"):
        load_data(f"idx:{tmp_path}")


@pytest.mark.skipif(
    shared_data_dir("fashion-mnist") is None,
    reason="no shared/data/fashion-mnist above this checkout (only development machines have it)",
)
def test_idx_loads_fashion_mnist_with_its_10000_test_images() -> None:
    folder = shared_data_dir("fashion-mnist")
    data = load_data(f"idx:{folder}?limit=2000")  # the full 60k train set takes ~1.7 s to load
    assert data.input_shape == (1, 28, 28)
    assert data.num_classes == 10
    assert data.sizes()["test"] == 10_000
    assert np.bincount(data.labels["test"]).tolist() == [1000] * 10
    assert data.sizes()["train"] + data.sizes()["val"] == 2000


def test_idx_refuses_corrupt_gzip_naming_it(tmp_path: Path) -> None:
    """A flipped byte inside the deflate stream was a zlib.error traceback."""
    _write_mnist_folder(tmp_path, train=2000)
    images = tmp_path / "train-images-idx3-ubyte.gz"
    blob = bytearray(images.read_bytes())
    for index in range(len(blob) // 2, len(blob) // 2 + 64):
        blob[index] ^= 0x5A
    images.write_bytes(bytes(blob))
    with pytest.raises(InputError, match=r"train-images-idx3-ubyte\.gz: cannot be read as IDX"):
        load_data(f"idx:{tmp_path}")


def test_idx_reads_no_further_than_its_size_cap(tmp_path: Path) -> None:
    """A gzip bomb (a small file that inflates without end) is refused at the cap."""
    from edgeopt.data.tabular import read_idx

    bomb = tmp_path / "bomb-idx3-ubyte.gz"
    with gzip.open(bomb, "wb") as handle:
        handle.write(IMAGES_MAGIC.to_bytes(4, "big") + (10**6).to_bytes(4, "big") * 3)
        handle.write(bytes(4 * 2**20))
    assert bomb.stat().st_size < 20_000
    with pytest.raises(InputError, match="larger than 1,048,576 bytes decompressed"):
        read_idx(bomb, max_bytes=2**20)


def test_idx_with_an_absurd_number_of_dimensions_is_refused(tmp_path: Path) -> None:
    from edgeopt.data.tabular import read_idx

    path = tmp_path / "deep-idx3-ubyte"
    path.write_bytes(bytes([0, 0, 0x08, 82]) + bytes(4 * 82))
    with pytest.raises(InputError, match="an IDX array of 82 dimensions"):
        read_idx(path)


def test_idx_refuses_a_split_with_no_samples(tmp_path: Path) -> None:
    """Zero images and zero labels agree in count; it was a numpy traceback (exit 1)."""
    _write_mnist_folder(tmp_path)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", np.zeros((0, 6, 5), np.uint8), IMAGES_MAGIC)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(0, np.uint8), LABELS_MAGIC)
    with pytest.raises(InputError, match="test IDX files hold no samples"):
        load_data(f"idx:{tmp_path}")


def test_idx_refuses_labels_beyond_the_class_limit(tmp_path: Path) -> None:
    """int32 labels of 2**31 - 1 would have made two billion class names."""
    _write_mnist_folder(tmp_path)
    labels = np.full(60, 2**31 - 1, dtype=">i4")
    header = (0x00000C01).to_bytes(4, "big") + (60).to_bytes(4, "big")
    with gzip.open(tmp_path / "train-labels-idx1-ubyte.gz", "wb") as handle:
        handle.write(header + labels.tobytes())
    with pytest.raises(InputError, match="training label is outside"):
        load_data(f"idx:{tmp_path}")
