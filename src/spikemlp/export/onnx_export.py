"""ONNX export of spikemlp models, checked against PyTorch with onnxruntime.

Uses PyTorch's TorchScript-based exporter (``dynamo=False``): it needs nothing beyond ``onnx`` and it
traces the group LIF's short loop over the positions of a group into plain Greater/Where/Mul/Add
nodes (``spikemlp.neurons.group_lif`` switches to an out-of-place forward while exporting). The graph
has a dynamic batch axis; the image size is fixed at export time, because the LIF groups are laid out
for one grid size.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn

DEFAULT_OPSET = 17


def _input_size(model: nn.Module, img_size: int | tuple[int, int] | None) -> tuple[int, int, int]:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    chans, height, width = tuple(cfg.get("input_size", (3, 224, 224)))
    if img_size is not None:
        height, width = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
    return chans, height, width


def export_onnx(
    model: nn.Module,
    path: str | Path,
    img_size: int | tuple[int, int] | None = None,
    opset: int = DEFAULT_OPSET,
    check: bool = True,
    atol: float = 1e-4,
    seed: int = 0,
) -> dict:
    """Export ``model`` (in eval mode) to ``path`` and, with ``check``, compare onnxruntime with PyTorch.

    The file is written atomically (a temporary file in the same folder, then renamed). Returns a
    summary: path, input shape, opset and, when checked, ``max_abs_diff`` between the logits of
    onnxruntime and PyTorch on a random batch of one image (a ``ValueError`` when above ``atol``).
    """
    path = Path(path)
    if path.parent and not path.parent.exists():
        raise FileNotFoundError(f"cannot write {path}: the folder {path.parent} does not exist")
    chans, height, width = _input_size(model, img_size)
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    images = torch.randn(1, chans, height, width, generator=torch.Generator().manual_seed(seed)).to(device)

    was_training = model.training
    model.eval()
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent or ".")
    os.close(fd)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # The tracer warns about Python-level shape checks (constant for a fixed image size) and the
            # exporter about its own deprecation; neither concerns the exported graph.
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(
                model,
                (images,),
                tmp,
                dynamo=False,
                opset_version=opset,
                input_names=["images"],
                output_names=["logits"],
                dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
            )
            expected = model(images).float().cpu() if check else None
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes the file private; give it the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    finally:
        model.train(was_training)

    summary = {"path": str(path), "input_shape": [1, chans, height, width], "opset": opset}
    if check:
        diff = max_abs_diff_onnxruntime(path, images.cpu(), expected)
        summary["max_abs_diff"] = diff
        if not diff <= atol:
            raise ValueError(
                f"ONNX export of {type(model).__name__} disagrees with PyTorch: max |difference| of the "
                f"logits {diff:.3g} > {atol:g} (file kept at {path} for inspection)"
            )
    return summary


def max_abs_diff_onnxruntime(path: str | Path, images: torch.Tensor, expected: torch.Tensor) -> float:
    """Run the ONNX file with onnxruntime (CPU) on ``images``; max |onnxruntime - expected|."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise ImportError(
            "checking the export needs onnxruntime: pip install onnxruntime (or skip the check)"
        ) from None
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"images": images.numpy()})
    return float((torch.from_numpy(logits) - expected).abs().max())


__all__ = ["export_onnx", "max_abs_diff_onnxruntime", "DEFAULT_OPSET"]
