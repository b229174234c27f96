"""The mask baseline as an ONNX graph, written node by node with ``onnx.helper``.

It takes the contract's input (:mod:`.mask`: ``chip``, float32 ``[N, 3, 150, 150]``,
RGB in 0..1) and gives the contract's output (``probabilities``, ``[N, 3]`` in the
order none, worn, below_nose). Inside: the chip normalised by its own mean and spread
(lighting), its lower part (rows 50..134, columns 25..124: nose, mouth, chin)
average-pooled 5×5 (colour, 1020 values) and the absolute Sobel gradients of its grey
pooled alike (edges, 608), standardised, then the MLP (1628 → 48 → 3) and a softmax. The numbers the training
measured go into the model's metadata (``framepipe.mask``, JSON).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

#: the contract's output order (docs/attributes.md).
LABELS = ("none", "worn", "below_nose")
#: what the graph does before its MLP (``mask_baseline.features`` does the same in numpy):
#: the chip's rows and columns from the nose bridge to the chin, cheek to cheek.
ROWS = (50, 135)
COLUMNS = (25, 125)
POOL = 5
#: Sobel x and y as a Conv weight [2, 1, 3, 3] (cross-correlation, as ONNX's Conv computes).
SOBEL = [[[[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]], [[[-1, -2, -1], [0, 0, 0], [1, 2, 1]]]]
OPSET = 17
INPUT, OUTPUT = "chip", "probabilities"
METADATA_KEY = "framepipe.mask"


def export(model: Any, path: Path, report: dict[str, Any]) -> None:
    """Write ``model`` (``mask_baseline.Mlp``) as ONNX with ``report`` in its metadata."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    def const(name: str, value: Any) -> onnx.TensorProto:
        return numpy_helper.from_array(np.asarray(value, np.float32), name)

    initializers = [
        const("eps", [1e-6]),
        const("feature_mean", model.mean),
        const("feature_std", model.std),
        const("w1", model.w1),
        const("b1", model.b1),
        const("w2", model.w2),
        const("b2", model.b2),
        numpy_helper.from_array(np.array([ROWS[0], COLUMNS[0]], np.int64), "slice_start"),
        numpy_helper.from_array(np.array([ROWS[1], COLUMNS[1]], np.int64), "slice_end"),
        numpy_helper.from_array(np.array([2, 3], np.int64), "slice_axes"),
        const("sobel", SOBEL),
    ]
    nodes = [
        helper.make_node("ReduceMean", [INPUT], ["mu"], axes=[1, 2, 3], keepdims=1),
        helper.make_node("Sub", [INPUT, "mu"], ["centred"]),
        helper.make_node("Mul", ["centred", "centred"], ["squared"]),
        helper.make_node("ReduceMean", ["squared"], ["variance"], axes=[1, 2, 3], keepdims=1),
        helper.make_node("Add", ["variance", "eps"], ["variance_eps"]),
        helper.make_node("Sqrt", ["variance_eps"], ["spread"]),
        helper.make_node("Div", ["centred", "spread"], ["normalised"]),
        helper.make_node("Slice", ["normalised", "slice_start", "slice_end", "slice_axes"], ["lower"]),
        helper.make_node(
            "AveragePool", ["lower"], ["pooled"], kernel_shape=[POOL, POOL], strides=[POOL, POOL]
        ),
        helper.make_node("Flatten", ["pooled"], ["flat_colour"], axis=1),
        # edges: |Sobel x|, |Sobel y| of the region's grey, pooled alike (a valid conv; the pool
        # drops the rows and columns that do not fill a window, as features() does)
        helper.make_node("ReduceMean", ["lower"], ["grey"], axes=[1], keepdims=1),
        helper.make_node("Conv", ["grey", "sobel"], ["gradients"], kernel_shape=[3, 3]),
        helper.make_node("Abs", ["gradients"], ["edges"]),
        helper.make_node(
            "AveragePool", ["edges"], ["pooled_edges"], kernel_shape=[POOL, POOL], strides=[POOL, POOL]
        ),
        helper.make_node("Flatten", ["pooled_edges"], ["flat_edges"], axis=1),
        helper.make_node("Concat", ["flat_colour", "flat_edges"], ["flat"], axis=1),
        helper.make_node("Sub", ["flat", "feature_mean"], ["shifted"]),
        helper.make_node("Div", ["shifted", "feature_std"], ["standard"]),
        helper.make_node("Gemm", ["standard", "w1", "b1"], ["hidden_pre"]),
        helper.make_node("Relu", ["hidden_pre"], ["hidden"]),
        helper.make_node("Gemm", ["hidden", "w2", "b2"], ["logits"]),
        helper.make_node("Softmax", ["logits"], [OUTPUT], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "mask_baseline",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["N", 3, 150, 150])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["N", 3])],
        initializers,
    )
    onnx_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    onnx_model.ir_version = 8
    onnx_model.producer_name = "framepipe mask_baseline"
    onnx_model.doc_string = (
        "BASELINE mask classifier trained on synthesised masks (docs/attributes.md); "
        f"held-out accuracy ({report.get('held_out', 'held-out people')}) "
        f"{json.dumps(report['held_out_accuracy'])}"
    )
    helper.set_model_props(
        onnx_model, {METADATA_KEY: json.dumps(report), "labels": ",".join(report["labels"])}
    )
    onnx.checker.check_model(onnx_model)
    tmp = path.with_name(f".{path.name}.tmp")
    onnx.save(onnx_model, str(tmp))
    tmp.replace(path)
