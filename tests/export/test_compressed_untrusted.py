""".edc files come from strangers: every size in one is checked before anything is allocated.

Each case rewrites a real file (and its checksum, as an attacker would) so that one field lies:
an 11 KB file made decompress allocate 4 GB, a 1 MB one inflated to 1 GiB, a count of 10^9 ran
for minutes. Each must be one sentence naming the file, at once, with nothing written.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import onnx
import pytest

from edgeopt.errors import InputError
from edgeopt.export.compressed import GRAPH_ZLIB
from edgeopt.export.compressed import MAGIC
from edgeopt.export.compressed import _inflate
from edgeopt.export.compressed import compress_onnx
from edgeopt.export.compressed import decompress
from edgeopt.export.onnx import export_onnx
from edgeopt.models import load_model

_HEAD = struct.Struct("<4sBBI")


@pytest.fixture(scope="module")
def edc(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("edc")
    dense = export_onnx(load_model("zoo:lenet300?input=1x8x8"), folder / "m.onnx")
    return compress_onnx(dense, folder / "m.edc").compressed_path


def _rewrite(
    source: Path,
    target: Path,
    *,
    table: Callable[[list], list] | None = None,
    model: Callable[[onnx.ModelProto], None] | None = None,
    block: bytes | None = None,
    tail: Callable[[bytes], bytes] | None = None,
) -> Path:
    """``source`` with its graph block, table, model or tensor streams changed, re-checksummed."""
    blob = source.read_bytes()
    _, version, codec, length = _HEAD.unpack_from(blob)
    inflated = _inflate(blob[_HEAD.size : _HEAD.size + length], codec, 1 << 30, "the graph")
    header, _, proto = inflated.partition(b"\n")
    rows = json.loads(header)
    parsed = onnx.ModelProto.FromString(proto)
    if table is not None:
        rows = table(rows)
    if model is not None:
        model(parsed)
    raw = (
        block
        if block is not None
        else json.dumps(rows).encode() + b"\n" + parsed.SerializeToString()
    )
    packed = zlib.compress(raw)
    rest = blob[_HEAD.size + length : -4]
    if tail is not None:
        rest = tail(rest)
    body = _HEAD.pack(MAGIC, version, GRAPH_ZLIB, len(packed)) + packed + rest
    target.write_bytes(body + struct.pack("<I", zlib.crc32(body)))
    return target


def _row(index: int, field: int, value: object) -> Callable[[list], list]:
    def change(rows: list) -> list:
        rows[index][field] = value
        return rows

    return change


def _huge_dims(model: onnx.ModelProto) -> None:
    weight = next(i for i in model.graph.initializer if len(i.dims) == 2)
    weight.dims[:] = [100_000, 100_000]  # 40 GB of float32


CASES = {
    "zip-bomb graph block": ({"block": b"[]\n" + bytes(64 << 20)}, "inflates past"),
    "count of 10^9": ({"table": _row(0, 5, 10**9)}, "not a whole number"),
    "index count of 10^9": ({"table": _row(0, 4, 10**9)}, "not a whole number"),
    "codebook of 2^40": ({"table": _row(0, 3, 1 << 40)}, "not a whole number"),
    "stream longer than the file": ({"table": _row(0, 8, [0, 10**12])}, "not a whole number"),
    "tensor of 40 GB": ({"model": _huge_dims}, "would pass"),
    "unknown tensor": ({"table": _row(0, 0, "nope")}, "does not hold"),
    "truncated streams": ({"tail": lambda rest: rest[: len(rest) // 2]}, "past the end|from 0 to"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_lying_size_is_refused_before_allocating(case: str, edc: Path, tmp_path: Path) -> None:
    change, message = CASES[case]
    bad = _rewrite(edc, tmp_path / "bad.edc", **change)  # type: ignore[arg-type]
    out = tmp_path / "out.onnx"
    with pytest.raises(
        InputError, match=f"bad.edc: not a valid edgeopt compressed model.*{message}"
    ):
        decompress(bad, out, max_bytes=16 << 20)
    assert not out.exists()


def test_the_rewriter_itself_keeps_a_valid_file(edc: Path, tmp_path: Path) -> None:
    same = _rewrite(edc, tmp_path / "same.edc")
    assert (
        decompress(same, tmp_path / "a.onnx").read_bytes()
        == decompress(edc, tmp_path / "b.onnx").read_bytes()
    )


def test_the_decoded_size_cap_is_the_callers(edc: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="would pass 1,000 bytes|inflates past 1,000 bytes"):
        decompress(edc, tmp_path / "out.onnx", max_bytes=1000)
