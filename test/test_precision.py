"""CLIP_DINOISER_FORCE_FP32: a machine with native bf16 runs, when asked, what a CPU without it runs."""
import pytest
import torch

from clip_dinoiser_ros.model import precision

CPU = torch.device("cpu")


def test_auto_is_fp32_with_the_variable_set_and_the_cpus_native_choice_without_it(monkeypatch):
    native = torch.bfloat16 if precision.cpu_has_native_bf16() else torch.float32
    monkeypatch.delenv(precision.FORCE_FP32_VARIABLE, raising=False)
    assert precision.resolve_precision("auto", CPU) == native
    monkeypatch.setenv(precision.FORCE_FP32_VARIABLE, "1")
    assert precision.resolve_precision("auto", CPU) == torch.float32
    assert precision.resolve_precision("auto", torch.device("cuda")) == torch.float32  # no fp16 either


@pytest.mark.parametrize("value", ["0", "", "yes"])
def test_only_1_forces_fp32(monkeypatch, value):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    monkeypatch.setenv(precision.FORCE_FP32_VARIABLE, value)
    assert precision.resolve_precision("auto", CPU) == torch.bfloat16


def test_an_explicit_precision_is_kept_with_the_variable_set(monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    monkeypatch.setenv(precision.FORCE_FP32_VARIABLE, "1")
    assert precision.resolve_precision("bf16", CPU) == torch.bfloat16
