"""Numeric precision policies, and `auto`: the fastest policy that trains correctly per device.

    TPU                          mixed_bfloat16  (the MXU computes in bfloat16)
    GPU, compute capability >= 7 mixed_float16   (tensor cores; loss scaling keeps gradients)
    GPU, older                   float32         (no fast float16 path)
    CPU with AMX                 mixed_bfloat16  (AMX tiles: 1.2x float32 for the CPU model, BENCHMARKS.md)
    any other CPU                float32

On a CPU with AVX512_BF16 but no AMX `python benchmarks/run.py` measured bfloat16
slower than float32: matmul peak 151 vs 291 GFLOP/s, JLML training 22 vs 30 img/s at 160x64 with
the fused batch norm (BENCHMARKS.md). mixed_float16 is never picked for a CPU: float16
convolution gradients have no fast CPU kernel.
"""
from __future__ import annotations

import pathlib

import keras
import tensorflow as tf

PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
CHOICES = ("auto",) + PRECISIONS
CPU_BF16_FLAGS = ("amx_bf16",)  # AVX512_BF16 alone measured slower than float32


def choose(strategy_name: str, gpu_capabilities: list[tuple[int, int]],
           cpu_flags: set[str]) -> str:
    """The `auto` policy for a device type (pure: the caller detects the hardware)."""
    if strategy_name == "tpu":
        return "mixed_bfloat16"
    if gpu_capabilities:
        return "mixed_float16" if min(gpu_capabilities) >= (7, 0) else "float32"
    return "mixed_bfloat16" if cpu_flags & set(CPU_BF16_FLAGS) else "float32"


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> set[str]:
    """The CPU's feature flags (empty where /proc/cpuinfo does not exist, e.g. macOS)."""
    try:
        text = pathlib.Path(cpuinfo).read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def gpu_capabilities() -> list[tuple[int, int]]:
    capabilities = []
    for gpu in tf.config.list_physical_devices("GPU"):
        capability = tf.config.experimental.get_device_details(gpu).get("compute_capability")
        capabilities.append(tuple(capability) if capability else (0, 0))
    return capabilities


def resolve(policy: str, strategy_name: str = "default") -> str:
    """`policy` itself, or for "auto" the policy `choose` picks on this machine."""
    if policy not in CHOICES:
        raise ValueError(f"--mixed_precision={policy!r}; expected one of {CHOICES}")
    if policy != "auto":
        return policy
    return choose(strategy_name, gpu_capabilities(), cpu_flags())


def set_policy(policy: str) -> None:
    if policy not in PRECISIONS:
        raise ValueError(f"--mixed_precision={policy!r}; expected one of {PRECISIONS}")
    keras.mixed_precision.set_global_policy(policy)
