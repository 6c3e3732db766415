"""Graph helpers: topological_sort, compare_outputs, unsupported_op, has_attention."""

import numpy as np
import pytest
from onnx import TensorProto, helper

from stages.core.attention import has_attention
from stages.core.errors import PipelineError
from stages.core.float16 import topological_sort
from stages.core.floor import reference_and_floors
from stages.core.onnx_io import compare_outputs, ort_outputs, unsupported_op


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


def node(op, inputs, outputs):
    return helper.make_node(op, inputs, outputs)


def rms_norm(x, out):
    """RMSNorm as the dynamo exporter writes a Llama's: Pow, ReduceMean, Add, Sqrt, Reciprocal, Mul, Mul."""
    return [
        node("Pow", [x, "two"], [f"{out}_sq"]), node("ReduceMean", [f"{out}_sq"], [f"{out}_ms"]),
        node("Add", [f"{out}_ms", "eps"], [f"{out}_e"]), node("Sqrt", [f"{out}_e"], [f"{out}_r"]),
        node("Reciprocal", [f"{out}_r"], [f"{out}_i"]), node("Mul", [x, f"{out}_i"], [f"{out}_n"]),
        node("Mul", [f"{out}_n", "gain"], [out]),
    ]  # fmt: skip


def test_attention_is_found_by_structure_whatever_the_norm():
    """Q·Kᵀ, scaled and masked, Softmax, · V: attention, under an RMSNorm (no LayerNormalization anywhere); the same
    Softmax fed by a classifier's Gemm and read by nothing is a CNN head, not attention."""
    attention = [
        *rms_norm("x", "h"),
        node("MatMul", ["h", "wq"], ["q"]), node("MatMul", ["h", "wk"], ["k"]), node("MatMul", ["h", "wv"], ["v"]),
        node("Transpose", ["k"], ["kt"]), node("MatMul", ["q", "kt"], ["s"]), node("Div", ["s", "scale"], ["d"]),
        node("Add", ["d", "mask"], ["m"]), node("Softmax", ["m"], ["p"]), node("MatMul", ["p", "v"], ["a"]),
        node("Add", ["x", "a"], ["y"]),
    ]  # fmt: skip
    assert has_attention(graph(attention))
    head = [node("Conv", ["x", "w"], ["c"]), node("GlobalAveragePool", ["c"], ["g"]), node("Flatten", ["g"], ["f"]),
            node("Gemm", ["f", "fc"], ["l"]), node("Softmax", ["l"], ["y"])]  # fmt: skip
    assert not has_attention(graph(head))
    assert not has_attention(graph([n for n in attention if n.op_type != "Softmax"]))
    far = [node("MatMul", ["x", "w"], ["t0"]), *(node("Relu", [f"t{i}"], [f"t{i + 1}"]) for i in range(8)),
           node("Softmax", ["t8"], ["p"]), node("MatMul", ["p", "v"], ["y"])]  # fmt: skip
    assert not has_attention(graph(far)) and has_attention(graph(far), hops=10)


@pytest.mark.parametrize(("scale", "undetermined"), [(1.0, False), (1e9, True)])
def test_a_softmax_over_huge_logits_has_a_float32_floor_of_one(tmp_path, scale, undetermined):
    """Softmax(x · scale) as an output, beside a plain output: logits near 1e9 (float32 spacing 64) leave the
    probabilities undetermined in float32 (floor 1); logits near 1 leave them determined to ~1e-6; outputs that no
    Softmax writes have no floor."""
    from onnx import numpy_helper, save

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 10])
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["n", 10]) for n in ("p", "z")]
    nodes = [helper.make_node("Mul", ["x", "s"], ["z"]), helper.make_node("Softmax", ["z"], ["p"], axis=-1)]
    scaled = numpy_helper.from_array(np.array(scale, dtype=np.float32), "s")
    model = helper.make_model(
        helper.make_graph(nodes, "g", [x], outs, [scaled]), opset_imports=[helper.make_opsetid("", 13)], ir_version=8
    )
    save(model, tmp_path / "m.onnx")
    feeds = [{"x": np.random.default_rng(0).uniform(1, 2, (4, 10)).astype(np.float32)}]
    reference, floors = reference_and_floors(tmp_path / "m.onnx", feeds)  # one run: the reference stage's
    assert set(floors) == {"p"} and set(reference) == {"p", "z"}
    assert floors["p"] == 1.0 if undetermined else floors["p"] < 1e-5
    del model.graph.output[1]  # logits the graph does not output: read for the floor, not handed on
    save(model, tmp_path / "hidden.onnx")
    reference, same = reference_and_floors(tmp_path / "hidden.onnx", feeds)
    assert same == floors and set(reference) == {"p"}
    np.testing.assert_array_equal(reference["p"], ort_outputs(tmp_path / "hidden.onnx", feeds)["p"])
