"""Which ONNX Runtime execution provider to ask for, with which options, and what to say when another runs.

ONNX Runtime falls back to the CPU silently when a provider's libraries cannot be loaded: the provider in
use is read back from each session (``get_providers()[0]``) and compared with the one asked for.
Options come from one ``key=value,...`` string (the node's ``onnx_provider_options``, the tools'
``--onnx-provider-options``); the defaults are what a Jetson wants: TensorRT in fp16 with its engine and
timing caches in the user cache, so a restart does not rebuild engines for minutes.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Optional

TENSORRT, CUDA, CPU = PROVIDER_ORDER = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
GPU_PROVIDERS = (TENSORRT, CUDA)
# What each provider loads at session creation: the likely missing pieces when it is not the one running.
LIBRARIES = {
    TENSORRT: "TensorRT (libnvinfer.so, libnvinfer_plugin.so, libnvonnxparser.so) or the CUDA and cuDNN "
              "libraries it runs on (libcudart.so, libcublas.so, libcudnn.so)",
    CUDA: "CUDA (libcudart.so, libcublas.so, libcufft.so) or cuDNN (libcudnn.so) of the versions this "
          "onnxruntime-gpu was built for",
}
TRUE, FALSE = ("true", "1", "on", "yes"), ("false", "0", "off", "no")


@dataclass(frozen=True)
class ProviderOptions:
    """What users set; ``device_id`` None means the engine's CUDA device (0 when it runs on the CPU)."""

    fp16: bool = True  # TensorRT only (CUDA runs the fp32 graph as exported)
    engine_cache: bool = True  # TensorRT engines kept in the user cache: built once per graph, not per start
    timing_cache: bool = True  # TensorRT layer timings kept: a new input size builds faster
    device_id: Optional[int] = None

    def on_device(self, device_index: Optional[int]) -> "ProviderOptions":
        """These options with ``device_id`` defaulting to the engine's CUDA device index."""
        return self if self.device_id is not None else replace(self, device_id=device_index or 0)


KEYS = tuple(field.name for field in fields(ProviderOptions))
SYNTAX = f"comma-separated key=value with keys {', '.join(KEYS)} (e.g. 'fp16=false,device_id=1'), or '' for defaults"


def parse_provider_options(text: str) -> ProviderOptions:
    """``"fp16=false,device_id=1"`` -> ProviderOptions; ValueError naming the item and what is allowed."""
    problem, options = _parsed(text)
    if problem:
        raise ValueError(f"onnx_provider_options {text!r}: {problem}; allowed: {SYNTAX}")
    return options


def provider_options_problem(text: str) -> Optional[str]:
    """Why ``text`` is not provider options (for the node's parameter check), or None."""
    return _parsed(text)[0]


def _parsed(text: str) -> tuple[Optional[str], ProviderOptions]:
    values: dict[str, Any] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        key, equals, value = (side.strip() for side in item.partition("="))
        if not equals or key not in KEYS:
            return f"{item!r} is not key=value with a known key", ProviderOptions()
        if key in values:
            return f"{key} is given twice", ProviderOptions()
        problem, values[key] = _value(key, value.lower())
        if problem:
            return problem, ProviderOptions()
    return None, ProviderOptions(**values)


def _value(key: str, value: str) -> tuple[Optional[str], Any]:
    """(why ``value`` is wrong for ``key`` or None, the parsed value)."""
    if key == "device_id":
        if not value.isdigit():
            return f"device_id must be a CUDA device index (0, 1, ...), got {value!r}", None
        return None, int(value)
    if value not in TRUE + FALSE:
        return f"{key} must be true or false, got {value!r}", None
    return None, value in TRUE


def provider_options(provider: str, options: ProviderOptions, cache_folder: Path,
                     layer_norm_fp32: bool) -> dict[str, Any]:
    """ONNX Runtime's options for ``provider`` (its documented names); ``layer_norm_fp32``: the export's
    sidecar asks for its LayerNorms in fp32 under fp16 (a known overflow spot in ViTs)."""
    device = {"device_id": options.device_id or 0}
    if provider == CUDA:
        return device
    if provider != TENSORRT:
        return {}
    settings: dict[str, Any] = {**device, "trt_fp16_enable": options.fp16,
                                "trt_layer_norm_fp32_fallback": options.fp16 and layer_norm_fp32,
                                "trt_engine_cache_enable": options.engine_cache,
                                "trt_timing_cache_enable": options.timing_cache}
    if options.engine_cache:
        settings["trt_engine_cache_path"] = str(cache_folder)
    if options.timing_cache:
        settings["trt_timing_cache_path"] = str(cache_folder)
    return settings


def session_providers(providers: list[str], options: ProviderOptions, cache_folder: Path,
                      layer_norm_fp32: bool) -> list[tuple[str, dict[str, Any]]]:
    """``providers`` (best first) each with its options, as InferenceSession's ``providers`` takes them."""
    return [(provider, provider_options(provider, options, cache_folder, layer_norm_fp32)) for provider in providers]


def fallback_warning(asked: str, running: str) -> Optional[str]:
    """What to tell the user when ONNX Runtime runs another provider than the one asked for; None if not."""
    if running == asked:
        return None
    missing = LIBRARIES.get(asked, "its libraries")
    return (f"ONNX Runtime was asked for {asked} but runs {running}: it could not load {missing} (see "
            f"ldd on onnxruntime's libonnxruntime_providers_*.so and LD_LIBRARY_PATH); frames run on {running}")
