"""Graph helpers: topological_sort, compare_outputs, unsupported_op."""

import numpy as np
import pytest
from onnx import TensorProto, helper

from stages.core.errors import PipelineError
from stages.core.float16 import topological_sort
from stages.core.onnx_io import compare_outputs, unsupported_op


def graph(nodes):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    return helper.make_graph(nodes, "g", [x], [y])


def test_topological_sort_puts_producers_first_and_keeps_independent_order():
    g = graph(
        [
            helper.make_node("Relu", ["b"], ["y"], name="last"),
            helper.make_node("Neg", ["x"], ["a"], name="first"),
            helper.make_node("Abs", ["x"], ["c"], name="free"),
            helper.make_node("Add", ["a", "c"], ["b"], name="middle"),
        ]
    )
    topological_sort(g)
    assert [n.name for n in g.node] == ["first", "free", "middle", "last"]


def test_topological_sort_names_a_node_whose_input_nothing_produces():
    g = graph([helper.make_node("Relu", ["ghost"], ["y"], name="orphan")])
    with pytest.raises(PipelineError, match=r"graph 'g' has a cycle or an input nothing produces: 'orphan'"):
        topological_sort(g)


def test_compare_outputs_fails_an_element_only_beyond_both_tolerances_as_polygraphy_does():
    from polygraphy.comparator import CompareFunc, IterationResult

    want = {"y": np.array([1.0, 100.0], dtype=np.float32)}
    report = compare_outputs(want, {"y": np.array([1.05, 101.0], dtype=np.float32)}, atol=0.1, rtol=0.01)
    assert report["y"]["passed"] and report["y"]["max_abs"] == pytest.approx(1.0)
    assert report["y"]["max_rel"] == pytest.approx(0.05, rel=1e-5)
    assert not compare_outputs(want, {"y": np.array([1.0, np.nan])}, atol=1e9, rtol=1.0)["y"]["passed"]
    gate = CompareFunc.simple(atol=0.1, rtol=0.1, check_error_stat="elemwise")
    for got, passes in (([1.05, 109.0], True), ([1.15, 100.0], False), ([1.0, 112.5], False)):
        # 1.15: within atol + rtol*|want| (0.2) but beyond each of them, so it fails, as in the gate (Polygraphy
        # divides by the candidate's value, this rule by the reference's: the cases here are on the same side)
        candidate = {"y": np.array(got, dtype=np.float32)}
        assert compare_outputs(want, candidate, atol=0.1, rtol=0.1)["y"]["passed"] is passes
        polygraphy = gate(IterationResult(want, runner_name="a"), IterationResult(candidate, runner_name="b"))
        assert bool(polygraphy["y"]) is passes


def test_compare_outputs_refuses_a_missing_output_or_a_wrong_shape():
    want = {"y": np.zeros((2, 3))}
    with pytest.raises(PipelineError, match=r"output 'y' is missing; outputs are z"):
        compare_outputs(want, {"z": np.zeros((2, 3))}, 0.1, 0.1)
    with pytest.raises(PipelineError, match=r"output 'y' has shape \[3, 2\], expected \[2, 3\]"):
        compare_outputs(want, {"y": np.zeros((3, 2))}, 0.1, 0.1)


def test_unsupported_op_names_the_operator_and_its_node():
    model = helper.make_model(graph([helper.make_node("Gelu", ["x"], ["y"], name="act", domain="com.example")]))
    error = RuntimeError("Could not find an implementation for com.example:Gelu(1) node with name 'act'")
    line = str(unsupported_op(error, model, "onnxruntime", "model.onnx"))
    assert line.startswith("onnxruntime cannot run operator com.example:Gelu (node 'act') of model.onnx: ")
    plain = str(unsupported_op(RuntimeError("out of\nmemory"), model, "openvino", "m.onnx"))
    assert plain == "openvino cannot run m.onnx: out of memory"
