"""The size of an artifact on disk: the ONNX file plus any external-data files it names."""

from __future__ import annotations

from pathlib import Path


def artifact_size(path: Path) -> int:
    """Bytes of ``path`` and of every distinct external-data file its tensors reference."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    total = path.stat().st_size
    seen: set[str] = set()
    for init in model.graph.initializer:
        for entry in init.external_data:
            if entry.key == "location" and entry.value not in seen:
                seen.add(entry.value)
                external = path.parent / entry.value
                if external.is_file():
                    total += external.stat().st_size
    return total
