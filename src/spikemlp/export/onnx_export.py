"""ONNX export of spikemlp models, checked against PyTorch with onnxruntime.

Uses PyTorch's TorchScript-based exporter (``dynamo=False``): it needs nothing beyond ``onnx`` and traces
the group LIF's short loop over a group into plain Greater/Where/Mul/Add nodes. The batch axis is dynamic
unless fixed at export (the models leave the batch size out of their reshapes, so that the tracer does not
record it as a constant); the image size is fixed, because the LIF groups and MLP-SPE's token maps are laid
out for one grid size.
Spiking neurons (``spikemlp.neurons.LIF``/``IF``) are exported through their reference backend, plain
torch ops that ONNX can express, not spikemlp's kernels. A graph that ignores its input is refused.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from .._files import atomic_write

DEFAULT_OPSET = 17


def _input_size(model: nn.Module, img_size: int | tuple[int, int] | None) -> tuple[int, int, int]:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    chans, height, width = tuple(cfg.get("input_size", (3, 224, 224)))
    if img_size is not None:
        height, width = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
    return chans, height, width


@contextmanager
def reference_neurons(model: nn.Module) -> Iterator[None]:
    """Run every spiking neuron of ``model`` on its reference backend (plain torch ops that the tracer
    records), restoring each neuron's backend afterwards."""
    from ..neurons import IF, LIF

    neurons = [m for m in model.modules() if isinstance(m, (LIF, IF))]
    saved = [m.backend for m in neurons]
    try:
        for m in neurons:
            m.backend = "reference"
        yield
    finally:
        for m, backend in zip(neurons, saved):
            m.backend = backend


def _export(model: nn.Module, images: torch.Tensor, tmp: str, opset: int, dynamic: bool) -> None:
    """Trace ``model`` on ``images`` into the ONNX file ``tmp``; refuse a graph that ignores its input."""
    import onnx

    torch.onnx.export(
        model,
        (images,),
        tmp,
        dynamo=False,
        opset_version=opset,
        input_names=["images"],
        output_names=["logits"],
        dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}} if dynamic else None,
    )
    if "images" not in [i.name for i in onnx.load(tmp, load_external_data=False).graph.input]:
        raise ValueError(
            f"ONNX export of {type(model).__name__} produced a graph that ignores its input (an operation "
            "the tracer cannot see was recorded as a constant); nothing was written"
        )


def export_onnx(
    model: nn.Module,
    path: str | Path,
    img_size: int | tuple[int, int] | None = None,
    opset: int = DEFAULT_OPSET,
    check: bool = True,
    atol: float = 1e-4,
    seed: int = 0,
    batch_size: int | None = None,
) -> dict:
    """Export ``model`` (in eval mode) to ``path`` and, with ``check``, compare onnxruntime with PyTorch.

    ``batch_size=None`` gives a graph with a dynamic batch axis (traced on one image); an integer fixes
    the batch size, for models whose graph cannot vary it (a reshape that the tracer records with a
    constant batch size). The check runs on fresh random images, not the
    traced ones, two batches (of 2 and 3 when dynamic), so that a graph that baked in the traced
    image or batch size fails it; a file that fails the check is removed. The file is written
    atomically (a temporary file in the same folder, then renamed). Returns a summary: path, traced
    input shape, whether the batch is dynamic, opset and, when checked, ``max_abs_diff`` of the logits
    (a ``ValueError`` when above ``atol``).
    """
    path = Path(path)
    if path.parent and not path.parent.exists():
        raise FileNotFoundError(f"cannot write {path}: the folder {path.parent} does not exist")
    if batch_size is not None and not (isinstance(batch_size, int) and batch_size >= 1):
        raise ValueError(f"batch_size must be a positive integer or None (dynamic), got {batch_size!r}")
    chans, height, width = _input_size(model, img_size)
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")

    def random_images(n: int, offset: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed + offset)
        return torch.randn(n, chans, height, width, generator=g).to(device)

    images = random_images(batch_size or 1, 0)
    dynamic = batch_size is None
    # Two batches, neither of the traced size when dynamic: a graph that baked in a size fails one.
    check_batches = [random_images(n, 1 + i) for i, n in enumerate((2, 3) if dynamic else (batch_size,) * 2)]

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), warnings.catch_warnings(), reference_neurons(model):
            # The tracer warns about Python-level shape checks (constant for a fixed image size) and the
            # exporter about its own deprecation; neither concerns the exported graph.
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            atomic_write(path, lambda tmp: _export(model, images, tmp, opset, dynamic))
            expected = [model(b).float().cpu() for b in check_batches] if check else []
    finally:
        model.train(was_training)

    summary = {
        "path": str(path),
        "input_shape": [len(images), chans, height, width],
        "dynamic_batch": dynamic,
        "opset": opset,
    }
    if check:
        try:
            summary["max_abs_diff"] = _check(model, path, check_batches, expected, atol, dynamic)
        except BaseException:
            path.unlink(missing_ok=True)  # a file that failed its check is not left for use
            raise
    return summary


def _check(model, path: Path, batches: list, expected: list, atol: float, dynamic: bool) -> float:
    """The largest max-abs difference of onnxruntime from PyTorch over ``batches`` (a ValueError when a
    batch does not run or differs by more than ``atol``)."""
    diffs = []
    for images, want in zip(batches, expected):
        try:
            diffs.append(max_abs_diff_onnxruntime(path, images.cpu(), want))
        except ImportError:
            raise
        except Exception as err:  # onnxruntime's own error classes derive from Exception only
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            hint = (
                "; the graph fixed the batch size while tracing: export with a fixed batch "
                "(batch_size=N, spikemlp export onnx ... --batch-size N)"
                if dynamic
                else ""
            )
            raise ValueError(
                f"onnxruntime cannot run the ONNX export of {type(model).__name__} on a batch of "
                f"{len(images)} ({first[:300]}){hint}; the file was removed"
            ) from None
    if not max(diffs) <= atol:
        raise ValueError(
            f"ONNX export of {type(model).__name__} disagrees with PyTorch: max |difference| of the "
            f"logits {max(diffs):.3g} > {atol:g}; the file was removed"
        )
    return max(diffs)


def max_abs_diff_onnxruntime(path: str | Path, images: torch.Tensor, expected: torch.Tensor) -> float:
    """Run the ONNX file with onnxruntime (CPU) on ``images``; max |onnxruntime - expected|."""
    import onnxruntime as ort  # the `onnx` extra; the command line names it when missing

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"images": images.numpy()})
    return float((torch.from_numpy(logits) - expected).abs().max())


__all__ = ["export_onnx", "max_abs_diff_onnxruntime", "DEFAULT_OPSET"]
