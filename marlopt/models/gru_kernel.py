"""The speed kit's CPU GRU kernel (``gru_kernel.cpp``): built once per machine, loaded on first use.

:mod:`marlopt.models.fast_gru` runs a GRU sequence as one autograd node. Its Python loop issues
about seven small ops per step (forward) and as many again backward; on the CPU, for the tens of
rows a minibatch holds, their dispatch costs more than their arithmetic. The kernel runs the same
equations as two C++ loops, one ATen batched matmul and one vectorised elementwise loop per step
(timings: docs/benchmarks.md §5). ``fast_gru`` uses it for float32 CPU tensors when it is
available and falls back to its Python loop otherwise (CUDA, float64, no compiler): the same
equations, equal within float rounding (tests/models/test_gru_kernel.py).

Built with torch's C++ extension builder (``torch.utils.cpp_extension.load``: a C++ compiler and
ninja) into torch's extension cache (``$TORCH_EXTENSIONS_DIR``, default
``~/.cache/torch_extensions``), once per source, torch version, compiler flags and CPU (the flags
include ``-march=native``, so the build's name carries a digest of all four: a home directory
shared by different machines keeps one build per CPU type). The first build takes 10–40 s and
prints one line; later processes load it in milliseconds.

Where it is not used:

- not Linux on x86-64 (measured there only; elsewhere the vector maths library may be missing and
  the loop slower than Python's), no C++ compiler or no ninja: the Python loop, silently;
- ``MARLOPT_GRU_KERNEL=0`` in the environment: the Python loop (A/B comparisons, troubleshooting);
- the build fails: one line on stderr saying so, then the Python loop;
- the speed kit off (``speed_kit=false``): neither (plain torch's cell loop).
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import torch

SOURCE = Path(__file__).with_name("gru_kernel.cpp")
FLAGS = ["-O3", "-fno-math-errno", "-fno-trapping-math", "-fopenmp-simd", "-march=native",
         "-DTORCH_ASSERT_ONLY_METHOD_OPERATORS"]
LDFLAGS = ["-lmvec"]  # glibc's vector maths (gru_kernel.cpp's expf/tanhf)

_loaded: dict[str, Any] = {}  # "ops": the op namespace, or None once an attempt has failed


def unavailable_reason() -> str | None:
    """Why the kernel cannot be built here, or None where it can."""
    if os.environ.get("MARLOPT_GRU_KERNEL", "1") == "0":
        return "MARLOPT_GRU_KERNEL=0"
    if sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"):
        return f"not Linux on x86-64 ({sys.platform}, {platform.machine()})"
    from torch.utils.cpp_extension import is_ninja_available

    compiler = os.environ.get("CXX", "c++")
    if shutil.which(compiler) is None:
        return f"no C++ compiler ({compiler})"
    if not is_ninja_available():
        return "no ninja (pip install ninja)"
    return None


def build_name() -> str:
    """The extension's name: a digest of the source, torch's version, the flags and the CPU."""
    digest = hashlib.sha256()
    digest.update(SOURCE.read_bytes())
    digest.update(torch.__version__.encode())
    digest.update(" ".join(FLAGS + LDFLAGS).encode())
    digest.update(_cpu_identity().encode())
    return f"marlopt_gru_{digest.hexdigest()[:12]}"


def _cpu_identity() -> str:
    """The CPU's model name and feature flags (what ``-march=native`` compiles for)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor()
    wanted = ("model name", "flags")
    return "\n".join(sorted({line for line in lines if line.split(":")[0].strip() in wanted}))


def ops() -> Any | None:
    """``torch.ops.marlopt_gru`` (``forward``, ``backward``), building the kernel on first use;
    None where it is unavailable or failed to build (then the caller runs its Python loop)."""
    if "ops" in _loaded:
        return _loaded["ops"]
    _loaded["ops"] = None
    if unavailable_reason() is not None:
        return None
    if _registered():  # loaded earlier in this process (a library registers its ops once)
        _loaded["ops"] = torch.ops.marlopt_gru
        return _loaded["ops"]
    from torch.utils import cpp_extension

    name = build_name()
    build_dir = Path(cpp_extension._get_build_directory(name, verbose=False))  # torch's cache layout
    built = build_dir / f"{name}.so"
    if built.is_file() and _load_built(built):
        return _loaded["ops"]
    cached = built.is_file()
    if not cached:
        print(f"marlopt: building the CPU GRU kernel once for this machine (10-40 s; cached in {build_dir})",
              file=sys.stderr, flush=True)
    start = time.perf_counter()
    try:
        cpp_extension.load(name, [str(SOURCE)], extra_cflags=FLAGS, extra_ldflags=LDFLAGS, is_python_module=False,
                           verbose=False)
    except Exception as exc:  # noqa: BLE001 - any build failure falls back to the Python loop
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        print(f"marlopt: the CPU GRU kernel did not build ({detail}); using the Python GRU loop (same results, "
              "slower; MARLOPT_GRU_KERNEL=0 skips the attempt)", file=sys.stderr, flush=True)
        return None
    if not cached:
        print(f"marlopt: CPU GRU kernel built in {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    _loaded["ops"] = torch.ops.marlopt_gru
    return _loaded["ops"]


def _load_built(library: Path) -> bool:
    """Load a finished build directly. Its name digests everything the build depends on, so it is
    current by construction: no ninja run, which would also rebuild it whenever another checkout of
    the same source (another clone, ``scripts/compare_runs.py``'s baseline) had built it last."""
    try:
        torch.ops.load_library(str(library))
    except OSError:  # a half-written build (another process is linking it): build through the lock
        return False
    _loaded["ops"] = torch.ops.marlopt_gru
    return True


def _registered() -> bool:
    try:
        torch.ops.marlopt_gru.forward
    except (AttributeError, RuntimeError):
        return False
    return True
