"""trainer/blas.py: MLX's CPU matmuls bind to the machine's OpenBLAS when asked, and a bad ``blas`` setting is a clear error.

Each case runs in a fresh interpreter: the choice has to be made before ``mlx.core`` is imported, and this
test process has imported it long ago. LD_DEBUG=bindings makes the dynamic linker say which library each of
libmlx's ``cblas_sgemm`` references was bound to: the proof that MLX itself calls the library chosen.
"""

from __future__ import annotations

import ctypes.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the bundled reference BLAS is Linux's")
# ./dev system installs it (libopenblas0-pthread); a developer machine without it cannot show the binding.
needs_openblas = pytest.mark.skipif(ctypes.util.find_library("openblas") is None, reason="OpenBLAS is not installed")

CHOOSE_THEN_MULTIPLY = r"""
import ctypes, json, os, sys
import trainer.blas
from trainer.blas import BlasError, describe_blas, use_blas
if os.environ.get("PRETEND_NO_OPENBLAS"):  # a machine without OpenBLAS: no name finds it
    trainer.blas.OPENBLAS_NAMES = ("libopenblas-not-here.so.0",)
    trainer.blas.ctypes.util.find_library = lambda name: None
try:
    chosen = use_blas(sys.argv[1])
except BlasError as exc:
    print(json.dumps({"error": str(exc)})); sys.exit(0)
import mlx.core as mx
import numpy as np
a, b = np.random.default_rng(0).standard_normal((2, 256, 256), dtype=np.float32)
product = np.array(mx.array(a) @ mx.array(b))
process = ctypes.CDLL(None)
threads = process.openblas_get_num_threads() if hasattr(process, "openblas_get_num_threads") else None
print(json.dumps({"chosen": chosen.library, "note": chosen.note, "now": describe_blas().library,
                  "threads": threads, "omp_threads": os.environ.get("OMP_NUM_THREADS"),
                  "error_vs_float64": float(np.abs(product - a.astype(np.float64) @ b).max())}))
"""


def choose(setting: str, **env: str) -> tuple[dict, str]:
    """Run CHOOSE_THEN_MULTIPLY with ``setting``: its JSON result and the linker's bindings of cblas_sgemm."""
    thread_settings = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")
    environ = {name: value for name, value in os.environ.items() if name not in thread_settings}
    environ.update(PYTHONPATH=str(ROOT), LD_DEBUG="bindings", **env)
    result = subprocess.run([sys.executable, "-c", CHOOSE_THEN_MULTIPLY, setting], capture_output=True, text=True,
                            env=environ, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    bindings = "\n".join(line for line in result.stderr.splitlines() if "`cblas_sgemm'" in line and "libmlx" in line)
    return json.loads(result.stdout.splitlines()[-1]), bindings


@linux_only
@needs_openblas
def test_auto_makes_mlx_call_openblas_with_one_thread_per_stream():
    result, bindings = choose("auto")
    assert "openblas" in result["chosen"] and os.path.isabs(result["chosen"]) and result["now"] == result["chosen"]
    assert "openblas" in bindings and "mlx_cpu.libs" not in bindings, bindings
    # MLX's streams are the parallelism (trainer.step.cpu_streams): OpenBLAS itself runs one thread, whichever
    # build it is (an OpenMP build reads OMP_NUM_THREADS).
    assert result["threads"] == 1 and result["omp_threads"] == "1"
    assert result["error_vs_float64"] < 1e-3  # the same product, from a different library


@linux_only
@needs_openblas
def test_a_thread_count_the_user_set_is_kept():
    result, _ = choose("auto", OPENBLAS_NUM_THREADS="2")
    assert result["threads"] == 2 and result["omp_threads"] is None


@linux_only
def test_auto_without_openblas_keeps_the_bundled_blas_and_says_how_to_get_it():
    result, bindings = choose("auto", PRETEND_NO_OPENBLAS="1")
    assert result["chosen"] == result["now"] == "bundled" and "mlx_cpu.libs/libblas" in bindings, bindings
    assert "no OpenBLAS on this machine" in result["note"] and "sudo apt install libopenblas0" in result["note"]


@linux_only
def test_bundled_keeps_the_wheels_reference_blas():
    result, bindings = choose("bundled")
    assert result["chosen"] == result["now"] == "bundled"
    assert "mlx_cpu.libs/libblas" in bindings and "openblas" not in bindings, bindings
    assert result["error_vs_float64"] < 1e-3


@linux_only
@needs_openblas
def test_a_path_to_a_cblas_library_is_used():
    path = choose("auto")[0]["chosen"]  # the file "auto" found, given by its path this time
    result, bindings = choose(path)
    assert result["chosen"] == path and path in bindings


@linux_only
@pytest.mark.parametrize(("setting", "expected"), [
    ("/no/such/libblas.so", "blas: cannot load '/no/such/libblas.so'; give the path of a CBLAS library"),
    ("libz.so.1", "blas: 'libz.so.1' has no cblas_sgemm, so MLX cannot use it"),
])
def test_a_library_mlx_cannot_use_is_refused(setting, expected):
    result, _ = choose(setting)
    assert result["error"].startswith(expected) and "'auto' or 'bundled'" in result["error"]


@linux_only
def test_the_trainer_names_where_a_bad_blas_was_set(tmp_path):
    config = tmp_path / "run.toml"
    config.write_text('steps = 2\nblas = "/no/such/libblas.so"\n')
    environ = {**os.environ, "PYTHONPATH": str(ROOT)}
    for argv, where in (([f"--config={config}"], f"{config}:2"), (["--blas", "/no/such/libblas.so"], "command line")):
        result = subprocess.run([sys.executable, "-m", "trainer", *argv], capture_output=True, text=True, env=environ,
                                timeout=60, cwd=tmp_path)
        assert result.returncode == 2
        error = json.loads(result.stdout.splitlines()[-1])
        assert error["event"] == "error" and error["message"].startswith(f"{where}: blas: cannot load"), error
