"""Image folders: ``images:DIR`` with one subfolder per class, read with Pillow.

Pixels stay uint8 (N, C, H, W) so the normalization can later be folded into the first layer and
a device can feed its camera's bytes unchanged.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgeopt.data.dataset import Dataset
from edgeopt.data.dataset import make_dataset
from edgeopt.errors import InputError
from edgeopt.registry import register_dataset
from edgeopt.spec import Spec

if TYPE_CHECKING:  # Pillow is imported when images are read, not when edgeopt is imported.
    from PIL.Image import Image

#: File suffixes read as images; other files (README, labels.txt, .DS_Store) are ignored.
IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
    | {".pgm", ".ppm", ".pbm", ".pnm"}
)
#: Pillow band names of single-channel images ("1" bilevel, "L" 8-bit, "I" / "F" 32-bit).
_GREY_BANDS = frozenset({"1", "L", "I", "F"})


def _class_folders(folder: Path) -> list[Path]:
    """Visible subfolders, sorted by name so class indices do not depend on the file system."""
    return sorted(
        (child for child in folder.iterdir() if child.is_dir() and not child.name.startswith(".")),
        key=lambda child: child.name,
    )


def _image_files(folder: Path) -> list[Path]:
    """Image files anywhere under one class folder, sorted so the load is deterministic."""
    return sorted(
        (
            path
            for path in folder.rglob("*")
            if path.is_file()
            and path.suffix.lower() in IMAGE_SUFFIXES
            and not path.name.startswith(".")
        ),
        key=lambda path: path.relative_to(folder).as_posix(),
    )


def _open_image(path: Path) -> Image:
    """Open and decode one image now, so a corrupt file fails here with its name."""
    from PIL import Image as pil

    try:
        image = pil.open(path)
        image.load()
    except (OSError, SyntaxError, ValueError, pil.DecompressionBombError) as exc:
        raise InputError(f"{path}: cannot be read as an image ({exc}).") from None
    except MemoryError:  # a chunk whose declared length Pillow tries to read at once
        raise InputError(f"{path}: declares more image data than memory holds.") from None
    return image


def _is_grey(image: Image) -> bool:
    bands = tuple(band for band in image.getbands() if band != "A")
    return len(bands) == 1 and bands[0] in _GREY_BANDS


def _collect(
    folder: Path, spec: Spec, classes: tuple[str, ...] | None
) -> tuple[list[tuple[Path, int]], tuple[str, ...], list[str]]:
    """(file, label) pairs of one tree of class folders, its classes and the skipped folders.

    ``classes`` fixes the class list (the official test split uses the train split's classes);
    with ``None`` the classes are the subfolders that hold at least one image file.
    """
    subfolders = _class_folders(folder)
    if not subfolders:
        raise InputError(
            f"{spec.text}: {folder} is empty or label-less (no class subfolders with images)."
        )
    files_by_class = {sub.name: _image_files(sub) for sub in subfolders}
    skipped = [name for name, files in files_by_class.items() if not files]
    if classes is None:
        classes = tuple(name for name, files in files_by_class.items() if files)
    unknown = sorted(set(files_by_class) - set(classes) - set(skipped))
    if unknown:
        raise InputError(
            f"{spec.text}: {folder / unknown[0]} is a class the training folder does not have."
        )
    index = {name: i for i, name in enumerate(classes)}
    pairs = [(path, index[name]) for name, files in files_by_class.items() for path in files]
    return pairs, classes, skipped


def _read_images(
    pairs: list[tuple[Path, int]], *, size_hw: tuple[int, int], channels: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """Decode, convert and resize every image; returns (x uint8 NCHW, y, count resized)."""
    from PIL import Image as pil

    height, width = size_hw
    x = np.empty((len(pairs), channels, height, width), dtype=np.uint8)
    y = np.empty(len(pairs), dtype=np.int64)
    resized = 0
    mode = "L" if channels == 1 else "RGB"
    for i, (path, label) in enumerate(pairs):
        image = _open_image(path)
        if image.mode != mode:
            image = image.convert(mode)
        if image.size != (width, height):
            image = image.resize((width, height), pil.Resampling.BILINEAR)
            resized += 1
        pixels = np.asarray(image, dtype=np.uint8)
        x[i] = pixels[None, :, :] if channels == 1 else pixels.transpose(2, 0, 1)
        y[i] = label
    return x, y, resized


def _official_split(folder: Path) -> bool:
    """``train/`` and ``test/`` that both hold class subfolders are the dataset's own split."""
    train, test = folder / "train", folder / "test"
    return (
        train.is_dir()
        and test.is_dir()
        and bool(_class_folders(train))
        and bool(_class_folders(test))
    )


@register_dataset("images")
def load_images(spec: Spec) -> Dataset:
    """Image folder ``DIR/<class>/<file>``, or ``DIR/train/<class>`` and ``DIR/test/<class>``.

    Class names are the sorted subfolder names. With ``train/`` and ``test/`` folders the test
    folder is the official test split; otherwise 20% of each class is held out. ``?size=HxW``
    resizes every image (default: the first image's size) and ``?channels=1|3`` converts them
    (default: 1 when the first image is greyscale, else 3).

    Raises:
        InputError: DIR is missing, has no class subfolders or no images, or an image file is
            corrupt; a parameter is malformed.
    """
    spec.check_keys({"size", "channels"})
    folder = Path(spec.body)
    if not folder.is_dir():
        raise InputError(f"{spec.text}: folder {folder} does not exist.")
    size = spec.pop_shape("size", None)
    if size is not None and len(size) != 2:
        raise InputError(f"{spec.text}: size={spec.params['size']!r} must be HxW, e.g. 32x32.")
    channels = spec.pop_int("channels", 0)
    if "channels" in spec.params and channels not in (1, 3):
        raise InputError(f"{spec.text}: channels={channels} must be 1 or 3.")

    is_official = _official_split(folder)
    root = folder / "train" if is_official else folder
    pairs, classes, skipped = _collect(root, spec, None)
    test_pairs: list[tuple[Path, int]] = []
    if is_official:
        test_pairs, _, _ = _collect(folder / "test", spec, classes)
    if not pairs:
        raise InputError(f"{spec.text}: {root} has class subfolders but no image files.")

    notes: list[str] = []
    if skipped:
        notes.append(f"skipped class folders without images: {', '.join(skipped)}")
    first = _open_image(pairs[0][0])
    if size is None:
        width, height = first.size
        size_source = f"the first image's size ({pairs[0][0].name})"
    else:
        height, width = size
        size_source = "size parameter"
    if channels == 0:
        channels = 1 if _is_grey(first) else 3

    x, y, resized = _read_images(pairs, size_hw=(height, width), channels=channels)
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None
    if is_official:
        x_test, y_test, resized_test = _read_images(
            test_pairs, size_hw=(height, width), channels=channels
        )
        resized += resized_test
    if resized:
        total = len(pairs) + len(test_pairs)
        notes.append(f"resized {resized} of {total} images to {height}x{width} ({size_source})")
    return make_dataset(
        name=folder.name,
        spec=spec.text,
        x=x,
        y=y,
        x_test=x_test,
        y_test=y_test,
        classes=classes,
        raw_dtype="uint8",
        test_rule="official train/ and test/ folders" if is_official else None,
        notes=tuple(notes),
    )
