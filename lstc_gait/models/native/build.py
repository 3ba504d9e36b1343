"""Compile the package's C kernels on first use and load them with ctypes.

No torch headers, no ninja, no Python extension ABI: plain C files built with the system C
compiler (about a second) into a shared library cached under ``$XDG_CACHE_HOME/lstc_gait/kernels``
(or ``LSTC_GAIT_KERNEL_CACHE``). The cache key covers the source, the flags, the compiler and the
CPU's feature flags (the build uses ``-march=native``, so a library built on another CPU model is
never reused). Builds go to a temporary file renamed into place, so concurrent processes (pytest
workers, DDP ranks) never load a half-written library.

When there is no compiler, the build fails, or ``LSTC_GAIT_NATIVE=0``, :func:`load_kernels`
returns None after one warning and the models use their PyTorch formulation (same math).
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path

log = logging.getLogger(__name__)

SOURCES = tuple(Path(__file__).with_name(name) for name in ("stripe_depthwise.c", "batch_norm_relu.c",
                                                                   "pointwise_fuse.c", "max_pool.c"))
FLAGS = ("-O3", "-funroll-loops", "-march=native", "-std=gnu11", "-fopenmp", "-shared", "-fPIC")
_I64 = ctypes.c_int64
_PTR = ctypes.c_void_p
_SIGNATURES = {
    "sdw_forward": [_PTR, _PTR, _PTR] + [_I64] * 11,
    "sdw_backward_weight": [_PTR, _PTR, _PTR, _PTR] + [_I64] * 11,
    "stem_forward": [_PTR, _PTR, _PTR, _I64, _PTR] + [_I64] * 9,
    "stem_backward_weight": [_PTR, _PTR, _PTR, _PTR] + [_I64] * 9,
    "pointwise_fuse": [_PTR, _I64, _PTR, _I64, _PTR, _I64, _PTR, _PTR, _I64, _PTR, _PTR, _I64, _PTR, _I64, _I64],
    "maxpool2_forward": [_PTR, _PTR] + [_I64] * 5,
    "maxpool2_backward": [_PTR, _PTR, _PTR] + [_I64] * 5,
    "bnr_stats": [_PTR, _PTR, _PTR, _PTR] + [_I64] * 3,
    "bnr_forward": [_PTR, _PTR, _I64, _PTR, _PTR] + [_I64] * 3,
    "bnr_backward_reduce": [_PTR, _I64] + [_PTR] * 6 + [_I64] * 3,
    "bnr_backward_dx": [_PTR, _I64] + [_PTR] * 7 + [_I64] * 3,
}

_lock = threading.Lock()
_loaded: dict[str, ctypes.CDLL | None] = {}


def native_enabled() -> bool:
    """False when ``LSTC_GAIT_NATIVE`` is set to 0/false/no/off."""
    return os.environ.get("LSTC_GAIT_NATIVE", "1").strip().lower() not in ("0", "false", "no", "off")


def cache_dir() -> Path:
    """Where built libraries live: ``LSTC_GAIT_KERNEL_CACHE``, else ``$XDG_CACHE_HOME/lstc_gait/kernels``."""
    explicit = os.environ.get("LSTC_GAIT_KERNEL_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "lstc_gait" / "kernels"


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _compiler() -> str | None:
    return shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc") or shutil.which("clang")


def _library_path(compiler: str) -> Path:
    try:
        version = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        version = compiler
    key = hashlib.sha256()
    for part in (*(src.read_bytes() for src in SOURCES), " ".join(FLAGS).encode(), version.encode(), _cpu_flags().encode(),
                 platform.machine().encode()):
        key.update(part)
        key.update(b"\0")
    return cache_dir() / f"lstc_gait_kernels-{key.hexdigest()[:16]}.so"


def _build(compiler: str, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        proc = subprocess.run([compiler, *FLAGS, *map(str, SOURCES), "-o", tmp], capture_output=True, text=True,
                              timeout=300)
        if proc.returncode != 0:
            raise RuntimeError(f"{compiler} failed ({proc.returncode}): {proc.stderr.strip()[:500]}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load_kernels() -> ctypes.CDLL | None:
    """The C kernels as a ctypes library, building them if needed; None if unavailable."""
    if not native_enabled():
        return None
    with _lock:
        if "lib" in _loaded:
            return _loaded["lib"]
        lib = None
        try:
            compiler = _compiler()
            if compiler is None:
                raise RuntimeError("no C compiler found (set CC, or install gcc/clang)")
            path = _library_path(compiler)
            if not path.exists():
                log.info("building %s -> %s", ", ".join(src.name for src in SOURCES), path)
                _build(compiler, path)
            lib = ctypes.CDLL(str(path))
            for name, argtypes in _SIGNATURES.items():
                fn = getattr(lib, name)
                fn.argtypes = argtypes
                fn.restype = None
        except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
            warnings.warn(f"lstc_gait native kernels unavailable ({exc}); using the PyTorch formulation "
                          "(same results, slower on CPU)", RuntimeWarning, stacklevel=2)
            lib = None
        _loaded["lib"] = lib
        return lib
