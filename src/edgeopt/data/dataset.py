"""The dataset record every loader returns, and the deterministic splits.

Samples are kept in their raw units (uint8 pixels, int16 audio turned into features, digits' 0..16
levels) next to the :class:`Normalization` that maps them to the network's input. Keeping the two
apart is what lets a later step fold the normalization into the first layer, so a device can feed
raw sensor values.
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field
from dataclasses import replace
from typing import Literal

import numpy as np

from edgeopt.errors import InputError

SplitName = Literal["train", "val", "calib", "test"]
SPLITS: tuple[SplitName, ...] = ("train", "val", "calib", "test")

#: Fraction of the training pool kept for validation, and the calibration subset's size.
VAL_FRACTION = 0.1
CALIB_SAMPLES = 512
#: Fraction held out as the test split when a dataset has no official one.
TEST_FRACTION = 0.2
SPLIT_SEED = 0


@dataclass(frozen=True)
class Normalization:
    """``x_net = (x_raw - mean) / std``, per input channel, computed on the train split."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    raw_dtype: str = "float32"

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Map raw samples of shape (N, C, ...) to the network's float32 input."""
        shape = (1, len(self.mean)) + (1,) * (x.ndim - 2)
        mean = np.asarray(self.mean, dtype=np.float32).reshape(shape)
        std = np.asarray(self.std, dtype=np.float32).reshape(shape)
        return ((x.astype(np.float32) - mean) / std).astype(np.float32)

    def to_dict(self) -> dict[str, object]:
        return {"mean": list(self.mean), "std": list(self.std), "raw_dtype": self.raw_dtype}

    @classmethod
    def fit(cls, x: np.ndarray, raw_dtype: str) -> Normalization:
        """Per-channel mean and standard deviation of raw samples shaped (N, C, ...).

        Sums are accumulated in float64 one chunk at a time, so no float64 copy of the whole
        split is made (Fashion-MNIST's would be 340 MB).
        """
        channels = x.shape[1]
        total = np.zeros(channels)
        squares = np.zeros(channels)
        count = 0
        for begin in range(0, len(x), 4096):
            chunk = x[begin : begin + 4096].astype(np.float64)
            chunk = np.moveaxis(chunk, 1, 0).reshape(channels, -1)
            total += chunk.sum(axis=1)
            squares += np.square(chunk).sum(axis=1)
            count += chunk.shape[1]
        mean = total / count
        std = np.sqrt(np.maximum(squares / count - mean**2, 0.0))
        std = np.where(std < 1e-8, 1.0, std)
        return cls(
            mean=tuple(float(v) for v in mean),
            std=tuple(float(v) for v in std),
            raw_dtype=raw_dtype,
        )


#: How a dataset's samples become a model's input before a model says otherwise.
FITTED = "normalized with the mean and standard deviation of the train split"


@dataclass(frozen=True)
class Dataset:
    """A labelled dataset with fixed train / val / calib / test splits.

    ``raw[split]`` holds samples shaped as the source gives them: (N, C, H, W) for images,
    (N, 1, frames, mels) for audio, an ``npz`` array's own shape. ``arrays(split)`` returns the
    float32 input a model is fed, made with ``normalization`` (``input_rule`` says how that was
    chosen; :func:`edgeopt.models.bind_data` picks it for a model), and int64 labels. Audio
    also keeps ``test_signals``, the test clips as the int16
    samples (N, samples) a device records, in ``raw["test"]`` order: folding the front end into
    the model is checked on them (only the test split's, to keep memory small).
    """

    name: str
    spec: str
    raw: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    classes: tuple[str, ...]
    normalization: Normalization
    split_rule: str
    notes: tuple[str, ...] = field(default=())
    frontend: dict[str, object] = field(default_factory=dict)
    test_signals: np.ndarray | None = None
    input_rule: str = FITTED

    def with_input(self, normalization: Normalization, rule: str) -> Dataset:
        """The same data fed to a model through ``normalization`` (``rule`` says why).

        Raises:
            InputError: the normalization has another channel count than the data.
        """
        channels = self.raw["train"].shape[1] if self.raw["train"].ndim > 1 else 1
        if len(normalization.mean) not in (1, channels):
            raise InputError(
                f"{self.spec}: the model's normalization has {len(normalization.mean)} "
                f"channels but the data's samples have {channels} along axis 1."
            )
        if len(normalization.mean) != channels:
            normalization = Normalization(
                normalization.mean * channels, normalization.std * channels, normalization.raw_dtype
            )
        return replace(self, normalization=normalization, input_rule=rule)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one sample, without the batch dimension."""
        return tuple(self.raw["train"].shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def arrays(self, split: SplitName) -> tuple[np.ndarray, np.ndarray]:
        """Normalized float32 inputs and int64 labels of one split."""
        if split not in self.raw:
            raise InputError(f"{self.spec}: no split {split!r}; splits: {', '.join(SPLITS)}.")
        return self.normalization.apply(self.raw[split]), self.labels[split]

    def sizes(self) -> dict[str, int]:
        return {name: int(len(self.labels[name])) for name in SPLITS}

    def describe(self) -> dict[str, object]:
        """What a report records about the data: spec, sizes, split rule, normalization."""
        return {
            "spec": self.spec,
            "name": self.name,
            "input_shape": list(self.input_shape),
            "classes": list(self.classes),
            "sizes": self.sizes(),
            "split_rule": self.split_rule,
            "normalization": self.normalization.to_dict(),
            "input_rule": self.input_rule,
            "frontend": dict(self.frontend),
            "notes": list(self.notes),
        }


def _stratified_holdout(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (keep, holdout): ``fraction`` of every class held out, deterministically."""
    rng = np.random.default_rng(seed)
    keep: list[np.ndarray] = []
    hold: list[np.ndarray] = []
    for label in np.unique(y):
        idx = np.flatnonzero(y == label)
        rng.shuffle(idx)
        n_hold = int(round(len(idx) * fraction))
        if len(idx) > 1:
            n_hold = min(max(n_hold, 1), len(idx) - 1)
        else:
            n_hold = 0
        hold.append(idx[:n_hold])
        keep.append(idx[n_hold:])
    return np.sort(np.concatenate(keep)), np.sort(np.concatenate(hold))


def make_dataset(  # noqa: C901  (one check per field of a dataset from a stranger, each naming the field)
    *,
    name: str,
    spec: str,
    x: np.ndarray,
    y: np.ndarray,
    classes: tuple[str, ...],
    raw_dtype: str,
    x_test: np.ndarray | None = None,
    y_test: np.ndarray | None = None,
    test_rule: str | None = None,
    notes: tuple[str, ...] = (),
    frontend: dict[str, object] | None = None,
    signals: np.ndarray | None = None,
    signals_test: np.ndarray | None = None,
) -> Dataset:
    """Split raw samples into train / val / calib / test and fit the normalization on train.

    With ``x_test`` given (the dataset's official test split) it is the test split; otherwise
    ``TEST_FRACTION`` of each class is held out. ``VAL_FRACTION`` of each class of the remaining
    pool is the validation split; the calibration split is ``CALIB_SAMPLES`` drawn from train
    (calibration data is training data, never validation or test data). ``signals`` (and
    ``signals_test``) are the raw recordings behind ``x`` (and ``x_test``), row for row; the
    test split's are kept as ``Dataset.test_signals``.
    """
    if signals is not None and len(signals) != len(x):
        raise InputError(f"{spec}: {len(x)} samples but {len(signals)} signals.")
    if (signals_test is not None) != (signals is not None and x_test is not None):
        raise InputError(f"{spec}: signals need one row per sample of every split given.")
    if signals_test is not None and x_test is not None and len(signals_test) != len(x_test):
        raise InputError(f"{spec}: {len(x_test)} test samples but {len(signals_test)} signals.")
    if len(x) == 0:
        raise InputError(f"{spec}: the dataset has no samples.")
    if len(x) != len(y):
        raise InputError(f"{spec}: {len(x)} samples but {len(y)} labels.")
    if (x_test is None) != (y_test is None):
        raise InputError(f"{spec}: a test split needs both its samples and its labels.")
    if x_test is not None and y_test is not None:
        if len(x_test) != len(y_test):
            raise InputError(f"{spec}: {len(x_test)} test samples but {len(y_test)} labels.")
        if x_test.shape[1:] != x.shape[1:]:
            raise InputError(
                f"{spec}: test samples have shape {x_test.shape[1:]} but training samples "
                f"{x.shape[1:]}."
            )
    if y.min() < 0 or (y_test is not None and len(y_test) and y_test.min() < 0):
        raise InputError(f"{spec}: labels must be 0 or more.")
    if len(np.unique(y)) < 2:
        raise InputError(f"{spec}: the dataset has fewer than two classes.")
    if x_test is None or y_test is None:
        pool, test = _stratified_holdout(y, TEST_FRACTION, SPLIT_SEED)
        x_pool, y_pool, x_test, y_test = x[pool], y[pool], x[test], y[test]
        signals_test = None if signals is None else signals[test]
        rule = test_rule or f"stratified {TEST_FRACTION:.0%} test holdout (seed {SPLIT_SEED})"
    else:
        x_pool, y_pool = x, y
        rule = test_rule or "official test split"
    if len(x_test) == 0:
        raise InputError(f"{spec}: the test split is empty.")
    train, val = _stratified_holdout(y_pool, VAL_FRACTION, SPLIT_SEED + 1)
    rng = np.random.default_rng(SPLIT_SEED + 2)
    calib = np.sort(rng.permutation(train)[:CALIB_SAMPLES])
    raw = {
        "train": x_pool[train],
        "val": x_pool[val],
        "calib": x_pool[calib],
        "test": x_test,
    }
    labels = {
        "train": y_pool[train].astype(np.int64),
        "val": y_pool[val].astype(np.int64),
        "calib": y_pool[calib].astype(np.int64),
        "test": y_test.astype(np.int64),
    }
    rule += (
        f"; val {VAL_FRACTION:.0%} of the rest per class; calib {CALIB_SAMPLES} samples of train"
    )
    return Dataset(
        name=name,
        spec=spec,
        raw=raw,
        labels=labels,
        classes=classes,
        normalization=Normalization.fit(raw["train"], raw_dtype),
        split_rule=rule,
        notes=notes,
        frontend=frontend or {},
        test_signals=signals_test,
    )
