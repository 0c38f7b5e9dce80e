"""C99 for microcontrollers: an int8 QDQ ONNX model as a library with a static arena.

``export_c`` writes the library; ``measure_c`` compiles it and reads the section sizes;
``check_c`` compiles it with a harness and compares it with ONNX Runtime; ``run_c`` returns
the host build's outputs.
"""

from __future__ import annotations

from edgeopt.export.c.check import CORTEX_M4_FLAGS
from edgeopt.export.c.check import STRICT_FLAGS
from edgeopt.export.c.check import CBuildError
from edgeopt.export.c.check import CBuildSize
from edgeopt.export.c.check import CParity
from edgeopt.export.c.check import check_c
from edgeopt.export.c.check import has_compiler
from edgeopt.export.c.check import measure_c
from edgeopt.export.c.check import require_exact
from edgeopt.export.c.check import run_c
from edgeopt.export.c.generate import CExport
from edgeopt.export.c.generate import export_c

__all__ = [
    "CORTEX_M4_FLAGS",
    "STRICT_FLAGS",
    "CBuildError",
    "CBuildSize",
    "CExport",
    "CParity",
    "check_c",
    "export_c",
    "has_compiler",
    "measure_c",
    "require_exact",
    "run_c",
]
