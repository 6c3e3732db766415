"""torch.onnx.export with a choice of exporter: dynamo, torchscript, or auto (dynamo, then TorchScript on failure)."""

import contextlib
import io
from pathlib import Path
from typing import Any

from stages.core.errors import PipelineError, summary
from stages.core.graph_files import EXTERNAL_ABOVE

EXPORTERS = {"auto": ("dynamo", "torchscript"), "dynamo": ("dynamo",), "torchscript": ("torchscript",)}


class ExportFailed(Exception):
    """Every exporter tried failed: ``tried`` holds each one's name and its root cause's line."""

    def __init__(self, tried: list[dict[str, str]]) -> None:
        super().__init__("; ".join(f"{t['exporter']}: {t['error']}" for t in tried))
        self.tried = tried


def export_onnx(
    net: Any,
    example: tuple[Any, ...],
    path: Path,
    exporter: str,
    dynamic: dict[str, Any],
    **options: Any,
) -> dict[str, Any]:
    """Export ``net`` to ``path`` with the exporters ``exporter`` names, in order, until one succeeds.

    Args:
        net: the torch module.
        example: its example inputs.
        path: the ONNX file to write (its weights may go to external data files beside it: keep it in a folder
            of its own).
        exporter: ``auto``, ``dynamo`` or ``torchscript`` (a key of ``EXPORTERS``).
        dynamic: ``{"dynamo": {"dynamic_shapes": ...}, "torchscript": {"dynamic_axes": ...}}``: each exporter's
            way of naming the dynamic axes.
        options: the rest of torch.onnx.export's keywords (input_names, output_names, opset_version, optimize).

    Returns:
        dict: ``exporter`` (the one that wrote the file) and ``failed`` (those tried before it, with why).

    Raises:
        PipelineError: ``exporter`` is not a known choice.
        ExportFailed: every exporter tried failed (its ``__cause__`` is the last one's exception).
        OSError: the output could not be written.
    """
    import torch

    if exporter not in EXPORTERS:
        raise PipelineError(f"export.exporter: {exporter!r} is not one of {', '.join(EXPORTERS)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    weights = sum(t.numel() * t.element_size() for t in [*net.parameters(), *net.buffers()])
    large = weights > EXTERNAL_ABOVE  # past protobuf's limit the weights go to a data file beside the graph
    tried: list[dict[str, str]] = []
    last: Exception | None = None
    for name in EXPORTERS[exporter]:
        keywords = options | dynamic[name]
        if name != "dynamo":
            keywords.pop("optimize", None)  # the TorchScript exporter has no optimizer pass
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                torch.onnx.export(net, example, str(path), dynamo=name == "dynamo", external_data=large, **keywords)
        except OSError:
            raise  # a full disk or permission error on the output: the caller names the path
        except Exception as e:  # the exporters raise many types; the root of the cause chain says why
            tried.append({"exporter": name, "error": summary(e)})
            last = e
            continue
        return {"exporter": name, "failed": tried}
    raise ExportFailed(tried) from last
