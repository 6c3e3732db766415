"""Graph structure: whether an ONNX graph holds attention (MatMul -> Softmax -> MatMul), whatever its norms are."""

from collections import deque
from typing import Any

HOPS = 6  # nodes between a Softmax and its MatMuls: scale, mask Add, Where, Cast, Reshape, Transpose, Dropout


def _reaches(start: list[str], edges: dict[str, list[Any]], step: Any, hops: int) -> bool:
    """Whether a MatMul is within ``hops`` nodes of the tensors ``start``, walking ``edges`` (tensor -> nodes)
    and ``step`` (node -> the tensors to walk next)."""
    queue, seen = deque((name, 0) for name in start), set(start)
    while queue:
        tensor, depth = queue.popleft()
        for node in edges.get(tensor, []):
            if node.op_type in ("MatMul", "Gemm"):
                return True
            if depth + 1 < hops:
                for following in step(node):
                    if following not in seen:
                        seen.add(following)
                        queue.append((following, depth + 1))
    return False


def has_attention(graph: Any, hops: int = HOPS) -> bool:
    """Whether ``graph`` holds an attention block: a Softmax fed by a MatMul (scores = Q·Kᵀ, through scaling and
    masking) whose output reaches a MatMul (· V), each within ``hops`` nodes. Found by structure, so a Llama-style
    decoder whose RMSNorm is Pow/ReduceMean/Sqrt/Div/Mul counts as a BERT with LayerNormalization does, and a
    CNN with a softmax head does not.

    Args:
        graph: an ONNX GraphProto.
        hops: the most nodes between the Softmax and each MatMul.

    Returns:
        bool: True where such a block exists.
    """
    producers: dict[str, list[Any]] = {}
    readers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.output:
            producers.setdefault(name, []).append(node)
        for name in node.input:
            readers.setdefault(name, []).append(node)
    for node in graph.node:
        if node.op_type != "Softmax":
            continue
        upstream = _reaches(list(node.input[:1]), producers, lambda n: [i for i in n.input if i], hops)
        if upstream and _reaches(list(node.output), readers, lambda n: list(n.output), hops):
            return True
    return False
