"""Builds and loads spikemlp's C++ kernels: one source file each, compiled on first use, called via ctypes.

Each kernel depends only on the C++ standard library and the headers in ``spikemlp/ops/csrc``. It is
compiled with the system C++ compiler (``$CXX``, default ``c++``) into a shared library cached under the
torch extensions directory ($TORCH_EXTENSIONS_DIR, default ~/.cache/torch_extensions), named by a hash of
the sources, flags and compiler. Without a compiler, ``unavailable_reason()`` says so and the callers fall
back to PyTorch.

Why ctypes and not ``torch.utils.cpp_extension``: the operators are registered in Python
(``torch.library.custom_op``), so the C++ needs no torch headers and no pybind11; building against them
would compile several times longer on a fresh machine, tie the cache to the torch version and need ninja.

The flags keep the arithmetic IEEE: -O3 -ffp-contract=off (no multiply-add the source does not ask for),
no -ffast-math; -fno-trapping-math only lets the compiler vectorise selects (no program reads the
floating-point exception flags).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

import torch

from .._files import atomic_write

INCLUDE_DIR = Path(__file__).with_name("csrc")
_CFLAGS = ["-std=c++17", "-O3", "-ffp-contract=off", "-fno-fast-math", "-fno-trapping-math", "-fPIC"]
_LDFLAGS = ["-shared", "-pthread"]


def _cache_dir() -> Path:
    root = os.environ.get("TORCH_EXTENSIONS_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "torch_extensions"
    )
    return Path(root) / "spikemlp"


def cflags() -> list[str]:
    """The compiler flags, with the vector extensions the CPU has (PyTorch's own dispatch says which).

    AVX2 lets the loops vectorise (and the LIF write with streaming stores); AVX-512 doubles the lanes and
    gives mask registers. Values are the same with any of them: IEEE operations lane by lane.
    """
    capability = torch.backends.cpu.get_cpu_capability()
    flags = list(_CFLAGS) + [f"-I{INCLUDE_DIR}"]
    if capability in ("AVX2", "AVX512"):
        flags += ["-mavx2", "-mfma"]
    if capability == "AVX512":
        flags += ["-mavx512f", "-mavx512vl", "-mavx512bw", "-mavx512dq"]
    return flags


def _build(source: Path, compiler: str) -> Path:
    """Compile a library once per sources/flags/compiler; a finished file is reused, never rebuilt."""
    flags = cflags()
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=60).stdout
    key = hashlib.sha256(source.read_bytes())
    for header in sorted(INCLUDE_DIR.glob("*.h")):
        key.update(header.read_bytes())
    key.update(" ".join(f for f in flags if not f.startswith("-I")).encode())  # not the install path
    key.update(" ".join(_LDFLAGS).encode() + version.encode())
    target = _cache_dir() / f"{source.stem}_{key.hexdigest()[:16]}.so"
    if target.exists():
        return target
    # Built under a temporary name and renamed: concurrent processes never load a half-written file.
    return atomic_write(target, lambda tmp: _compile(compiler, [*flags, str(source), "-o", tmp, *_LDFLAGS]))


def _compile(compiler: str, args: list[str]) -> None:
    done = subprocess.run([compiler, *args], capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        raise RuntimeError(f"{compiler} failed: {lines[-1] if lines else done.returncode}")


class NativeLibrary:
    """A kernel library, built and loaded once per process on first use (``declare(lib)`` sets its ctypes
    signatures)."""

    def __init__(self, source: Path, declare: Callable[[ctypes.CDLL], None]) -> None:
        self.source = source
        self._declare = declare
        self._lock = threading.Lock()
        self._lib: ctypes.CDLL | None = None
        self._error: str | None = None

    def _load(self) -> ctypes.CDLL:
        compiler = os.environ.get("CXX", "c++")
        if shutil.which(compiler) is None:
            raise RuntimeError(f"no C++ compiler: {compiler!r} is not on PATH (install g++, or set CXX)")
        lib = ctypes.CDLL(str(_build(self.source, compiler)))
        self._declare(lib)
        return lib

    def unavailable_reason(self) -> str | None:
        """None if the library is ready (building it if needed), else why it cannot be used."""
        with self._lock:
            if self._lib is None and self._error is None:
                try:
                    self._lib = self._load()
                except Exception as err:  # any build or load failure means "not available", with its cause
                    self._error = f"the C++ kernel {self.source.name} could not be built: {err}"
            return self._error if self._lib is None else None

    def get(self) -> ctypes.CDLL:
        reason = self.unavailable_reason()
        if reason is not None:
            raise RuntimeError(reason)
        return self._lib


def data_ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()
