"""Write an int8 file as uint8 weights (U8U8), which ONNX Runtime runs without saturating on x86.

edgeopt's int8 files keep uint8 activations and int8 weights (U8S8), the format ONNX Runtime
runs fastest and TFLite-style deployments expect. On x86 without AVX-512 VNNI, AVX-VNNI or AMX
ONNX Runtime's U8S8 kernels add pairs of products in saturating 16-bit sums, so a user who
deploys *to ONNX Runtime on such a CPU* gets outputs that differ from the integers (see
:mod:`edgeopt.measure.int8`). This writes the same model with every int8 (and 4-bit) integer
stored as uint8 and its zero point moved by 128: the same real numbers, bit for bit, which ONNX
Runtime runs with kernels that widen before they multiply and cannot saturate (ONNX Runtime,
"Quantize ONNX models": "try reduce_range or the U8U8 format which doesn't have saturation
issues"). Unlike ``reduce_range`` (7-bit weights) nothing is lost. The price is speed where
the U8S8 kernels were exact; ``edgeopt export --format onnx --weight-type uint8 --data SPEC``
measures both files side by side.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any

from edgeopt._io import refuse_overwrite
from edgeopt.errors import InputError

if TYPE_CHECKING:
    from edgeopt.data import Dataset
    from edgeopt.metrics import Metrics

__all__ = ["WEIGHT_TYPES", "Uint8Result", "write_uint8"]

#: ``--weight-type`` values: int8 is the file as quantize writes it.
WEIGHT_TYPES = ("int8", "uint8")


@dataclass(frozen=True)
class Uint8Result:
    """The written file, what changed, and both files measured on this host (with data)."""

    path: Path
    source: Path
    constants: int  # weight tensors (and constant operands) re-encoded
    activations: int  # int8 activations moved to uint8
    uint8_outputs: tuple[str, ...]  # graph outputs that were int8 and are now uint8 (+128)
    source_metrics: Metrics | None = None
    metrics: Metrics | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "source": str(self.source),
            "constants": self.constants,
            "activations": self.activations,
            "uint8_outputs": list(self.uint8_outputs),
            "source_metrics": self.source_metrics.to_dict() if self.source_metrics else None,
            "metrics": self.metrics.to_dict() if self.metrics else None,
        }


def write_uint8(
    model: str | Path,
    *,
    output: str | Path,
    data: str | Dataset | None = None,
    threads: int = 1,
) -> Uint8Result:
    """Write ``model`` with its int8 / int4 integers stored as uint8 (U8U8), same numbers.

    Args:
        model: an int8 QDQ ``.onnx`` file (not modified).
        output: the ``.onnx`` file to write, atomically.
        data: when given, both files are profiled on its test split (accuracy on the exact
            integer path, latency of each file as shipped on this host).
        threads: ONNX Runtime threads of the latency runs.

    Returns:
        The written file, how many tensors changed, and both files' metrics.

    Raises:
        InputError: a missing or invalid file, a model with no int8 / int4 tensor, an output
            that is not ``.onnx`` or is the input.

    Example:
        >>> import tempfile, pathlib
        >>> from edgeopt.stages.quantize import PTQConfig, quantize
        >>> work = pathlib.Path(tempfile.mkdtemp())
        >>> _ = quantize("zoo:cnn-s", PTQConfig(), data="digits", output=work / "int8.onnx")
        >>> done = write_uint8(work / "int8.onnx", output=work / "u8.onnx")
        >>> done.constants, done.activations
        (4, 0)
    """
    from edgeopt.export.onnx import save_onnx
    from edgeopt.measure.int8 import uint8_encoding
    from edgeopt.models import read_onnx

    source, out = Path(model), Path(output)
    if out.suffix != ".onnx":
        raise InputError(f"{out}: the output must end in .onnx.")
    refuse_overwrite([out], {"the input model": source})
    proto = read_onnx(source)
    reencoded = uint8_encoding(proto)
    if reencoded.weights == 0 and not reencoded.shifted:
        raise InputError(
            f"{source}: no int8 or 4-bit tensor to store as uint8 (a float file, or already "
            "U8U8); quantize it first (edgeopt quantize)."
        )
    before = dataset = None
    if data is not None:  # bad data is refused before anything is written
        from edgeopt.data import load_data
        from edgeopt.measure import profile_onnx
        from edgeopt.models import bind_data
        from edgeopt.models import load_model

        loaded = load_data(data) if isinstance(data, str) else data
        dataset = bind_data(load_model(str(source)), loaded)
        before = profile_onnx(source, data=dataset, threads=threads)
    written = reencoded.model
    props = {p.key: p.value for p in written.metadata_props}
    history = json.loads(props.get("edgeopt.history", "[]"))
    props["edgeopt.history"] = json.dumps([*history, "export.uint8 (U8U8, same numbers)"])
    props["edgeopt.weight_type"] = "uint8"
    del written.metadata_props[:]
    for key, value in props.items():
        entry = written.metadata_props.add()
        entry.key, entry.value = key, value
    save_onnx(written, out)
    outputs = {o.name for o in proto.graph.output}
    after = None
    if dataset is not None:
        from edgeopt.measure import profile_onnx

        after = profile_onnx(out, data=dataset, threads=threads)
    return Uint8Result(
        path=out,
        source=source,
        constants=reencoded.weights,
        activations=len(reencoded.shifted),
        uint8_outputs=tuple(sorted(reencoded.shifted & outputs)),
        source_metrics=before,
        metrics=after,
    )
