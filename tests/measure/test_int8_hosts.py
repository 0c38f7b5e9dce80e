"""A real x86 CPU without VNNI: QEMU's user-mode emulator running this Python as a Haswell
(AVX2, no AVX-512, no VNNI), so ONNX Runtime dispatches its AVX2 U8S8 kernels, whose 16-bit pair
sums saturate. On it, edgeopt must still measure the device's integers: the probe finds the
saturation, profile takes the rewritten path and gets the accuracy this host gets, and the
C library's parity check is exact (0 LSB) where the file as shipped is not.
"""

from __future__ import annotations

import json
import platform
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from edgeopt.measure import profile_onnx

#: Haswell without the features QEMU's TCG cannot give (it warns about each otherwise).
QEMU_HASWELL = ("qemu-x86_64", "-cpu", "Haswell,-pcid,-x2apic,-tsc-deadline,-hle,-invpcid,-rtm")

_SCRIPT = """
import json, sys
from pathlib import Path
import numpy as np
from edgeopt.data import load_data
from edgeopt.export.c import check_c, export_c
from edgeopt.measure import profile_onnx
from edgeopt.measure.int8 import host_int8

model, out = Path(sys.argv[1]), Path(sys.argv[2])
digits = load_data("digits")
metrics = profile_onnx(model, data=digits, is_latency_measured=False)
export = export_c(model, out)
x = digits.arrays("test")[0][:100]
exact, shipped = (check_c(export, x, path=p) for p in ("auto", "as-shipped"))
print(json.dumps({
    "is_saturating": host_int8().is_saturating,
    "accuracy": metrics.accuracy,
    "int8": metrics.int8.to_dict(),
    "exact_lsb": exact.max_tensor_lsb, "exact_top1": exact.top1_agreement,
    "exact_path": exact.arithmetic.path,
    "shipped_lsb": shipped.max_tensor_lsb,
}))
"""


@pytest.mark.skipif(
    platform.machine() != "x86_64", reason="QEMU emulates an x86 CPU here; this host is not x86"
)
@pytest.mark.skipif(
    shutil.which(QEMU_HASWELL[0]) is None or shutil.which("gcc") is None,
    reason="qemu-x86_64 (Debian: apt-get install qemu-user; .ci/run installs it) or gcc is "
    "not installed",
)
def test_an_avx2_only_host_measures_the_same_integers(cnn_s_int8: Any, tmp_path: Path) -> None:
    from edgeopt.data import load_data

    native = profile_onnx(cnn_s_int8.onnx_path, data=load_data("digits"), is_latency_measured=False)
    script = tmp_path / "emulated.py"
    script.write_text(_SCRIPT)
    done = subprocess.run(
        [
            *QEMU_HASWELL,
            sys.executable,
            str(script),
            str(cnn_s_int8.onnx_path),
            str(tmp_path / "c"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    emulated = json.loads(done.stdout.strip().splitlines()[-1])
    assert emulated["is_saturating"] is True  # the probe finds what VPMADDUBSW does
    assert emulated["int8"]["path"] == "rewritten" and emulated["int8"]["is_exact"]
    assert emulated["accuracy"] == native.accuracy
    assert emulated["exact_path"] == "rewritten"
    assert emulated["exact_lsb"] == 0 and emulated["exact_top1"] == 1.0
    assert emulated["shipped_lsb"] > 0  # the file as shipped is not the integers there
