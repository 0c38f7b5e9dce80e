"""Fuzzing edgeopt's untrusted inputs: real seed files, mutations, and one run per example.

Every kind of file a user downloads from a stranger (an ONNX model, int8 or float, PyTorch
weights, a saved ``torch.export`` program, a compressed ``.edc``, an ``.npz``, an IDX folder, a WAV
folder, a PNG folder, a target profile, a recipe) has a real seed made here, and a way to feed it
to edgeopt: the loader a command calls, or the command itself. An example is a seed mutated (bit
flips, truncation, spliced bytes) or random bytes; its outcome must be what the CLI promises:
accepted (exit 0) or refused in one sentence (an ``InputError``, exit 2). Anything else, another
exception (exit 1 in the CLI), a signal, or a time limit, is a finding.

Used by ``tests/test_fuzz.py`` (a bounded run in ``make test``) and ``benchmarks/fuzz.py`` (the
long run, in worker processes with a memory limit).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeopt.errors import EdgeoptError
from edgeopt.errors import InputError

#: the tflite extra is installed (``make test`` installs it): ``.tflite`` files are fuzzed too
HAS_TFLITE = importlib.util.find_spec("ai_edge_litert") is not None


@dataclass(frozen=True)
class Kind:
    """One kind of untrusted input: where its seed lies, the name a mutated copy takes (inside
    a folder for the folder kinds), and what runs it."""

    name: str
    seed: Path  # a file, or a folder whose first file (sorted) is the one mutated
    run: Callable[[Path, Path], None]  # (the mutated input, a scratch folder) -> None


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.images.astype(np.uint8), bunch.target.astype(np.int64)


def _write_idx(path: Path, array: np.ndarray) -> None:
    import gzip

    magic = (0x0800 + array.ndim).to_bytes(4, "big")
    header = magic + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def make_seeds(folder: Path) -> dict[str, Path]:
    """Real, valid files of every kind, small enough to fuzz quickly."""
    import wave

    import torch
    import yaml
    from PIL import Image

    from edgeopt.export.compressed import compress_onnx
    from edgeopt.export.onnx import export_onnx
    from edgeopt.models import load_model
    from edgeopt.stages.quantize import PTQConfig
    from edgeopt.stages.quantize import quantize
    from edgeopt.target import Target

    folder.mkdir(parents=True, exist_ok=True)
    images, labels = _digits_arrays()
    seeds: dict[str, Path] = {}
    handle = load_model("zoo:lenet300?input=1x8x8&width=0.25")
    seeds["onnx"] = export_onnx(handle, folder / "float.onnx")
    np.savez(folder / "digits.npz", x=images[:200, None], y=labels[:200])
    seeds["npz"] = folder / "digits.npz"
    seeds["onnx-int8"] = quantize(
        str(seeds["onnx"]), PTQConfig(), data=f"npz:{seeds['npz']}", output=folder / "int8.onnx"
    ).model.onnx_path
    assert handle.module is not None
    torch.save(handle.module.state_dict(), folder / "weights.pt")
    seeds["pt"] = folder / "weights.pt"
    program = torch.export.export(handle.module, (torch.zeros(1, 1, 8, 8),))
    torch.export.save(program, str(folder / "program.pt2"))
    seeds["pt2"] = folder / "program.pt2"
    seeds["edc"] = compress_onnx(seeds["onnx"], folder / "model.edc").compressed_path
    idx = folder / "idx"
    idx.mkdir()
    for stem, array in (
        ("t10k-images-idx3-ubyte", images[:60]),
        ("t10k-labels-idx1-ubyte", labels[:60]),
        ("train-images-idx3-ubyte", images[60:260]),
        ("train-labels-idx1-ubyte", labels[60:260]),
    ):
        _write_idx(idx / f"{stem}.gz", array)
    seeds["idx"] = idx
    audio = folder / "audio"
    audio.mkdir()
    for label, hz in (("0", 500.0), ("1", 1500.0)):
        for take in range(6):
            signal = 0.5 * np.sin(2 * np.pi * hz * np.arange(4000) / 8000)
            with wave.open(str(audio / f"{label}_ann_{take}.wav"), "wb") as out:
                out.setnchannels(1)
                out.setsampwidth(2)
                out.setframerate(8000)
                out.writeframes((signal * 32767).astype("<i2").tobytes())
    seeds["wav"] = audio
    pictures = folder / "images"
    for index in range(40):
        label = str(labels[index])
        (pictures / label).mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[index] * 15).save(pictures / label / f"{index:03d}.png")
    seeds["png"] = pictures
    (folder / "target.yaml").write_text(
        yaml.safe_dump({**Target.from_name("cortex-m4").to_dict(), "name": "fuzz-board"})
    )
    seeds["yaml-target"] = folder / "target.yaml"
    from edgeopt.pipeline import Recipe
    from edgeopt.pipeline import Step

    recipe = Recipe(seed=0, steps=(Step(PTQConfig(calibration="minmax")),))
    seeds["yaml-recipe"] = recipe.to_yaml(folder / "recipe.yaml")
    if HAS_TFLITE:  # the tflite extra: an int8 .tflite of every operator the import tests
        from collections import defaultdict

        import tflite_build

        seeds["tflite"] = folder / "model.tflite"
        seeds["tflite"].write_bytes(tflite_build.kitchen(defaultdict(lambda: (-2.0, 2.0))))
    return seeds


def _cli(*args: str) -> None:
    """Run the ``edgeopt`` command in-process: exit 0 returns, exit 2 is an InputError, any other
    exit (1: the guard caught an exception) a finding."""
    from edgeopt.cli import main

    argv = sys.argv
    sys.argv = ["edgeopt", *args]
    try:
        main()
    except SystemExit as exc:
        code = int(exc.code or 0)
        if code == 2:
            raise InputError("exit 2") from None
        if code != 0:
            raise AssertionError(f"edgeopt {' '.join(args)} exited with {code}") from None
    finally:
        sys.argv = argv


def _first(folder: Path) -> Path:
    return sorted(p for p in folder.rglob("*") if p.is_file())[0]


def kinds(seeds: dict[str, Path]) -> dict[str, Kind]:
    """How each kind is fed to edgeopt: the command where it is quick, else the loader the
    commands call (whose InputError is the CLI's exit 2)."""
    from edgeopt.data import load_data
    from edgeopt.measure import profile
    from edgeopt.models import load_model
    from edgeopt.pipeline import Recipe
    from edgeopt.target import Target

    lenet = "zoo:lenet300?input=1x8x8&width=0.25"
    layers = profile(lenet, is_latency_measured=False).layers
    return {
        "onnx": Kind(
            "onnx", seeds["onnx"], lambda p, s: _cli("export", str(p), "-o", str(s / "c"))
        ),
        "onnx-int8": Kind(
            "onnx-int8", seeds["onnx-int8"], lambda p, s: _cli("export", str(p), "-o", str(s / "c"))
        ),
        "pt": Kind("pt", seeds["pt"], lambda p, s: load_model(lenet, weights=p)),
        "pt2": Kind("pt2", seeds["pt2"], lambda p, s: load_model(str(p))),
        "edc": Kind(
            "edc", seeds["edc"], lambda p, s: _cli("decompress", str(p), "-o", str(s / "m.onnx"))
        ),
        "npz": Kind("npz", seeds["npz"], lambda p, s: load_data(f"npz:{p}")),
        "idx": Kind("idx", seeds["idx"], lambda p, s: load_data(f"idx:{p.parent}")),
        "wav": Kind("wav", seeds["wav"], lambda p, s: load_data(f"audio:{p.parent}")),
        "png": Kind("png", seeds["png"], lambda p, s: load_data(f"images:{p.parent.parent}")),
        "yaml-target": Kind(
            "yaml-target",
            seeds["yaml-target"],
            lambda p, s: Target.from_name(str(p)).estimate(layers),
        ),
        "yaml-recipe": Kind("yaml-recipe", seeds["yaml-recipe"], lambda p, s: Recipe.from_yaml(p)),
        **(
            {
                "tflite": Kind(
                    "tflite",
                    seeds["tflite"],
                    lambda p, s: profile(str(p), is_latency_measured=False),
                )
            }
            if "tflite" in seeds
            else {}
        ),
    }


def _bytes(seed: bytes, choice: int, data: bytes, positions: list[int]) -> bytes:
    """A byte-level mutation: 1 bit flips, 2 truncation, 3 bytes spliced in, 4 a chunk
    repeated, 5 a 32-bit field set to a boundary value (0, 1, 2**31 - 1, ...: the sizes and
    counts of a header; anything else: random bytes instead)."""
    if choice not in (1, 2, 3, 4, 5) or not seed:
        return data
    blob = bytearray(seed)
    where = [p % len(blob) for p in positions] or [0]
    if choice == 5:
        for index, position in enumerate(where[:2]):
            value = BOUNDARIES[(data[index] if index < len(data) else index) % len(BOUNDARIES)]
            order = "big" if positions[index] % 2 else "little"
            field = value.to_bytes(4, order)
            blob[position : position + 4] = field[: len(blob) - position]
        return bytes(blob)
    if choice == 1:
        for index, position in enumerate(where):
            blob[position] ^= 1 << (index % 8) | (data[index % len(data)] if data else 0)
        return bytes(blob)
    if choice == 2:
        return bytes(blob[: where[0]])
    if choice == 3:
        return bytes(blob[: where[0]] + data + blob[where[0] :])
    start, stop = sorted((where[0], where[-1]))
    return bytes(blob[:stop] + blob[start:stop] * 3 + blob[stop:])


#: Values a header field is set to (mutation 5): empty, one, sign and width limits.
BOUNDARIES = (0, 1, 2, 0x7F, 0x80, 0xFF, 0xFFFF, 0x10000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF)


def _inside(seed: bytes, inner: int, data: bytes, positions: list[int]) -> bytes | None:
    """A mutation under the container, so that checksums still hold: a member of a zip (npz,
    .pt, .pt2), the payload of a gzip (IDX), the graph block or streams of an .edc. None when
    ``seed`` is none of these."""
    import gzip
    import io
    import json
    import struct
    import zipfile
    import zlib

    if seed[:4] == b"PK\x03\x04":
        source = zipfile.ZipFile(io.BytesIO(seed))
        members = source.infolist()
        chosen = members[positions[0] % len(members)].filename
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w") as target:
            for member in members:
                blob = source.read(member.filename)
                if member.filename == chosen:
                    blob = _bytes(blob, inner, data, positions[1:] or positions)
                target.writestr(member, blob)
        return out.getvalue()
    if seed[:2] == b"\x1f\x8b":
        return gzip.compress(_bytes(gzip.decompress(seed), inner, data, positions), mtime=0)
    if seed[:4] == b"EDCZ":
        from edgeopt.export.compressed import GRAPH_ZLIB
        from edgeopt.export.compressed import _inflate

        head = struct.Struct("<4sBBI")
        magic, version, codec, length = head.unpack_from(seed)
        block = _inflate(seed[head.size : head.size + length], codec, 1 << 28, "the graph")
        rest = seed[head.size + length : -4]
        if positions[0] % 2:
            header, _, proto = block.partition(b"\n")
            rows = json.loads(header)
            if rows and positions[-1] % 3 == 0:  # a number of the table
                row = rows[positions[1 % len(positions)] % len(rows)]
                field = 3 + positions[-1] % 6
                if isinstance(row[field], int):
                    row[field] = int.from_bytes(data[:8] or b"\x01", "little") - 2**20
                block = json.dumps(rows).encode() + b"\n" + proto
            else:
                block = _bytes(block, inner, data, positions)
        else:
            rest = _bytes(rest, inner, data, positions)
        packed = zlib.compress(block)
        body = head.pack(magic, version, GRAPH_ZLIB, len(packed)) + packed + rest
        return body + struct.pack("<I", zlib.crc32(body))
    return None


#: The mutations ``mutate`` knows: draw ``choice`` from ``range(MUTATIONS)``.
MUTATIONS = 11


def mutate(seed: bytes, choice: int, data: bytes, positions: list[int]) -> bytes:
    """One mutation of ``seed``: 0 random bytes instead, 1 bit flips, 2 truncation, 3 bytes
    spliced in, 4 a chunk repeated, 5 a header field set to a boundary value; 6-10 those
    (1-5) under the container (a zip member, a gzip payload, an .edc's graph block or
    streams, checksums kept valid)."""
    if choice >= 6:
        inner = choice - 5
        try:
            mutated = _inside(seed, inner, data, positions)
        except Exception:  # noqa: BLE001  (a seed this cannot open: mutate its bytes instead)
            mutated = None
        if mutated is not None:
            return mutated
        choice = inner
    return _bytes(seed, choice, data, positions)


def run_example(kind: Kind, blob: bytes, scratch: Path) -> str:
    """Feed ``blob`` as a copy of the seed (in a copy of its folder for the folder kinds):
    ``"ok"``, ``"refused"`` (one sentence), or raise what escaped."""
    work = Path(tempfile.mkdtemp(dir=scratch))
    try:
        if kind.seed.is_dir():
            copy = work / kind.seed.name
            shutil.copytree(kind.seed, copy)
            target = copy / _first(kind.seed).relative_to(kind.seed)
        else:
            target = work / kind.seed.name
        target.write_bytes(blob)
        with _stderr_text() as stderr:
            try:
                kind.run(target, work)
                outcome = "ok"
            except InputError as exc:
                message = str(exc)
                if "\n" in message.strip() or "Traceback" in message:
                    raise AssertionError(f"not one sentence: {message[:300]}") from None
                outcome = "refused"
            except EdgeoptError as exc:  # BudgetError and friends: a sentence and their code
                outcome = f"refused ({type(exc).__name__})"
        if "Traceback" in stderr[0]:  # a library that logs a traceback before we refuse
            raise AssertionError(f"a traceback on stderr: {stderr[0][-300:]}")
        return outcome
    finally:
        shutil.rmtree(work, ignore_errors=True)


@contextmanager
def _stderr_text() -> Iterator[list[str]]:
    """Everything written to file descriptor 2 inside the block (Python, logging handlers that
    hold the old stream, C libraries), in the list it yields, once the block ends."""
    sys.stderr.flush()
    saved = os.dup(2)
    text: list[str] = [""]
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield text
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            text[0] = sink.read().decode(errors="replace")


def seed_bytes(kind: Kind) -> bytes:
    return (_first(kind.seed) if kind.seed.is_dir() else kind.seed).read_bytes()


__all__ = ["MUTATIONS", "Kind", "kinds", "make_seeds", "mutate", "run_example", "seed_bytes"]
