from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from onnx import numpy_helper

from edgeopt.config import TrainConfig
from edgeopt.data import Dataset
from edgeopt.data import load_data
from edgeopt.errors import InputError
from edgeopt.export.compressed import CompressionReport
from edgeopt.export.compressed import _gaps
from edgeopt.export.compressed import _positions
from edgeopt.export.compressed import compress_onnx
from edgeopt.export.compressed import decompress
from edgeopt.export.compressed import share_weights
from edgeopt.export.entropy import huffman_decode
from edgeopt.export.entropy import huffman_encode
from edgeopt.export.entropy import pack_fixed
from edgeopt.export.onnx import export_onnx
from edgeopt.stages.prune import PruneConfig
from edgeopt.stages.prune import prune
from edgeopt.training import train


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_data("digits")


@pytest.fixture(scope="module")
def pruned_onnx(digits: Dataset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """cnn-s (3 convolutions and a classifier) trained on digits, 90% of its weights pruned."""
    trained = train("zoo:cnn-s", digits, TrainConfig(epochs=3)).model
    pruned = prune(trained, PruneConfig(ratio=0.9, finetune_epochs=1), data=digits).model
    return export_onnx(pruned, tmp_path_factory.mktemp("pruned") / "cnn.onnx")


@pytest.fixture(scope="module")
def compressed(pruned_onnx: Path) -> CompressionReport:
    return compress_onnx(pruned_onnx, pruned_onnx.with_name("cnn.edc"), bits_conv=6, bits_fc=5)


def run(path: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, {session.get_inputs()[0].name: x})[0])


def weights_of(path: Path) -> dict[str, np.ndarray]:
    model = onnx.load(str(path))
    return {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}


def test_round_trip_is_bit_exact(
    compressed: CompressionReport, digits: Dataset, tmp_path: Path
) -> None:
    back = decompress(compressed.compressed_path, tmp_path / "back.onnx")
    x = digits.arrays("test")[0]
    diff = np.abs(run(back, x) - run(compressed.shared_path, x))
    assert diff.max() == 0.0
    assert back.read_bytes() == compressed.shared_path.read_bytes()


def test_index_width_is_chosen_per_tensor_and_never_costs_more_than_a_fixed_one(
    compressed: CompressionReport, pruned_onnx: Path, digits: Dataset, tmp_path: Path
) -> None:
    fixed = compress_onnx(pruned_onnx, tmp_path / "fixed.edc", bits_conv=6, bits_fc=5, index_bits=5)
    assert all(t.index_bits == 5 for t in fixed.tensors)
    for auto, five in zip(compressed.tensors, fixed.tensors, strict=True):
        assert 2 <= auto.index_bits <= 8
        assert auto.stored_bytes <= five.stored_bytes  # 5 is one of the widths tried
    back = decompress(compressed.compressed_path, tmp_path / "auto.onnx")
    x = digits.arrays("test")[0]
    assert np.array_equal(run(back, x), run(fixed.shared_path, x))  # same shared weights


def test_compressed_file_is_much_smaller_than_the_dense_onnx(
    compressed: CompressionReport, pruned_onnx: Path
) -> None:
    assert compressed.dense_bytes == pruned_onnx.stat().st_size
    assert compressed.compressed_bytes == compressed.compressed_path.stat().st_size
    assert compressed.size_bytes == compressed.shared_path.stat().st_size
    assert compressed.ratio > 12  # 90% pruned, 5-6 bit codebooks, entropy coded
    stored = sum(t.stored_bytes for t in compressed.tensors) + compressed.graph_bytes
    assert compressed.compressed_bytes == stored + 10 + 4  # header (magic .. length), CRC
    for tensor in compressed.tensors:
        assert tensor.stored_bytes <= min(
            tensor.packed_bytes, tensor.huffman_bytes, tensor.lzma_bytes
        )
    assert compressed.huffman_bytes < compressed.packed_bytes


def test_shared_weights_use_at_most_two_to_the_bits_values(
    compressed: CompressionReport, pruned_onnx: Path
) -> None:
    source = weights_of(pruned_onnx)
    shared = weights_of(compressed.shared_path)
    kinds = {t.name: t.kind for t in compressed.tensors}
    assert sorted(kinds.values()) == ["conv", "conv", "conv", "fc"]
    for name, kind in kinds.items():
        values = np.unique(shared[name][shared[name] != 0])
        assert len(values) <= (2**6 if kind == "conv" else 2**5)
        assert np.all((shared[name] != 0) <= (source[name] != 0))  # no weight comes back
        assert np.abs(shared[name] - source[name]).max() < 0.25 * np.abs(source[name]).max()
    others = set(source) - set(kinds)
    assert others and all(np.array_equal(source[n], shared[n]) for n in others)


def test_the_source_file_is_never_modified(pruned_onnx: Path, tmp_path: Path) -> None:
    digest = hashlib.sha256(pruned_onnx.read_bytes()).hexdigest()
    compress_onnx(pruned_onnx, tmp_path / "again.edc")
    assert hashlib.sha256(pruned_onnx.read_bytes()).hexdigest() == digest
    assert (tmp_path / "again.shared.onnx").is_file()
    with pytest.raises(InputError, match="would overwrite the source"):
        compress_onnx(pruned_onnx, tmp_path / "x.edc", shared_path=pruned_onnx)


def test_corrupt_file_is_refused_naming_it(compressed: CompressionReport, tmp_path: Path) -> None:
    blob = bytearray(compressed.compressed_path.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    flipped = tmp_path / "flipped.edc"
    flipped.write_bytes(bytes(blob))
    with pytest.raises(InputError, match=f"{flipped}: the compressed model is corrupt"):
        decompress(flipped, tmp_path / "out.onnx")
    truncated = tmp_path / "truncated.edc"
    truncated.write_bytes(bytes(blob[:40]))
    with pytest.raises(InputError, match=str(truncated)):
        decompress(truncated, tmp_path / "out.onnx")
    with pytest.raises(InputError, match="not an edgeopt compressed model"):
        decompress(compressed.shared_path, tmp_path / "out.onnx")
    with pytest.raises(InputError, match="does not exist"):
        decompress(tmp_path / "missing.edc", tmp_path / "out.onnx")
    assert not (tmp_path / "out.onnx").exists()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"bits_fc": 0}, "bits_fc must be a whole number from 1 to 8"),
        ({"bits_conv": 9}, "bits_conv"),
        ({"index_bits": 1}, "index_bits"),
        ({"codebook": "pq"}, "codebook must be kmeans or linear"),
    ],
)
def test_bad_options_are_refused(
    pruned_onnx: Path, tmp_path: Path, options: dict[str, object], message: str
) -> None:
    with pytest.raises(InputError, match=message):
        compress_onnx(pruned_onnx, tmp_path / "x.edc", **options)  # type: ignore[arg-type]


def test_linear_codebook_is_symmetric_int8_per_tensor() -> None:
    rng = np.random.default_rng(0)
    weights = rng.standard_normal((16, 32)).astype(np.float32)
    weights[rng.random(weights.shape) < 0.5] = 0
    shared = share_weights(weights, bits=8, codebook="linear")
    scale = np.abs(weights).max() / 127
    steps = shared / scale
    assert np.allclose(steps, np.round(steps), atol=1e-3)
    assert np.abs(steps).max() <= 127 + 1e-3
    assert np.abs(shared - weights).max() <= scale / 2 + 1e-6


def test_kmeans_sharing_keeps_zeros_and_uses_the_codebook_size() -> None:
    rng = np.random.default_rng(1)
    weights = rng.standard_normal(4000).astype(np.float32)
    weights[:3000] = 0
    shared = share_weights(weights, bits=4)
    assert np.array_equal(shared == 0, weights == 0)
    assert len(np.unique(shared[shared != 0])) == 16
    assert np.signbit(shared[shared == 0]).sum() == 0  # +0.0 only


@settings(max_examples=40, deadline=None)
@given(
    mask=st.lists(st.booleans(), min_size=0, max_size=400),
    density=st.floats(0.0, 1.0),
    index_bits=st.integers(2, 8),
)
def test_relative_indices_round_trip_with_fillers(
    mask: list[bool], density: float, index_bits: int
) -> None:
    keep = np.array(mask, dtype=bool) & (np.linspace(0, 1, len(mask)) <= density)
    positions = np.flatnonzero(keep)
    symbols, fillers = _gaps(positions, index_bits)
    top = (1 << index_bits) - 1
    assert symbols.max(initial=0) <= top
    assert int((symbols == top).sum()) == fillers
    assert np.array_equal(_positions(symbols, index_bits, len(mask)), positions)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 31), min_size=0, max_size=500))
def test_huffman_round_trips_and_never_beats_entropy(symbols: list[int]) -> None:
    data = np.array(symbols, dtype=np.int64)
    coded = huffman_encode(data, 32)
    assert np.array_equal(huffman_decode(coded, len(data)), data)
    if len(data):
        counts = np.bincount(data)
        p = counts[counts > 0] / len(data)
        entropy_bits = float(-(p * np.log2(p)).sum() * len(data))
        table = 2 + (int(data.max()) + 2) // 2
        assert (len(coded) - table) * 8 >= entropy_bits - 1e-6


def test_huffman_beats_fixed_width_on_skewed_symbols() -> None:
    rng = np.random.default_rng(2)
    symbols = np.minimum(rng.geometric(0.4, 20000) - 1, 31)
    assert len(huffman_encode(symbols, 32)) < 0.6 * len(pack_fixed(symbols, 5))
