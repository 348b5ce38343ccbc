"""Which BLAS MLX's CPU matmuls run on: on Linux, the machine's OpenBLAS instead of the mlx-cpu wheel's reference BLAS.

The mlx-cpu wheel for Linux bundles the netlib reference BLAS (``mlx_cpu.libs/libblas-*.so``), a plain
triple loop: on one x86 core it multiplies 2048×512 by 512×128 in 36 ms, OpenBLAS in 2.3 ms. MLX calls
``cblas_sgemm`` through the dynamic linker, and a library opened with ``RTLD_GLOBAL`` before
``mlx.core`` is imported comes first in the lookup, so loading OpenBLAS that way makes every MLX matmul
use it: no rebuild, no environment variable, same API. A machine without OpenBLAS keeps the bundled
one (``sudo apt install libopenblas0`` gets it; ``corral doctor`` says so). On macOS MLX uses Accelerate
and Metal; nothing is done there.

Standard library only: this runs before MLX is imported.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from dataclasses import dataclass
from typing import MutableMapping

AUTO = "auto"
BUNDLED = "bundled"  # Linux: the reference BLAS in the mlx-cpu wheel
NATIVE = "native"  # elsewhere: MLX's own fast path (Accelerate and Metal on macOS)
# Tried in order by "auto": the sonames Debian/Ubuntu, Fedora and Arch install OpenBLAS under.
OPENBLAS_NAMES = ("libopenblas.so.0", "libopenblas.so", "libopenblasp.so.0")
# The one routine MLX's CPU matmul needs; a library without it cannot stand in for the bundled BLAS.
SGEMM = "cblas_sgemm"
# Where the mlx-cpu wheel keeps its own (reference) BLAS: a library from there is the bundled one.
BUNDLED_DIR = "mlx_cpu.libs"
# Any build does (use_blas keeps it to one thread per caller); on Fedora the libraries are in the -serial,
# -threads and -openmp packages, not in "openblas" itself.
INSTALL_HINT = "sudo apt install libopenblas0; Fedora: sudo dnf install openblas-serial"


class BlasError(ValueError):
    """The ``blas`` setting names a library that cannot be used; the message says which and what to do."""


@dataclass(frozen=True)
class BlasChoice:
    """What MLX's CPU matmuls will call: ``library`` is "bundled", "native" (not Linux) or the path of the library loaded."""

    library: str
    note: str = ""  # why: shown to users when the choice is not the fast one


def use_blas(setting: str, environ: MutableMapping[str, str] | None = None) -> BlasChoice:
    """Load the BLAS the ``blas`` setting asks for so that MLX binds to it; call before importing mlx.core.

    ``setting`` is "auto" (OpenBLAS when the machine has it), "bundled" (MLX's own), or a path to a
    CBLAS library. Raises BlasError for a path that cannot be loaded or lacks ``cblas_sgemm``.
    """
    environ = os.environ if environ is None else environ
    if not sys.platform.startswith("linux"):
        return BlasChoice(NATIVE, f"MLX on {sys.platform} uses its own BLAS")
    if setting == BUNDLED:
        return BlasChoice(BUNDLED, "the blas setting asks for MLX's bundled reference BLAS")
    if "mlx.core" in sys.modules:
        # Its symbols are bound already (Python opens extensions with RTLD_NOW): too late to choose.
        return describe_blas()
    # One BLAS thread per caller: the trainer's parallelism is MLX's CPU streams (trainer.step.cpu_streams),
    # one per core, each calling sgemm; BLAS threads on top of them would fight over the same cores.
    # OpenBLAS built with OpenMP (libopenblas0-openmp) reads OMP_NUM_THREADS instead; both are read at load.
    if "OPENBLAS_NUM_THREADS" not in environ:
        environ["OPENBLAS_NUM_THREADS"] = "1"
        environ.setdefault("OMP_NUM_THREADS", "1")
    if setting == AUTO:
        for name in _openblas_candidates():
            library = _open_global(name)
            if library is not None and hasattr(library, SGEMM):
                return describe_blas()  # what MLX will bind to: the global lookup may find another first
        return BlasChoice(BUNDLED, f"no OpenBLAS on this machine: matmuls use MLX's slow reference BLAS ({INSTALL_HINT})")
    library = _open_global(setting)
    if library is None:
        raise BlasError(f"blas: cannot load {setting!r}; give the path of a CBLAS library such as OpenBLAS, "
                        f"or {AUTO!r} or {BUNDLED!r}")
    if not hasattr(library, SGEMM):
        raise BlasError(f"blas: {setting!r} has no {SGEMM}, so MLX cannot use it; give an OpenBLAS or MKL library, "
                        f"or {AUTO!r} or {BUNDLED!r}")
    return describe_blas()


def describe_blas() -> BlasChoice:
    """The library whose ``cblas_sgemm`` the process's global lookup finds now: what MLX binds to on import."""
    if not sys.platform.startswith("linux"):
        return BlasChoice(NATIVE, f"MLX on {sys.platform} uses its own BLAS")
    process = ctypes.CDLL(None)
    if not hasattr(process, SGEMM):
        return BlasChoice(BUNDLED)  # the wheel's own BLAS is a private dependency of libmlx, not global
    path = _path_of(process, SGEMM)
    # Someone preloaded the wheel's own library (LD_PRELOAD): still the slow one.
    return BlasChoice(BUNDLED if BUNDLED_DIR in path else path)


def slow_blas_warning(library: str | None, setting: object = AUTO) -> str | None:
    """What to tell the user about a rank's ``blas`` (its start event; ``setting`` from its config), if anything.

    Only when the slow bundled BLAS is in use though the user did not ask for it.
    """
    if library != BUNDLED or setting == BUNDLED:
        return None
    return ("MLX multiplies matrices with the mlx-cpu wheel's reference BLAS here, about 15x slower than OpenBLAS: "
            f"install OpenBLAS on this node ({INSTALL_HINT}) and start again")


def _openblas_candidates() -> list[str]:
    found = ctypes.util.find_library("openblas")
    return [*OPENBLAS_NAMES, *([found] if found and found not in OPENBLAS_NAMES else [])]


def _open_global(name: str) -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(name, mode=ctypes.RTLD_GLOBAL)
    except OSError:
        return None


class _DlInfo(ctypes.Structure):
    _fields_ = [("dli_fname", ctypes.c_char_p), ("dli_fbase", ctypes.c_void_p),
                ("dli_sname", ctypes.c_char_p), ("dli_saddr", ctypes.c_void_p)]


def _path_of(library: ctypes.CDLL, fallback: str) -> str:
    """The file that defines ``cblas_sgemm`` for ``library``'s lookup (dladdr), else ``fallback``."""
    try:
        dladdr = ctypes.CDLL(None).dladdr
    except AttributeError:
        return fallback
    dladdr.argtypes = [ctypes.c_void_p, ctypes.POINTER(_DlInfo)]
    info = _DlInfo()
    address = ctypes.cast(getattr(library, SGEMM), ctypes.c_void_p).value
    if not dladdr(address, ctypes.byref(info)) or not info.dli_fname:
        return fallback
    return os.path.realpath(os.fsdecode(info.dli_fname))
