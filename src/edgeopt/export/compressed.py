"""A Deep Compression artifact: sparse, weight-shared, entropy-coded weights in one file.

After Han, Mao & Dally 2016, "Deep Compression", arXiv 1510.00149, on the deployment side (the
ONNX graph's initializers), so it works for any ONNX model, pruned by edgeopt or not:

1. **Weight sharing** (section 3): the nonzero weights of every Conv / Gemm / MatMul weight
   tensor are clustered by k-means into ``2^b`` shared values (one codebook per tensor, linear
   initialization between the smallest and largest weight, which the paper found best), or
   put on ``2^b - 1`` evenly spaced levels (``codebook="linear"``; 8 bits is symmetric
   per-tensor int8). ``b`` is ``bits_conv`` for convolutions and ``bits_fc`` for matrix
   products (the paper's 8 and 5). The k-means centroids are rounded to half precision
   (a relative change under 2^-11, far below the clustering error) so a codebook costs 2
   bytes a value; a linear codebook is stored as its step alone.
2. **Sparse storage with relative indices** (section 2): each nonzero weight is stored as the
   number of zeros before it (an ``index_bits`` symbol; by default each tensor gets the width
   from 2 to 8 bits that stores its index stream smallest, the paper's fixed 8 and 5 bits being
   two of the choices) and its codebook index. A run of zeros
   longer than the largest symbol is cut by filler entries: the largest symbol means "skip
   that many zeros, no weight here". (The paper's filler is a stored zero weight; ours takes no
   slot in the value stream, because zero is not a codebook entry.)
3. **Entropy coding** (section 4): each index and value stream is stored Huffman-coded,
   bit-packed at fixed width, or LZMA-compressed, whichever is smallest; the report gives the
   total of each so the choice can be checked. The graph (operators, attributes, the other
   initializers such as biases) is LZMA- or zlib-compressed.

``compress_onnx`` writes two files: the weight-shared fp32 ONNX (what the compressed model
computes: measure its accuracy) and the compressed file. ``decompress`` turns the compressed
file back into an ONNX file whose weights, and so outputs, are bit-identical to the shared one.

File layout (little-endian): ``EDCZ``, format version (u8), graph codec (u8), graph length
(u32), the compressed graph block (a JSON table of the compressed tensors, a newline, the ONNX
model with those tensors emptied), then per tensor its codebook (float16 or float32 values, or
the float32 step of a linear one), index stream and value stream, and a CRC-32 of everything
before it (u32).
"""

from __future__ import annotations

import json
import lzma
import math
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt._io import atomic_path
from edgeopt._io import refuse_overwrite
from edgeopt.errors import InputError
from edgeopt.export.entropy import DecodeError
from edgeopt.export.entropy import huffman_decode
from edgeopt.export.entropy import huffman_encode
from edgeopt.export.entropy import pack_fixed
from edgeopt.export.entropy import unpack_fixed
from edgeopt.export.onnx import save_onnx
from edgeopt.export.onnx import strip_debug_info
from edgeopt.measure.size import artifact_size
from edgeopt.models import read_onnx

__all__ = ["CompressionReport", "TensorCompression", "compress_onnx", "decompress"]

MAGIC = b"EDCZ"
FORMAT_VERSION = 1
CODEBOOKS = ("kmeans", "linear")
KMEANS_ITERATIONS = 200
#: Default bits of a relative index symbol: ``None`` picks, per tensor, the width from
#: ``INDEX_BITS_RANGE`` that stores its index stream smallest (the paper fixes 8 for
#: convolutions and 5 for fully connected layers; a 96%-sparse layer needs many 5-bit fillers).
INDEX_BITS: int | None = None
INDEX_BITS_RANGE = range(2, 9)
#: Stream codecs, as stored in the file.
PACKED, HUFFMAN, LZMA = 0, 1, 2
CODEC_NAMES = {PACKED: "packed", HUFFMAN: "huffman", LZMA: "lzma"}
GRAPH_ZLIB, GRAPH_LZMA = 0, 1
_LZMA_FILTERS = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME}]
_HEAD = struct.Struct("<4sBBI")
_WEIGHT_INPUTS = {"Conv": "conv", "ConvTranspose": "conv", "Gemm": "fc", "MatMul": "fc"}


@dataclass(frozen=True)
class TensorCompression:
    """How one weight tensor was stored; ``*_bytes`` include its codebook."""

    name: str
    kind: str  # conv | fc
    shape: tuple[int, ...]
    weights: int
    nonzero: int
    fillers: int
    codebook_size: int
    bits: int
    index_bits: int
    packed_bytes: int
    huffman_bytes: int
    lzma_bytes: int
    stored_bytes: int

    def to_dict(self) -> dict[str, Any]:
        return {**vars(self), "shape": list(self.shape)}


@dataclass(frozen=True)
class CompressionReport:
    """Sizes of the dense source, the weight-shared ONNX and the compressed file, in bytes.

    ``size_bytes`` is the runnable weight-shared ONNX (what ``decompress`` writes back);
    ``compressed_bytes`` the compressed file (storage, over-the-air update); ``ratio`` is
    ``dense_bytes / compressed_bytes`` with ``dense_bytes`` the source ONNX file. The
    ``*_bytes`` totals say what the weight streams take with each codec alone.
    """

    source_path: Path
    shared_path: Path
    compressed_path: Path
    dense_bytes: int
    size_bytes: int
    compressed_bytes: int
    graph_bytes: int
    tensors: tuple[TensorCompression, ...]

    @property
    def ratio(self) -> float:
        return self.dense_bytes / max(1, self.compressed_bytes)

    @property
    def packed_bytes(self) -> int:
        return sum(t.packed_bytes for t in self.tensors)

    @property
    def huffman_bytes(self) -> int:
        return sum(t.huffman_bytes for t in self.tensors)

    @property
    def lzma_bytes(self) -> int:
        return sum(t.lzma_bytes for t in self.tensors)

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": str(self.source_path),
            "shared_onnx": str(self.shared_path),
            "compressed": str(self.compressed_path),
            "dense_bytes": self.dense_bytes,
            "size_bytes": self.size_bytes,
            "compressed_bytes": self.compressed_bytes,
            "ratio": self.ratio,
            "graph_bytes": self.graph_bytes,
            "weight_stream_bytes": {
                "packed": self.packed_bytes,
                "huffman": self.huffman_bytes,
                "lzma": self.lzma_bytes,
            },
            "tensors": [t.to_dict() for t in self.tensors],
            "method": "measured: bytes on disk; weight streams: each codec computed in full",
        }


def kmeans_codebook(values: np.ndarray, clusters: int) -> np.ndarray:
    """Sorted float32 centroids of 1-D k-means with linear initialization (Lloyd's algorithm).

    With no more distinct values than clusters, the distinct values themselves (lossless).
    """
    ordered = np.sort(np.asarray(values, dtype=np.float64).reshape(-1))
    distinct = np.unique(ordered)
    if len(distinct) <= clusters:
        return distinct.astype(np.float32)
    centroids = np.linspace(ordered[0], ordered[-1], clusters)
    sums = np.concatenate([[0.0], np.cumsum(ordered)])
    for _ in range(KMEANS_ITERATIONS):
        # In 1-D every cluster is a run of the sorted values between two midpoints.
        edges = np.searchsorted(ordered, (centroids[1:] + centroids[:-1]) / 2, side="right")
        starts = np.concatenate([[0], edges])
        ends = np.concatenate([edges, [len(ordered)]])
        counts = ends - starts
        means = (sums[ends] - sums[starts]) / np.maximum(counts, 1)
        updated = np.where(counts > 0, means, centroids)
        if np.array_equal(updated, centroids):
            break
        centroids = updated
    return np.unique(centroids.astype(np.float32))


def _share(
    weights: np.ndarray, *, bits: int, codebook: str
) -> tuple[np.ndarray, np.float32 | None]:
    """Shared float32 weights (zeros +0.0), and the step of a linear codebook."""
    flat = np.asarray(weights, dtype=np.float32).reshape(-1)
    shared = np.zeros_like(flat)
    nonzero = np.flatnonzero(flat)
    step = None
    if len(nonzero) and codebook == "linear":
        levels = (1 << (bits - 1)) - 1
        step = np.float32(np.abs(flat[nonzero]).max() / levels)
        steps = np.clip(np.rint(flat[nonzero] / step), -levels, levels)
        shared[nonzero] = steps.astype(np.float32) * step
    elif len(nonzero):
        centroids = kmeans_codebook(flat[nonzero], 1 << bits)
        half = centroids.astype(np.float16).astype(np.float32)
        if np.all(np.isfinite(half)) and np.all(half != 0):
            centroids = np.unique(half)
        bounds = (centroids[1:].astype(np.float64) + centroids[:-1]) / 2
        shared[nonzero] = centroids[np.searchsorted(bounds, flat[nonzero].astype(np.float64))]
    shared[shared == 0] = 0.0  # a -0.0 would be a different bit pattern
    return shared.reshape(np.shape(weights)), step


def share_weights(weights: np.ndarray, *, bits: int, codebook: str = "kmeans") -> np.ndarray:
    """The tensor with every nonzero weight replaced by its shared value (float32, zeros +0.0).

    Example:
        >>> weights = np.array([0.0, 0.1, 0.12, -0.5], dtype=np.float32)
        >>> [round(float(v), 3) for v in share_weights(weights, bits=1)]
        [0.0, 0.11, 0.11, -0.5]
    """
    return _share(weights, bits=bits, codebook=codebook)[0]


def _codebook(values: np.ndarray, step: np.float32 | None, bits: int) -> tuple[Any, ...]:
    """How the nonzero ``values`` are stored: format, size, codebook bytes, symbols, width.

    ``f16`` / ``f32``: sorted distinct values, each symbol an index into them; ``lin``: the
    step of a linear codebook, each symbol its level plus ``levels`` (so it is not negative).
    """
    if step is not None:
        levels = (1 << (bits - 1)) - 1
        symbols = np.rint(values.astype(np.float64) / float(step)).astype(np.int64) + levels
        return "lin", levels, np.float32(step).astype("<f4").tobytes(), symbols, bits
    book = np.unique(values)
    symbols = np.searchsorted(book, values)
    half = book.astype(np.float16)
    exact = bool(np.array_equal(half.astype(np.float32), book))
    fmt, raw = (
        ("f16", half.astype("<f2").tobytes()) if exact else ("f32", book.astype("<f4").tobytes())
    )
    return fmt, len(book), raw, symbols, _value_width(len(book))


def _decode_values(fmt: str, size: int, raw: bytes, symbols: np.ndarray) -> np.ndarray:
    if fmt == "lin":
        step = np.frombuffer(raw, dtype="<f4", count=1)[0]
        if len(symbols) and symbols.max() > 2 * size:
            raise DecodeError("a level is outside the linear codebook")
        return (symbols - size).astype(np.float32) * np.float32(step)
    book = np.frombuffer(raw, dtype="<f2" if fmt == "f16" else "<f4", count=size)
    if len(symbols) and symbols.max() >= size:
        raise DecodeError("a value index is outside the codebook")
    return book.astype(np.float32)[symbols]


_BOOK_BYTES = {"f16": lambda size: 2 * size, "f32": lambda size: 4 * size, "lin": lambda _: 4}


def _weight_kinds(model: Any) -> dict[str, str]:
    """Float initializers used only as a Conv / Gemm / MatMul weight, with their kind."""
    initializers = {init.name: init for init in model.graph.initializer}
    kinds: dict[str, str] = {}
    refused: set[str] = set()
    for node in model.graph.node:
        for position, name in enumerate(node.input):
            if name not in initializers:
                continue
            kind = _WEIGHT_INPUTS.get(node.op_type) if position == 1 else None
            if kind is None or kinds.get(name, kind) != kind:
                refused.add(name)
            else:
                kinds[name] = kind
    return {
        name: kind
        for name, kind in kinds.items()
        if name not in refused and initializers[name].data_type == 1  # FLOAT
    }


def _gaps(positions: np.ndarray, index_bits: int) -> tuple[np.ndarray, int]:
    """Index symbols for sorted nonzero positions: zeros before each, filler-cut at the top.

    Each weight gets the number of zeros since the previous one; a run of ``top`` or more
    zeros first emits fillers (symbol ``top``: skip ``top`` zeros), then the rest.
    """
    top = (1 << index_bits) - 1
    runs = np.diff(np.concatenate([[-1], positions])) - 1
    fillers = runs // top
    symbols = np.full(int(fillers.sum()) + len(runs), top, dtype=np.int64)
    symbols[np.cumsum(fillers + 1) - 1] = runs - fillers * top  # each weight's own symbol
    return symbols, int(fillers.sum())


def _positions(symbols: np.ndarray, index_bits: int, size: int) -> np.ndarray:
    """Sorted nonzero positions from index symbols (the inverse of :func:`_gaps`)."""
    top = (1 << index_bits) - 1
    is_weight = symbols < top
    advance = np.where(is_weight, symbols + 1, top)
    ends = np.cumsum(advance) - 1  # a weight sits at the last position its symbol advances to
    positions = ends[is_weight]
    if len(positions) and (positions[-1] >= size or positions[0] < 0):
        raise DecodeError("the sparse indices run past the end of the tensor")
    return positions


def _stream(symbols: np.ndarray, alphabet: int, width: int) -> dict[int, bytes]:
    packed = pack_fixed(symbols, width)
    return {
        PACKED: packed,
        HUFFMAN: huffman_encode(symbols, alphabet),
        LZMA: lzma.compress(packed, format=lzma.FORMAT_RAW, filters=_LZMA_FILTERS),
    }


def _unstream(codec: int, data: bytes, count: int, width: int) -> np.ndarray:
    """``count`` symbols of ``width`` bits from a stream; an LZMA stream inflates no further
    than those symbols take."""
    if codec == HUFFMAN:
        return huffman_decode(data, count)
    if codec == LZMA:
        data = _inflate(data, LZMA, (count * width + 7) // 8, "a stream")
    elif codec != PACKED:
        raise DecodeError(f"unknown stream codec {codec}")
    return unpack_fixed(data, count, width)


def _value_width(codebook_size: int) -> int:
    return max(1, math.ceil(math.log2(max(2, codebook_size))))


def check_options(bits_conv: int, bits_fc: int, index_bits: int | None, codebook: str) -> None:
    """Refuse compression options out of range (InputError naming the option)."""
    for name, value in (("bits_conv", bits_conv), ("bits_fc", bits_fc)):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 8:
            raise InputError(f"compress: {name} must be a whole number from 1 to 8, got {value!r}.")
    is_whole = isinstance(index_bits, int) and not isinstance(index_bits, bool)
    if index_bits is not None and not (is_whole and 2 <= index_bits <= 8):
        raise InputError(f"compress: index_bits must be from 2 to 8, got {index_bits!r}.")
    if codebook not in CODEBOOKS:
        raise InputError(f"compress: codebook must be kmeans or linear, got {codebook!r}.")
    if codebook == "linear" and min(bits_conv, bits_fc) < 2:
        raise InputError("compress: a linear codebook needs at least 2 bits (a sign and a level).")


def _smallest(options: dict[int, bytes]) -> int:
    return min(options, key=lambda codec: len(options[codec]))


def _encode_tensor(
    array: np.ndarray, *, name: str, kind: str, bits: int, index_bits: int | None, codebook: str
) -> tuple[np.ndarray, list[Any], list[bytes], TensorCompression]:
    """Share one weight tensor and encode it: shared weights, table row, payload, report."""
    weights, step = _share(array, bits=bits, codebook=codebook)
    flat = weights.reshape(-1)
    positions = np.flatnonzero(flat)
    fmt, size, book, labels, width = _codebook(flat[positions], step, bits)
    if not np.array_equal(_decode_values(fmt, size, book, labels), flat[positions]):
        raise RuntimeError(f"{name}: the codebook does not reproduce the weights")  # a bug
    widths = INDEX_BITS_RANGE if index_bits is None else (index_bits,)
    best: tuple[int, int, np.ndarray, int, dict[int, bytes]] | None = None
    for candidate in widths:
        gaps, fillers = _gaps(positions, candidate)
        index = _stream(gaps, 1 << candidate, candidate)
        stored = len(index[_smallest(index)])
        if best is None or stored < best[0]:
            best = (stored, candidate, gaps, fillers, index)
    assert best is not None
    _, index_bits, gaps, fillers, index = best
    value = _stream(labels, 1 << width, width)
    index_codec, value_codec = _smallest(index), _smallest(value)
    row = [
        name,
        kind,
        fmt,
        size,
        len(gaps),
        len(labels),
        index_bits,
        width,
        [index_codec, len(index[index_codec])],
        [value_codec, len(value[value_codec])],
    ]
    report = TensorCompression(
        name=name,
        kind=kind,
        shape=tuple(int(d) for d in weights.shape),
        weights=int(flat.size),
        nonzero=int(len(positions)),
        fillers=fillers,
        codebook_size=int(len(np.unique(flat[positions]))),
        bits=bits,
        index_bits=index_bits,
        packed_bytes=len(book) + len(index[PACKED]) + len(value[PACKED]),
        huffman_bytes=len(book) + len(index[HUFFMAN]) + len(value[HUFFMAN]),
        lzma_bytes=len(book) + len(index[LZMA]) + len(value[LZMA]),
        stored_bytes=len(book) + len(index[index_codec]) + len(value[value_codec]),
    )
    return weights, row, [book, index[index_codec], value[value_codec]], report


def compress_onnx(
    onnx_path: str | Path,
    out_path: str | Path,
    *,
    bits_conv: int = 8,
    bits_fc: int = 5,
    index_bits: int | None = INDEX_BITS,
    codebook: str = "kmeans",
    shared_path: str | Path | None = None,
) -> CompressionReport:
    """Weight-share an ONNX model and write it as one compressed file; the source is not changed.

    Args:
        onnx_path: the fp32 ONNX model, pruned or not.
        out_path: the compressed file (``.edc`` by convention).
        bits_conv: codebook bits of convolution weights (``2^bits`` shared values).
        bits_fc: codebook bits of Gemm / MatMul weights.
        index_bits: bits of a relative index symbol (the longest zero run one entry skips);
            ``None`` picks the smallest width per tensor (the decoder reads it from the file).
        codebook: ``kmeans`` (Deep Compression) or ``linear`` (evenly spaced levels).
        shared_path: where the weight-shared ONNX goes; by default ``OUT.shared.onnx`` beside
            ``out_path``. Node debug metadata and inferred shapes (``value_info``) are dropped
            from it: they do not change what it computes.

    Returns:
        The sizes, per tensor and in total, and the paths written.

    Raises:
        InputError: a missing or invalid ONNX file, an option out of range, or an output path
            that is the source.

    Example:
        >>> import tempfile, pathlib
        >>> from edgeopt.export.onnx import export_onnx
        >>> from edgeopt.models import load_model
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> dense = export_onnx(load_model("zoo:lenet300?input=1x8x8"), folder / "m.onnx")
        >>> report = compress_onnx(dense, folder / "m.edc")
        >>> report.compressed_bytes < report.dense_bytes / 4
        True
    """
    import onnx
    from onnx import numpy_helper

    source = Path(onnx_path)
    out = Path(out_path)
    shared_out = Path(shared_path) if shared_path else out.with_name(out.stem + ".shared.onnx")
    check_options(bits_conv, bits_fc, index_bits, codebook)
    for target in (out, shared_out):
        if target.resolve() == source.resolve():
            raise InputError(f"{target}: the output would overwrite the source model.")
    if out.resolve() == shared_out.resolve():
        raise InputError(f"{out}: the compressed file and the shared ONNX need two paths.")
    model = read_onnx(source)
    shared = onnx.ModelProto()
    shared.CopyFrom(model)
    strip_debug_info(shared)
    del shared.graph.value_info[:]  # inferred shapes: ONNX Runtime infers them again
    kinds = _weight_kinds(shared)
    table: list[list[Any]] = []
    payload: list[bytes] = []
    reports: list[TensorCompression] = []
    for init in shared.graph.initializer:
        if init.name in kinds:
            weights, row, parts, report = _encode_tensor(
                numpy_helper.to_array(init),
                name=init.name,
                kind=kinds[init.name],
                bits=bits_conv if kinds[init.name] == "conv" else bits_fc,
                index_bits=index_bits,
                codebook=codebook,
            )
            init.CopyFrom(numpy_helper.from_array(weights, init.name))
            table.append(row)
            payload += parts
            reports.append(report)
    skeleton = onnx.ModelProto()
    skeleton.CopyFrom(shared)
    for init in skeleton.graph.initializer:
        if init.name in kinds:
            init.ClearField("raw_data")
    block = json.dumps(table, separators=(",", ":")).encode() + b"\n"
    block += skeleton.SerializeToString()
    graph = {
        GRAPH_ZLIB: zlib.compress(block, 9),
        GRAPH_LZMA: lzma.compress(block, format=lzma.FORMAT_RAW, filters=_LZMA_FILTERS),
    }
    graph_codec = _smallest(graph)
    body = _HEAD.pack(MAGIC, FORMAT_VERSION, graph_codec, len(graph[graph_codec]))
    body += graph[graph_codec] + b"".join(payload)
    save_onnx(shared, shared_out)
    with atomic_path(out) as tmp:
        tmp.write_bytes(body + struct.pack("<I", zlib.crc32(body)))
    return CompressionReport(
        source_path=source,
        shared_path=shared_out,
        compressed_path=out,
        dense_bytes=artifact_size(source),
        size_bytes=artifact_size(shared_out),
        compressed_bytes=out.stat().st_size,
        graph_bytes=len(graph[graph_codec]),
        tensors=tuple(reports),
    )


#: The largest model ``decompress`` writes (graph plus decoded weights) unless told otherwise:
#: a few times what the largest device profile holds, far above any model for a device.
MAX_DECODED_BYTES = 1 << 30
#: Field ranges of a table row: index symbols of 2 to 8 bits (16 allowed), value indices of at
#: most 16 bits, a codebook of at most 2^16 values.
_MAX_SYMBOL_BITS = 16


def _inflate(data: bytes, codec: int, limit: int, what: str) -> bytes:
    """Decompress ``data`` but never past ``limit`` bytes (a zip bomb is refused, not read)."""
    if codec in (GRAPH_LZMA, LZMA):
        inflater: Any = lzma.LZMADecompressor(format=lzma.FORMAT_RAW, filters=_LZMA_FILTERS)
        out = inflater.decompress(data, max_length=limit + 1)
    elif codec == GRAPH_ZLIB:
        inflater = zlib.decompressobj()
        out = inflater.decompress(data, limit + 1)
    else:
        raise DecodeError(f"unknown codec {codec} of {what}")
    if len(out) > limit:
        raise DecodeError(f"{what} inflates past {limit:,} bytes")
    return out


def _whole(value: Any, low: int, high: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise DecodeError(f"{what} is {value!r}, not a whole number from {low} to {high}")
    return value


def _read(path: Path, max_bytes: int = MAX_DECODED_BYTES) -> Any:  # noqa: C901  (every size field of an untrusted .edc checked before allocating, in file order)
    """The ONNX model a compressed file holds (DecodeError / ValueError when it is corrupt).

    Every size in the file is checked against the file and ``max_bytes`` before anything is
    allocated: the graph block inflates no further than the cap, each table row's counts
    against its stream lengths and its tensor, and the decoded weights against the cap.
    """
    import onnx

    blob = path.read_bytes()
    if len(blob) < _HEAD.size + 4 or blob[:4] != MAGIC:
        raise InputError(f"{path}: not an edgeopt compressed model (bad magic number).")
    _, version, graph_codec, graph_length = _HEAD.unpack_from(blob)
    if version > FORMAT_VERSION:
        raise InputError(
            f"{path}: compressed format version {version} is newer than this edgeopt reads "
            f"({FORMAT_VERSION})."
        )
    (stored_crc,) = struct.unpack_from("<I", blob, len(blob) - 4)
    if zlib.crc32(blob[:-4]) != stored_crc:
        raise InputError(f"{path}: the compressed model is corrupt (checksum mismatch).")
    begin = _HEAD.size
    end = len(blob) - 4
    if graph_length > end - begin:
        raise DecodeError("the graph block runs past the end of the file")
    block = _inflate(blob[begin : begin + graph_length], graph_codec, max_bytes, "the graph")
    header, _, proto = block.partition(b"\n")
    table = json.loads(header)
    if not isinstance(table, list):
        raise DecodeError("the tensor table is not a list")
    model = onnx.ModelProto()
    model.ParseFromString(proto)
    initializers = {init.name: init for init in model.graph.initializer}
    budget = max_bytes - len(block)
    offset = begin + graph_length
    seen: set[str] = set()
    for row in table:
        if not isinstance(row, list) or len(row) != 10:
            raise DecodeError("a tensor table row does not have its 10 fields")
        name, _kind, fmt, book_size, entries, count, index_bits, width, index, value = row
        if name not in initializers or name in seen:
            raise DecodeError(f"the table names tensor {name!r} that the graph does not hold")
        seen.add(name)
        if fmt not in _BOOK_BYTES:
            raise DecodeError(f"unknown codebook format {fmt!r}")
        init = initializers[name]
        dims = [_whole(d, 0, max_bytes, f"a dimension of {name}") for d in init.dims]
        size = math.prod(dims)
        budget -= 4 * size
        if budget < 0:
            raise DecodeError(f"the decoded model would pass {max_bytes:,} bytes at {name}")
        book_size = _whole(book_size, 0, 1 << _MAX_SYMBOL_BITS, f"the codebook size of {name}")
        index_bits = _whole(index_bits, 1, _MAX_SYMBOL_BITS, f"the index bits of {name}")
        width = _whole(width, 1, _MAX_SYMBOL_BITS, f"the value width of {name}")
        count = _whole(count, 0, size, f"the weight count of {name}")
        top = (1 << index_bits) - 1
        entries = _whole(entries, count, count + size // top + 1, f"the index count of {name}")
        book_length = _BOOK_BYTES[fmt](book_size)
        streams = []
        for what, stream in (("index", index), ("value", value)):
            if not isinstance(stream, list) or len(stream) != 2:
                raise DecodeError(f"the {what} stream of {name} is malformed")
            codec = _whole(stream[0], 0, 2, f"the {what} codec of {name}")
            streams.append((codec, _whole(stream[1], 0, end, f"the {what} length of {name}")))
        if offset + book_length + streams[0][1] + streams[1][1] > end:
            raise DecodeError(f"the streams of {name} run past the end of the file")
        book = blob[offset : offset + book_length]
        offset += book_length
        symbols = []
        wanted = ((entries, index_bits), (count, width))
        for (codec, length), (number, bits) in zip(streams, wanted, strict=True):
            data = blob[offset : offset + length]
            offset += length
            if codec == HUFFMAN and number > 8 * length:  # each symbol takes a bit at least
                raise DecodeError(f"{number} symbols of {name} cannot fit in {length} bytes")
            symbols.append(_unstream(codec, data, number, bits))
        positions = _positions(symbols[0], index_bits, size)
        if len(positions) != count:
            raise DecodeError(f"the streams of {name} do not agree")
        flat = np.zeros(size, dtype="<f4")
        flat[positions] = _decode_values(fmt, book_size, book, symbols[1])
        init.raw_data = flat.tobytes()
    if offset != end:
        raise DecodeError("the file is longer or shorter than its table says")
    return model


def decompress(
    path: str | Path, out_onnx_path: str | Path, *, max_bytes: int = MAX_DECODED_BYTES
) -> Path:
    """Decode a compressed file into a runnable ONNX model, bit-identical to the shared one.

    Args:
        path: a file written by :func:`compress_onnx` (untrusted: every size in it is checked
            before anything is allocated).
        out_onnx_path: where the ONNX model goes (written atomically).
        max_bytes: the largest model (graph and weights) decoded.

    Returns:
        The written path.

    Raises:
        InputError: a missing, truncated, corrupt or foreign file (the message names it).

    Example:
        >>> import tempfile, pathlib
        >>> from edgeopt.export.onnx import export_onnx
        >>> from edgeopt.models import load_model
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> dense = export_onnx(load_model("zoo:cnn-s"), folder / "m.onnx")
        >>> report = compress_onnx(dense, folder / "m.edc")
        >>> decompress(folder / "m.edc", folder / "back.onnx").read_bytes() == (
        ...     report.shared_path.read_bytes())
        True
    """
    import onnx

    source = Path(path)
    if not source.is_file():
        raise InputError(f"{source}: compressed model file does not exist.")
    refuse_overwrite([Path(out_onnx_path)], {"the compressed model": source})
    try:
        model = _read(source, max_bytes)
        onnx.checker.check_model(model, full_check=False)
    except InputError:
        raise
    except Exception as exc:  # struct, lzma, zlib, json, protobuf, numpy, DecodeError
        detail = " ".join(str(exc).split())[:160] or type(exc).__name__
        raise InputError(f"{source}: not a valid edgeopt compressed model ({detail}).") from None
    return save_onnx(model, Path(out_onnx_path))
