"""NNCF's post-training quantization of an ONNX file, run inside the peers' virtual environment.

    benchmarks/.venv-peers/bin/python benchmarks/_nncf_peer.py FP32.onnx CALIB.npy OUT.onnx

NNCF is not a dependency of edgeopt: ``benchmarks/quantization.py`` installs it into
``benchmarks/.venv-peers`` and calls this script in a subprocess, with the same calibration
samples our PTQ uses (one sample per NNCF data item, ``subset_size`` = all of them). Everything
else is NNCF's default (``nncf.quantize``: mixed preset, MinMax ranges with fast bias
correction). Prints NNCF's version on success.
"""

from __future__ import annotations

import sys


def main() -> None:
    import nncf
    import numpy as np
    import onnx

    source, calibration, target = sys.argv[1:4]
    model = onnx.load(source)
    x = np.load(calibration)
    name = model.graph.input[0].name
    dataset = nncf.Dataset([x[i : i + 1] for i in range(len(x))], lambda item: {name: item})
    quantized = nncf.quantize(model, dataset, subset_size=len(x))
    onnx.save(quantized, target)
    print(f"nncf {nncf.__version__}")


if __name__ == "__main__":
    main()
