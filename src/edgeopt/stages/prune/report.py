"""Prune and compare: the source, the pruned and the decoded compressed file, profiled alike.

What ``edgeopt prune`` shows and writes. :func:`prune_and_profile` runs
:func:`edgeopt.stages.prune.prune`, then writes ``OUT.onnx``, ``OUT.pt`` and ``OUT.json`` as
:func:`edgeopt.training.save_trained` writes them, plus, when asked, the Deep Compression file
``OUT.edc``. Every number is measured on ONNX files with the same data, threads and target: the
source model exported alike, ``OUT.onnx``, and the ONNX that ``OUT.edc`` decodes to. The files
are staged beside the output and renamed into place together, or not at all.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from dataclasses import replace
from pathlib import Path
from typing import Any

from edgeopt._io import scratch_dir
from edgeopt._io import write_json
from edgeopt.data import Dataset
from edgeopt.data import load_data
from edgeopt.errors import InputError
from edgeopt.export.compressed import INDEX_BITS
from edgeopt.export.compressed import CompressionReport
from edgeopt.export.compressed import check_options
from edgeopt.export.compressed import compress_onnx
from edgeopt.export.compressed import decompress
from edgeopt.export.onnx import export_onnx
from edgeopt.measure import profile_onnx
from edgeopt.metrics import Metrics
from edgeopt.models import ModelHandle
from edgeopt.models import load_model
from edgeopt.stages.prune import PruneConfig
from edgeopt.stages.prune import PruneResult
from edgeopt.stages.prune import prune
from edgeopt.target import Target
from edgeopt.training import save_trained

__all__ = ["PruneReport", "prune_and_profile"]


@dataclass(frozen=True)
class PruneReport:
    """A pruning, the files written, and the profiles of the source, pruned and decoded ONNX.

    ``source_compressed_bytes`` is the source compressed with the same options (weight sharing
    and entropy coding alone, without pruning); ``compression`` describes ``OUT.edc`` (its
    weight-shared ONNX is not kept: ``decompress`` writes it back, and ``decoded`` measured it).
    """

    result: PruneResult
    onnx_path: Path
    weights_path: Path
    record_path: Path
    compressed_path: Path | None
    source: Metrics
    pruned: Metrics
    decoded: Metrics | None
    compression: CompressionReport | None
    source_compressed_bytes: int | None

    @property
    def compressed_bytes(self) -> int | None:
        return self.compression.compressed_bytes if self.compression else None

    @property
    def compression_ratio(self) -> float | None:
        """``size_bytes`` of the source ONNX over ``compressed_bytes`` of ``OUT.edc``."""
        if self.compression is None:
            return None
        return self.source.size_bytes / max(1, self.compression.compressed_bytes)


def _compression_record(report: CompressionReport, name: str) -> dict[str, Any]:
    paths = ("source", "shared_onnx", "compressed")
    return {**{k: v for k, v in report.to_dict().items() if k not in paths}, "file": name}


def prune_and_profile(
    model: str | ModelHandle,
    config: PruneConfig | None = None,
    *,
    data: str | Dataset,
    output: str | Path,
    target: str | Target = "cortex-m4",
    is_compressed: bool = False,
    bits_conv: int = 8,
    bits_fc: int = 5,
    threads: int = 1,
) -> PruneReport:
    """Prune, write the pruned model's files, and measure them against the source model.

    Args:
        model: a PyTorch model spec or handle (see :func:`edgeopt.prune`).
        config: what to prune and how; defaults to ``PruneConfig()``.
        data: fine-tuning data; accuracy is measured on its test split, latency on one sample.
        output: ``OUT.onnx``; ``OUT.pt`` (the state dict: a channel-pruned one loads with
            ``--weights`` into the same spec), ``OUT.json`` and ``OUT.edc`` go beside it.
        target: the device profile of the energy and latency estimates.
        is_compressed: also write ``OUT.edc`` (:func:`edgeopt.compress_onnx`), measure the
            ONNX it decodes to, and compress the source alike for comparison.
        bits_conv: codebook bits of convolution weights in ``OUT.edc``.
        bits_fc: codebook bits of fully connected weights in ``OUT.edc``.
        threads: ONNX Runtime threads of the latency measurements.

    Returns:
        The pruning, the paths and the three profiles.

    Raises:
        InputError: an output that does not end in ``.onnx``, an unknown target, or what
            :func:`edgeopt.prune` refuses; nothing is written then.

    Example:
        >>> import tempfile, pathlib
        >>> config = PruneConfig(granularity="channel", ratio=0.5, scope="layer",
        ...                      finetune_epochs=0)
        >>> out = pathlib.Path(tempfile.mkdtemp()) / "pruned.onnx"
        >>> report = prune_and_profile("zoo:cnn-s", config, data="digits", output=out)
        >>> report.pruned.macs < report.source.macs / 2, report.weights_path.exists()
        (True, True)
    """
    dataset = load_data(data)
    out = Path(output)
    if out.suffix != ".onnx":
        raise InputError(f"{out}: the output of prune must end in .onnx.")
    device = Target.from_name(target) if isinstance(target, str) else target
    if is_compressed:  # refuse bad options before the fine-tuning, not after it
        check_options(bits_conv, bits_fc, INDEX_BITS, "kmeans")
    source = load_model(model, data=dataset)
    result = prune(source, config, data=dataset)
    targets = {
        "onnx": out,
        "weights": out.with_suffix(".pt"),
        "record": out.with_suffix(".json"),
    }
    if is_compressed:
        targets["compressed"] = out.with_suffix(".edc")
    out.parent.mkdir(parents=True, exist_ok=True)

    def measure(onnx_path: Path) -> Metrics:
        return profile_onnx(onnx_path, data=dataset, target=device, threads=threads)

    with scratch_dir(out.parent) as scratch:
        folder = Path(scratch)
        staged = {key: folder / value.name for key, value in targets.items()}
        metadata = {  # what save_trained writes into OUT.onnx, so the sizes compare alike
            "normalization": dataset.normalization.to_dict(),
            "classes": list(dataset.classes),
            "data": dataset.spec,
            "model_spec": source.spec,
        }
        source_onnx = export_onnx(source, folder / "source" / "source.onnx", metadata=metadata)
        save_trained(result, dataset, staged["onnx"])
        compression: CompressionReport | None = None
        decoded: Metrics | None = None
        source_compressed: int | None = None
        if is_compressed:
            compression = compress_onnx(
                staged["onnx"],
                staged["compressed"],
                bits_conv=bits_conv,
                bits_fc=bits_fc,
                shared_path=folder / "shared.onnx",
            )
            dense = compress_onnx(
                source_onnx, folder / "source" / "source.edc", bits_conv=bits_conv, bits_fc=bits_fc
            )
            source_compressed = dense.compressed_bytes
            decoded = measure(decompress(staged["compressed"], folder / "decoded.onnx"))
        before, after = measure(source_onnx), measure(staged["onnx"])
        record = json.loads(staged["record"].read_text())
        record["files"] = {key: value.name for key, value in targets.items()}
        record["source_model"] = source.spec
        record["measured"] = {
            "source": before.to_dict(),
            "pruned": after.to_dict(),
            "decoded": decoded.to_dict() if decoded else None,
            "method": "measured on ONNX files: the source exported alike, OUT.onnx, and the "
            "ONNX that OUT.edc decodes to",
        }
        if compression is not None:
            record["compression"] = _compression_record(compression, targets["compressed"].name)
            record["compression"]["source_compressed_bytes"] = source_compressed
            record["compression"]["ratio_vs_source_onnx"] = before.size_bytes / max(
                1, compression.compressed_bytes
            )
        write_json(staged["record"], record)
        for key, final in targets.items():
            os.replace(staged[key], final)
    if compression is not None:
        compression = replace(
            compression,
            source_path=targets["onnx"],
            shared_path=targets["compressed"],
            compressed_path=targets["compressed"],
        )
    return PruneReport(
        result=result,
        onnx_path=targets["onnx"],
        weights_path=targets["weights"],
        record_path=targets["record"],
        compressed_path=targets.get("compressed"),
        source=before,
        pruned=after,
        decoded=decoded,
        compression=compression,
        source_compressed_bytes=source_compressed,
    )
