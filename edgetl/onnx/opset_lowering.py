"""Rewrite an exported ONNX model for an older opset, for runtimes whose parser stops below 18 (TensorRT 8.x).

torch's exporter writes opset 18 and up; TensorRT 8.2's ONNX parser reads up to opset 13 and
8.4-8.6's up to 17. `onnx.version_converter` has no downward adapters for most ops (Add 14 -> 13
fails), and onnxscript's converter starts at 18, so this module lowers the ops edgetl's classifier
graphs contain, one rule per op whose schema changed in between, and refuses any other change by
name. The result is checked by `onnx.checker` and, in the export stage, against PyTorch on real
images like every exported model.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import onnx
from onnx import helper, numpy_helper

from edgetl.errors import ModelFileError

# ONNX IR version each opset was released with (onnx/docs/Versioning.md): a parser built against
# that ONNX release may reject a newer IR version, so the lowered model declares this one.
IR_VERSION_FOR_OPSET = {13: 7, 14: 7, 15: 8, 16: 8, 17: 8, 18: 8}

# Changes in these ops between opsets 13 and 18 only add input types (bfloat16, integers); float models are unaffected.
_TYPES_ONLY = frozenset({"Add", "Sub", "Mul", "Div", "Relu", "Identity", "Sigmoid", "Clip", "Cast", "Gemm", "Flatten"})
# Opset 18 moved `axes` from an attribute to an input for every reduction.
_REDUCTIONS = frozenset(
    {"ReduceMean", "ReduceMax", "ReduceMin", "ReduceSum", "ReduceProd", "ReduceL1", "ReduceL2", "ReduceLogSumExp"}
)

Rule = Callable[[onnx.NodeProto, dict[str, onnx.TensorProto], int], list[onnx.NodeProto]]


def lower_opset(model: onnx.ModelProto, target: int, what: str) -> onnx.ModelProto:
    """`model` in opset `target` (a copy; unchanged when not newer). ModelFileError names an op it cannot lower."""
    source = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if source <= target:
        return model
    if source > 18 or target not in IR_VERSION_FOR_OPSET:
        raise ModelFileError(
            f"{what}: cannot lower opset {source} to {target}: edgetl lowers opset 18 (export.opset: 18) to 13-17"
        )
    lowered = copy.deepcopy(model)
    graph = lowered.graph
    constants = {t.name: t for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            constants[node.output[0]] = node.attribute[0].t
    nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        if node.domain not in ("", "ai.onnx"):
            nodes.append(node)
            continue
        nodes.extend(_lower_node(node, constants, source, target, what))
    used = {name for node in nodes for name in node.input} | {o.name for o in graph.output}
    nodes = [n for n in nodes if n.op_type != "Constant" or any(out in used for out in n.output)]
    del graph.node[:]
    graph.node.extend(nodes)
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    for entry in lowered.opset_import:
        if entry.domain in ("", "ai.onnx"):
            entry.version = target
    lowered.ir_version = min(lowered.ir_version, IR_VERSION_FOR_OPSET[target])
    return lowered


def _since(op: str, opset: int) -> int | None:
    try:
        return int(onnx.defs.get_schema(op, opset).since_version)
    except onnx.defs.SchemaError:
        return None


def _lower_node(
    node: onnx.NodeProto, constants: dict[str, onnx.TensorProto], source: int, target: int, what: str
) -> list[onnx.NodeProto]:
    now, then = _since(node.op_type, source), _since(node.op_type, target)
    if now == then:
        return [node]
    rule = _RULES.get(node.op_type)
    if rule is None and node.op_type in _TYPES_ONLY:
        return [node]
    if rule is None and node.op_type in _REDUCTIONS:
        rule = _reduction_axes_to_attribute
    if rule is None:
        raise ModelFileError(
            f"{what}: op {node.op_type} ({node.name or 'unnamed'}) changed between opset {target} and {source}; "
            f"edgetl cannot lower it to opset {target}"
        )
    try:
        return rule(node, constants, target)
    except ValueError as error:
        raise ModelFileError(f"{what}: cannot lower {node.op_type} ({node.name or 'unnamed'}): {error}") from None


def _attribute(node: onnx.NodeProto, name: str, default: int) -> int:
    return next((int(helper.get_attribute_value(a)) for a in node.attribute if a.name == name), default)


def _reduction_axes_to_attribute(
    node: onnx.NodeProto, constants: dict[str, onnx.TensorProto], target: int
) -> list[onnx.NodeProto]:
    """Opset 18 reads `axes` from an input; 13-17 from an attribute (ReduceSum already took an input at 13)."""
    if node.op_type == "ReduceSum" or len(node.input) < 2 or not node.input[1]:
        if len(node.input) < 2 and _attribute(node, "noop_with_empty_axes", 0):
            raise ValueError("noop_with_empty_axes=1 has no equivalent before opset 18")
        return [node]
    if node.input[1] not in constants:
        raise ValueError("its axes are computed at run time; lowering needs constant axes")
    axes = [int(a) for a in numpy_helper.to_array(constants[node.input[1]]).reshape(-1)]
    attributes = [a for a in node.attribute if a.name != "noop_with_empty_axes"]
    lowered = helper.make_node(node.op_type, [node.input[0]], list(node.output), name=node.name, axes=axes)
    lowered.attribute.extend(attributes)
    return [lowered]


def _without_attribute(node: onnx.NodeProto, name: str) -> onnx.NodeProto:
    """A copy of `node` without attribute `name` (one a later opset added, at its older behaviour)."""
    lowered = copy.deepcopy(node)
    kept = [a for a in lowered.attribute if a.name != name]
    del lowered.attribute[:]
    lowered.attribute.extend(kept)
    return lowered


def _reshape(node: onnx.NodeProto, constants: dict[str, onnx.TensorProto], target: int) -> list[onnx.NodeProto]:
    """Reshape 14 added `allowzero`; opset 13 behaves as allowzero=0, which differs only for a 0 in the shape."""
    if _attribute(node, "allowzero", 0):
        shape = constants.get(node.input[1])
        if shape is None or 0 in numpy_helper.to_array(shape).reshape(-1).tolist():
            raise ValueError("allowzero=1 with a shape that is not constant or holds a 0 has no opset-13 equivalent")
    return [_without_attribute(node, "allowzero")]


def _hard_swish(node: onnx.NodeProto, constants: dict[str, onnx.TensorProto], target: int) -> list[onnx.NodeProto]:
    """HardSwish (opset 14) is x * HardSigmoid(x) with alpha 1/6, beta 0.5 (its definition in the spec)."""
    gate = f"{node.output[0]}__hardsigmoid"
    return [
        helper.make_node("HardSigmoid", [node.input[0]], [gate], name=f"{node.name}_gate", alpha=1 / 6, beta=0.5),
        helper.make_node("Mul", [node.input[0], gate], list(node.output), name=node.name),
    ]


def _batch_norm(node: onnx.NodeProto, constants: dict[str, onnx.TensorProto], target: int) -> list[onnx.NodeProto]:
    """BatchNormalization 14 added `training_mode` (15: types); an inference graph has it off."""
    if _attribute(node, "training_mode", 0):
        raise ValueError("training_mode=1 is not an inference graph")
    return [_without_attribute(node, "training_mode")]


def _shape(node: onnx.NodeProto, constants: dict[str, onnx.TensorProto], target: int) -> list[onnx.NodeProto]:
    """Shape 15 added `start`/`end`; without them it is the opset-13 op."""
    if any(a.name in ("start", "end") for a in node.attribute):
        raise ValueError("start/end slicing has no equivalent before opset 15")
    return [node]


def _pad(node: onnx.NodeProto, constants: dict[str, onnx.TensorProto], target: int) -> list[onnx.NodeProto]:
    """Pad 18 added an `axes` input; without it (every pad listed) it is the opset-13 op."""
    if len(node.input) > 3 and node.input[3]:
        raise ValueError("its axes input has no equivalent before opset 18")
    return [node]


_RULES: dict[str, Rule] = {
    "Reshape": _reshape,
    "HardSwish": _hard_swish,
    "Shape": _shape,
    "Pad": _pad,
    "BatchNormalization": _batch_norm,
}
