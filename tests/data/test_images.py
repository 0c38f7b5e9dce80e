"""Image folders: classes from subfolders, sizes and channels, official splits, bad folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgeopt.data import load_data
from edgeopt.errors import InputError

#: Grey level of each class's images, so a test can check that labels follow pixels.
LEVELS = {"cat": 40, "dog": 200}


def _write_class_folders(
    root: Path,
    *,
    per_class: int = 6,
    size_wh: tuple[int, int] = (6, 8),
    mode: str = "L",
    suffix: str = ".png",
) -> None:
    for name, level in LEVELS.items():
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        color = level if mode == "L" else (level, 0, 255 - level)
        for i in range(per_class):
            Image.new(mode, size_wh, color).save(folder / f"{i:03d}{suffix}")


def test_images_loads_class_folders_as_uint8_nchw(tmp_path: Path) -> None:
    _write_class_folders(tmp_path)
    data = load_data(f"images:{tmp_path}")
    assert data.classes == ("cat", "dog")
    assert data.input_shape == (1, 8, 6)
    assert data.raw["train"].dtype == np.uint8
    assert data.normalization.raw_dtype == "uint8"
    assert sum(data.sizes()[split] for split in ("train", "val", "test")) == 12
    for split in ("train", "test"):
        levels = data.raw[split].reshape(len(data.raw[split]), -1).max(axis=1)
        expected = np.array([LEVELS[data.classes[label]] for label in data.labels[split]])
        np.testing.assert_array_equal(levels, expected)


def test_images_keeps_colour_as_rgb_channels(tmp_path: Path) -> None:
    _write_class_folders(tmp_path, mode="RGB")
    data = load_data(f"images:{tmp_path}")
    assert data.input_shape == (3, 8, 6)
    cat = data.raw["train"][data.labels["train"] == 0][0]
    assert (int(cat[0, 0, 0]), int(cat[1, 0, 0]), int(cat[2, 0, 0])) == (40, 0, 215)


def test_images_channels_parameter_converts_colour_to_grey(tmp_path: Path) -> None:
    _write_class_folders(tmp_path, mode="RGB")
    assert load_data(f"images:{tmp_path}?channels=1").input_shape == (1, 8, 6)


def test_images_reads_jpeg_bmp_and_pgm(tmp_path: Path) -> None:
    for suffix in (".jpg", ".bmp", ".pgm"):
        _write_class_folders(tmp_path / suffix[1:], per_class=3, suffix=suffix)
        data = load_data(f"images:{tmp_path / suffix[1:]}")
        assert data.input_shape == (1, 8, 6), suffix


def test_images_resizes_other_sizes_to_the_first_with_a_note(tmp_path: Path) -> None:
    _write_class_folders(tmp_path)
    Image.new("L", (12, 16), 200).save(tmp_path / "dog" / "big.png")
    data = load_data(f"images:{tmp_path}")
    assert data.input_shape == (1, 8, 6)
    assert any(note.startswith("resized 1 of 13 images to 8x6") for note in data.notes)


def test_images_size_parameter_resizes_every_image(tmp_path: Path) -> None:
    _write_class_folders(tmp_path)
    data = load_data(f"images:{tmp_path}?size=4x5")
    assert data.input_shape == (1, 4, 5)
    assert any("resized 12 of 12" in note for note in data.notes)


def test_images_uses_train_and_test_folders_as_the_official_split(tmp_path: Path) -> None:
    _write_class_folders(tmp_path / "train", per_class=5)
    _write_class_folders(tmp_path / "test", per_class=2)
    data = load_data(f"images:{tmp_path}")
    assert data.classes == ("cat", "dog")
    assert data.sizes()["test"] == 4
    assert data.sizes()["train"] + data.sizes()["val"] == 10
    assert data.split_rule.startswith("official train/ and test/ folders")


def test_images_skips_a_class_folder_without_images_with_a_note(tmp_path: Path) -> None:
    _write_class_folders(tmp_path)
    (tmp_path / "empty_class").mkdir()
    (tmp_path / "empty_class" / "notes.txt").write_text("no images here")
    data = load_data(f"images:{tmp_path}")
    assert data.classes == ("cat", "dog")
    assert "skipped class folders without images: empty_class" in data.notes


def test_images_loads_identically_twice(tmp_path: Path) -> None:
    _write_class_folders(tmp_path)
    first, second = load_data(f"images:{tmp_path}"), load_data(f"images:{tmp_path}")
    np.testing.assert_array_equal(first.labels["test"], second.labels["test"])
    np.testing.assert_array_equal(first.raw["train"], second.raw["train"])


def test_images_refuses_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"nowhere does not exist"):
        load_data(f"images:{tmp_path / 'nowhere'}")


def test_images_refuses_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="empty or label-less"):
        load_data(f"images:{tmp_path}")


def test_images_refuses_images_without_class_subfolders(tmp_path: Path) -> None:
    for i in range(4):
        Image.new("L", (4, 4), i).save(tmp_path / f"{i}.png")
    with pytest.raises(InputError, match="empty or label-less"):
        load_data(f"images:{tmp_path}")


def test_images_refuses_class_folders_without_any_image(tmp_path: Path) -> None:
    (tmp_path / "cat").mkdir()
    (tmp_path / "dog").mkdir()
    with pytest.raises(InputError, match="class subfolders but no image files"):
        load_data(f"images:{tmp_path}")


def test_images_refuses_a_corrupt_image_naming_it(tmp_path: Path) -> None:
    _write_class_folders(tmp_path)
    (tmp_path / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    with pytest.raises(InputError, match=r"broken\.png: cannot be read as an image"):
        load_data(f"images:{tmp_path}")


def test_images_refuses_a_single_class(tmp_path: Path) -> None:
    _write_class_folders(tmp_path)
    for path in (tmp_path / "dog").iterdir():
        path.unlink()
    with pytest.raises(InputError, match="fewer than two classes"):
        load_data(f"images:{tmp_path}")


@pytest.mark.parametrize(
    ("query", "message"),
    [("channels=2", "must be 1 or 3"), ("size=1x8x8", "must be HxW"), ("width=8", "unknown")],
)
def test_images_refuses_bad_parameters(tmp_path: Path, query: str, message: str) -> None:
    _write_class_folders(tmp_path, per_class=2)
    with pytest.raises(InputError, match=message):
        load_data(f"images:{tmp_path}?{query}")


def test_a_png_declaring_a_huge_chunk_is_one_sentence_under_a_memory_limit(
    tmp_path: Path,
) -> None:
    """Pillow reads an IDAT chunk's declared length at once: under a memory limit that was a
    MemoryError traceback (found by benchmarks/fuzz.py)."""
    import struct
    import subprocess
    import sys
    import zlib

    folder = tmp_path / "data"
    _write_class_folders(folder, per_class=2)
    png = sorted(folder.rglob("*.png"))[0]
    blob = png.read_bytes()
    at = blob.index(b"IDAT") - 4
    body = blob[at + 8 : at + 8 + struct.unpack(">I", blob[at : at + 4])[0]]
    chunk = struct.pack(">I", 0x7FFFFFF0) + b"IDAT" + body
    chunk += struct.pack(">I", zlib.crc32(b"IDAT" + body))
    png.write_bytes(blob[:at] + chunk + blob[at + 12 + len(body) :])
    script = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))\n"
        "from edgeopt.data import load_data\n"
        "from edgeopt.errors import InputError\n"
        "try:\n"
        f"    load_data('images:{folder}')\n"
        "except InputError as exc:\n"
        "    print('refused:', exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr[-500:]
    assert f"refused: {png}" in done.stdout
