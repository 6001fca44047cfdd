"""Exporting trained models to other runtimes (ONNX for onnxruntime and friends)."""

from .onnx_export import export_onnx as export_onnx

__all__ = ["export_onnx"]
