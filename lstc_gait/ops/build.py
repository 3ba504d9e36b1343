"""Just-in-time build of the C++ CPU kernels (``csrc/kernels.cpp``) with ``torch.utils.cpp_extension``.

The library is compiled on first use (an ahead-of-time build inside ``pip install -e`` would pull
another torch into build isolation) into a cache folder, ``LSTC_GAIT_KERNEL_CACHE`` or
``$XDG_CACHE_HOME/lstc_gait/kernels``. The file name carries a key over everything the binary
depends on: the sources, the compiler flags, the compiler's ``--version``, the torch and Python
versions, the machine architecture and the CPU's feature flags. The build uses ``-march=native``,
so a library built on one CPU is never loaded on another one (where it could die with SIGILL).

Each build runs in a private temporary folder and the finished library is renamed into the cache
in one step, so a concurrent build (pytest workers, DDP ranks) or an interrupted one never leaves
a partial library under the name that gets loaded; leftovers of an interrupted build are ignored.

Without a C++ compiler or ninja, on other platforms than x86-64/aarch64 Linux, when the build
fails, or with ``LSTC_GAIT_NATIVE=0``, :func:`load_library` warns once and returns False: the
ops then run their PyTorch formulation (same results, slower on CPU).
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import warnings
from pathlib import Path

import torch

from lstc_gait.utils.fileio import atomic_output

log = logging.getLogger(__name__)

SOURCES = (Path(__file__).with_name("csrc") / "kernels.cpp",)
CFLAGS = ("-O3", "-march=native", "-funroll-loops", "-fopenmp")
LDFLAGS = ("-fopenmp",)
NAMESPACE = "lstc_gait_cpu"

_lock = threading.Lock()
_state: dict[str, bool] = {}


def native_enabled() -> bool:
    """Whether the C++ kernels may be used at all.

    Returns:
        False when the environment variable ``LSTC_GAIT_NATIVE`` is 0/false/no/off, else True.
    """
    return os.environ.get("LSTC_GAIT_NATIVE", "1").strip().lower() not in ("0", "false", "no", "off")


def cache_dir() -> Path:
    """The folder of built libraries.

    Returns:
        ``LSTC_GAIT_KERNEL_CACHE`` when set, else ``$XDG_CACHE_HOME/lstc_gait/kernels``
        (``~/.cache/lstc_gait/kernels``).
    """
    explicit = os.environ.get("LSTC_GAIT_KERNEL_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "lstc_gait" / "kernels"


def cpu_flags() -> str:
    """The CPU's feature flags as the kernel reports them (``/proc/cpuinfo``).

    Returns:
        The ``flags`` (x86) or ``Features`` (ARM) line, else the processor's name.
    """
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_model() -> str:
    """The CPU's model name (``model name`` in ``/proc/cpuinfo``), for benchmark headers.

    Returns:
        The model name, else the processor or machine name Python reports.
    """
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _compiler() -> str | None:
    return shutil.which(os.environ.get("CXX", "c++")) or shutil.which("g++") or shutil.which("clang++")


def _compiler_version(compiler: str) -> str:
    try:
        return subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return compiler


def build_key(compiler: str) -> str:
    """A digest of everything the built library depends on.

    Args:
        compiler: Path of the C++ compiler that builds it.

    Returns:
        16 hex digits over the sources, flags, compiler version, torch and Python versions,
        architecture and CPU flags.

    Raises:
        OSError: When a kernel source file cannot be read.
    """
    key = hashlib.sha256()
    parts = [*(src.read_bytes() for src in SOURCES), " ".join(CFLAGS + LDFLAGS).encode(),
             _compiler_version(compiler).encode(), torch.__version__.encode(),
             str(getattr(torch.version, "git_version", "")).encode(), sys.version.encode(),
             platform.machine().encode(), cpu_flags().encode()]
    for part in parts:
        key.update(part)
        key.update(b"\0")
    return key.hexdigest()[:16]


def library_path(compiler: str) -> Path:
    """Where the library for this machine, compiler and torch lives in the cache.

    Args:
        compiler: Path of the C++ compiler.

    Returns:
        ``cache_dir() / "lstc_gait_kernels_<key>.so"``.

    Raises:
        OSError: When a kernel source file cannot be read.
    """
    return cache_dir() / f"lstc_gait_kernels_{build_key(compiler)}.so"


def _supported_platform() -> str | None:
    if not sys.platform.startswith("linux"):
        return f"platform {sys.platform} (JIT kernels are built on Linux only)"
    if platform.machine() not in ("x86_64", "AMD64", "aarch64", "arm64"):
        return f"architecture {platform.machine()}"
    return None


def compile_library(target: Path) -> None:
    """Build the kernels into ``target`` through a private temporary folder and one atomic rename.

    ``cpp_extension.load`` also loads the library into this process (``torch.ops.lstc_gait_cpu``).

    Args:
        target: Final path of the shared library (inside :func:`cache_dir`).

    Raises:
        RuntimeError: When ``cpp_extension`` fails to build (compiler error, no ninja).
        OSError: When the cache folder is not writable.
    """
    from torch.utils import cpp_extension

    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.stem}.build-"))
    try:
        built = cpp_extension.load(name=target.stem, sources=[str(s) for s in SOURCES], extra_cflags=list(CFLAGS),
                                   extra_ldflags=list(LDFLAGS), build_directory=str(work), is_python_module=False,
                                   verbose=False)
        built_path = Path(built) if isinstance(built, (str, os.PathLike)) else work / f"{target.stem}.so"
        if not built_path.exists():
            built_path = work / f"{target.stem}.so"
        # Publishing the finished file is the one step others can observe: renames, never a copy
        # (the build folder and the cache are the same filesystem).
        with atomic_output(target) as tmp:
            shutil.move(str(built_path), str(tmp))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def load_library() -> bool:
    """Load the C++ kernels (building them on first use) into ``torch.ops.lstc_gait_cpu``.

    Thread-safe and cached: the first call decides for the process. Failure is not an error: it
    warns once and the ops use their PyTorch formulation.

    Returns:
        True when ``torch.ops.lstc_gait_cpu`` holds the kernels, False otherwise.
    """
    if "ok" in _state:
        return _state["ok"]
    with _lock:
        if "ok" in _state:
            return _state["ok"]
        ok = False
        if native_enabled():
            try:
                reason = _supported_platform()
                if reason is not None:
                    raise RuntimeError(reason)
                compiler = _compiler()
                if compiler is None:
                    raise RuntimeError("no C++ compiler found (set CXX, or install g++/clang++)")
                os.environ.setdefault("CXX", compiler)
                path = library_path(compiler)
                if path.exists():
                    torch.ops.load_library(str(path))
                else:  # cpp_extension.load also loads what it built
                    log.info("building the lstc_gait CPU kernels -> %s", path)
                    compile_library(path)
                ok = True
            except Exception as exc:  # noqa: BLE001 - any build/load failure means: PyTorch formulation
                warnings.warn(f"lstc_gait C++ kernels unavailable ({str(exc).strip()[:400]}); the ops run "
                              "their PyTorch formulation (same results, slower on CPU)", RuntimeWarning,
                              stacklevel=2)
        _state["ok"] = ok
        return ok
