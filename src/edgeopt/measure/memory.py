"""Peak activation memory over the execution order (tensor liveness), as an arena planner sees it.

Each activation buffer lives from the step that writes it to the last step that reads it; the
graph's inputs live from the start and its outputs to the end. A step's footprint is every
buffer live during it (its inputs and outputs together: no in-place reuse), and the peak is the
largest footprint. View operators (Reshape, Flatten, Squeeze, ...) share their input's buffer. In
a QDQ graph the float tensors around QuantizeLinear / DequantizeLinear share the int8 buffer, since
an int8 runtime stores only that. Constants (weights) live in flash and are not counted. This is
the no-fragmentation lower bound of a static arena (the quantity TFLM's arena planner and
MCUNet's "peak SRAM" report), computed on the graph's own node order. Activations a runtime fuses
into the layer before them (Conv + Relu) run in place.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgeopt.graph import VIEW_OPS
from edgeopt.graph import Graph
from edgeopt.graph import is_fused_activation

ALIAS_OPS = VIEW_OPS | {"QuantizeLinear", "DequantizeLinear"}


@dataclass(frozen=True)
class MemoryPlan:
    """Peak bytes, and the live bytes at each step (node index order) for plots and tables."""

    peak_bytes: int
    step_bytes: tuple[int, ...]
    step_names: tuple[str, ...]


def plan_memory(graph: Graph) -> MemoryPlan:  # noqa: C901  (the first-fit arena planner: one loop over the schedule, its cases are the algorithm)
    """Liveness of every activation buffer of ``graph`` and the resulting peak."""
    parent: dict[str, str] = {}

    def find(name: str) -> str:
        while parent.get(name, name) != name:
            name = parent[name]
        return name

    nodes = graph.nodes
    live_nodes = [
        (index, node)
        for index, node in enumerate(nodes)
        if not all(o in graph.constants for o in node.output if o)
    ]
    for _, node in live_nodes:
        is_alias = node.op_type in ALIAS_OPS or is_fused_activation(graph, node)
        if is_alias and node.input and node.input[0] not in graph.constants:
            parent[find(node.output[0])] = find(node.input[0])

    size: dict[str, int] = {}
    elements: dict[str, int] = {}
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    end = len(nodes)
    activations = set(graph.inputs)
    for _, node in live_nodes:
        activations.update(o for o in node.output if o)
    for name in activations:
        info = graph.tensors.get(name)
        if info is None:
            continue
        root = find(name)
        elements[root] = max(elements.get(root, 0), info.elements)
        # the narrowest type in an aliased group is what the runtime stores (int8 in QDQ)
        size[root] = min(size.get(root, info.itemsize), info.itemsize)
    for name in graph.inputs:
        first[find(name)] = -1
    for index, node in live_nodes:
        for name in node.output:
            if name in activations:
                root = find(name)
                first[root] = min(first.get(root, index), index)
                last[root] = max(last.get(root, index), index)
        for name in node.input:
            if name in activations:
                root = find(name)
                last[root] = max(last.get(root, index), index)
    for name in graph.outputs:
        last[find(name)] = end
    buffers = {root: elements[root] * size[root] for root in elements}

    step_bytes = []
    step_names = []
    for index, node in live_nodes:
        live = sum(
            nbytes
            for root, nbytes in buffers.items()
            if first.get(root, index) <= index <= last.get(root, index)
        )
        step_bytes.append(live)
        step_names.append(node.name or f"{node.op_type}_{index}")
    inputs_bytes = sum(buffers.get(find(name), 0) for name in graph.inputs)
    peak = max(step_bytes + [inputs_bytes])
    return MemoryPlan(peak_bytes=peak, step_bytes=tuple(step_bytes), step_names=tuple(step_names))
