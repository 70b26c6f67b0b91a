"""1-D convolutions rewritten as 2-D ones on one row: the same outputs, nothing else moved."""
from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from voxpipe.stages.families.piper.engines.conv_rows import convs_as_rows  # noqa: E402


def _graph() -> "onnx.ModelProto":
    """x [1, 8, T] -> a dilated conv with bias, a depthwise strided one, a 1x1 one sharing
    a weight with a second 1x1, and a 2-D conv on the same signal as a row (left alone)."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name) for name, shape in
             (("w_dil", (16, 8, 5)), ("b_dil", (16,)), ("w_dw", (16, 1, 3)), ("w_1x1", (8, 16, 1)),
              ("w_2d", (4, 8, 1, 3)))]
    inits.append(numpy_helper.from_array(np.array([2], dtype=np.int64), "axes"))
    nodes = [
        helper.make_node("Conv", ["x", "w_dil", "b_dil"], ["a"], name="dil", dilations=[3], pads=[6, 6]),
        helper.make_node("Relu", ["a"], ["a_act"]),
        helper.make_node("Conv", ["a_act", "w_dw"], ["b"], name="dw", group=16, strides=[2], pads=[1, 1]),
        helper.make_node("Conv", ["b", "w_1x1"], ["c"], name="pw"),
        helper.make_node("Add", ["c", "c"], ["c2"]),
        helper.make_node("Unsqueeze", ["x", "axes"], ["x_row"]),
        helper.make_node("Conv", ["x_row", "w_2d"], ["row_out"], name="two_d", pads=[0, 1, 0, 1]),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, "T"])],
                              [helper.make_tensor_value_info("c2", TensorProto.FLOAT, [1, 8, "T2"]),
                               helper.make_tensor_value_info("row_out", TensorProto.FLOAT, [1, 4, 1, "T"])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)])


def _run(model: "onnx.ModelProto", x: np.ndarray) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})


def test_rewritten_convs_give_the_same_outputs():
    model = _graph()
    rewritten = onnx.ModelProto()
    rewritten.CopyFrom(model)
    assert convs_as_rows(rewritten) == 3
    onnx.checker.check_model(rewritten)
    conv_ranks = {n.name: len(next(i for i in rewritten.graph.initializer if i.name == n.input[1]).dims)
                  for n in rewritten.graph.node if n.op_type == "Conv"}
    assert conv_ranks == {"dil": 4, "dw": 4, "pw": 4, "two_d": 4}
    assert not {"w_dil", "w_dw", "w_1x1"} & {i.name for i in rewritten.graph.initializer}  # 1-D weights gone
    for length in (1, 9, 64):
        x = np.random.default_rng(length).standard_normal((1, 8, length)).astype(np.float32)
        for got, want in zip(_run(rewritten, x), _run(model, x)):
            assert got.shape == want.shape
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


def test_a_graph_without_1d_convs_is_left_as_it_was():
    model = _graph()
    del model.graph.node[:4]
    model.graph.output.pop(0)
    before = model.SerializeToString()
    assert convs_as_rows(model) == 0
    assert model.SerializeToString() == before
