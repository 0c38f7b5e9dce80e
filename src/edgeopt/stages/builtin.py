"""Import the built-in stages so that they register (``edgeopt.registry.list_stages``)."""

from __future__ import annotations

import edgeopt.stages.distill  # noqa: F401
import edgeopt.stages.prune  # noqa: F401
import edgeopt.stages.quantize  # noqa: F401
import edgeopt.stages.quantize.mixed  # noqa: F401
import edgeopt.stages.quantize.qat  # noqa: F401
import edgeopt.training  # noqa: F401
