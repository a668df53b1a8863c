"""What this CPU can do, as Linux says: its feature flags, and whether int8 runs fast and exact here.

Without VNNI (the avx512_vnni or avx_vnni flag) int8 convolutions run slower than float ones or, on
some kernels, lose accuracy to overflow: pneumo/model/runtime.py chooses its runtime by it, and
pneumo/model/onnx_runtime.py sets up its sessions by it. Both import it from here, so that a runtime
never imports the module that chooses it.
"""

from pathlib import Path

VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni"})
CPUINFO = Path("/proc/cpuinfo")


def cpu_flags(cpuinfo=CPUINFO) -> frozenset:
    """The CPU's feature flags (Linux); empty where they cannot be read."""
    try:
        for line in Path(cpuinfo).read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def has_vnni(flags=None) -> bool:
    """Whether `flags` (default: this CPU's) include VNNI."""
    return bool(VNNI_FLAGS & (cpu_flags() if flags is None else frozenset(flags)))
