"""The `auto` precision policy per device type, and flag/value validation."""
import pytest

from jlml_tf.training import precision


@pytest.mark.parametrize("strategy, gpus, cpu_flags, expected", [
    ("tpu", [], set(), "mixed_bfloat16"),
    ("mirrored", [(8, 0), (8, 0)], {"avx512_bf16"}, "mixed_float16"),
    ("default", [(8, 0), (6, 1)], set(), "float32"),  # one old GPU: no tensor cores on it
    ("default", [], {"avx512f", "avx512_bf16"}, "float32"),  # measured slower in bfloat16
    ("default", [], {"avx512_bf16", "amx_bf16", "amx_tile"}, "mixed_bfloat16"),
    ("default", [], {"avx2", "avx512f"}, "float32"),
])
def test_choose_per_device_type(strategy, gpus, cpu_flags, expected):
    assert precision.choose(strategy, gpus, cpu_flags) == expected


def test_cpu_flags_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512_bf16\n\nprocessor\t: 1\n")
    assert precision.cpu_flags(str(info)) == {"fpu", "avx2", "avx512_bf16"}
    assert precision.cpu_flags(str(tmp_path / "absent")) == set()


@pytest.mark.parametrize("strategy, gpus, cpu_flags, expected", [
    ("default", [(8, 0)], {"amx_bf16"}, "mixed_float16"),  # a GPU decides, not the CPU
    ("default", [(6, 1)], set(), "float32"),
    ("default", [], {"amx_bf16", "avx512f"}, "mixed_bfloat16"),
    ("default", [], {"avx512_bf16"}, "float32"),
    ("tpu", [], set(), "mixed_bfloat16"),
])
def test_auto_resolves_from_the_detected_devices(monkeypatch, strategy, gpus, cpu_flags,
                                                 expected):
    """resolve("auto") feeds what the machine reports (GPUs' compute capabilities, the CPU's
    flags) and the strategy into `choose`; an explicit policy ignores the hardware."""
    monkeypatch.setattr(precision, "gpu_capabilities", lambda: gpus)
    monkeypatch.setattr(precision, "cpu_flags", lambda: cpu_flags)
    assert precision.resolve("auto", strategy) == expected
    assert precision.resolve("float32", strategy) == "float32"


def test_explicit_policy_kept_and_unknown_rejected():
    assert precision.resolve("mixed_float16") == "mixed_float16"
    with pytest.raises(ValueError, match="--mixed_precision='half'"):
        precision.resolve("half")
    with pytest.raises(ValueError, match="auto"):
        precision.set_policy("auto")  # only resolved policies reach Keras
