"""ONNX Runtime as users run it: the provider read back from the session (a silent fallback is one
warning), provider options, I/O binding on GPU providers, a bounded set of sessions, live changes
prepared in the background, failed exports remembered, read-only caches. CPU build: GPU sessions are
real CPU sessions that report a GPU provider."""
import os
import signal
import statistics
import threading
import time
import warnings

import numpy as np
import onnxruntime
import pytest
import torch

from clip_dinoiser_ros.model import ClipDinoiser, DinoiserHeads
from clip_dinoiser_ros.model import onnx_backend, onnx_export_process
from clip_dinoiser_ros.model.build import EngineSettings, build_engine
from clip_dinoiser_ros.model.heads_download import cache_dir
from clip_dinoiser_ros.model.onnx_export_process import ExportProcesses
from clip_dinoiser_ros.model.onnx_providers import (CPU, CUDA, TENSORRT, ProviderOptions, fallback_warning,
                                                    parse_provider_options, provider_options)
from conftest import TINY_MODEL
from ros_harness import wait_until

PROMPTS = ["road", "car|truck", "tree"]
IMAGE = np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8)
CPU_SESSION = onnxruntime.InferenceSession  # before any test replaces it


@pytest.fixture()
def heads(tiny_clip):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return DinoiserHeads(tiny_clip.visual.conv1.out_channels).state_dict()


def engine_pair(clip_model, heads, gamma=0.2):
    engines = [ClipDinoiser(clip_model, heads, precision="fp32", templates="simple", gamma=gamma, backend=backend)
               for backend in ("torch", "onnxruntime")]
    for engine in engines:
        engine.set_prompts(PROMPTS)
    return engines


class ReportsProvider:
    """A real CPU session that says it runs on ``provider``, as a GPU build's would; records its calls."""

    def __init__(self, path, providers, provider):
        self.asked_with = providers
        self.calls = []
        self.session = CPU_SESSION(path, providers=[CPU])
        self.provider = provider

    def get_providers(self):
        return [self.provider, CPU]

    def run(self, *args, **kwargs):
        self.calls.append("run")
        return self.session.run(*args, **kwargs)

    def io_binding(self):
        return self.session.io_binding()

    def run_with_iobinding(self, binding, *args):
        self.calls.append("run_with_iobinding")
        return self.session.run_with_iobinding(binding, *args)


def sessions_reporting(monkeypatch, asked: list, running: str) -> list:
    """Every session asks for ``asked`` and reports ``running``; returns the sessions made."""
    made = []

    def session(path, providers):  # a file's path, or the bytes of the one-node probe graph
        made.append(ReportsProvider(path, providers, running))
        return made[-1]

    monkeypatch.setattr(onnx_backend, "best_providers", lambda: list(asked))
    monkeypatch.setattr(onnxruntime, "InferenceSession", session)
    return made


def test_provider_options_default_to_what_a_jetson_wants(tmp_path):
    assert parse_provider_options("") == ProviderOptions(fp16=True, engine_cache=True, timing_cache=True)
    assert parse_provider_options(" fp16=off, device_id=1 ") == ProviderOptions(fp16=False, device_id=1)
    for bad, why in (("fp16=maybe", "fp16 must be true or false"), ("gpu=1", "not key=value with a known key"),
                     ("device_id=-1", "CUDA device index"), ("fp16=1,fp16=0", "given twice")):
        with pytest.raises(ValueError, match=why):
            parse_provider_options(bad)
    assert ProviderOptions().on_device(2).device_id == 2 and ProviderOptions(device_id=0).on_device(2).device_id == 0
    tensorrt = provider_options(TENSORRT, ProviderOptions().on_device(1), tmp_path, layer_norm_fp32=True)
    assert tensorrt == {"device_id": 1, "trt_fp16_enable": True, "trt_layer_norm_fp32_fallback": True,
                        "trt_engine_cache_enable": True, "trt_engine_cache_path": str(tmp_path),
                        "trt_timing_cache_enable": True, "trt_timing_cache_path": str(tmp_path)}
    fp32 = provider_options(TENSORRT, ProviderOptions(fp16=False, engine_cache=False), tmp_path, layer_norm_fp32=True)
    assert not fp32["trt_fp16_enable"] and not fp32["trt_layer_norm_fp32_fallback"]
    assert "trt_engine_cache_path" not in fp32 and fp32["trt_timing_cache_path"] == str(tmp_path)
    assert provider_options(CUDA, ProviderOptions(device_id=3), tmp_path, True) == {"device_id": 3}
    assert provider_options(CPU, ProviderOptions(), tmp_path, True) == {}


def test_the_cpu_session_runs_host_arrays_and_says_it_is_the_cpu(tiny_clip, heads, monkeypatch):
    made = sessions_reporting(monkeypatch, [CPU], CPU)
    _, engine = engine_pair(tiny_clip, heads)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to warn about: the CPU was asked for and runs
        engine.segment(IMAGE, short_side=64)
    assert engine.runs_on == "onnxruntime/CPUExecutionProvider"
    assert made[-1].calls == ["run"] and made[-1].asked_with == [(CPU, {})]


def test_a_silent_fallback_to_the_cpu_is_reported_once_with_the_missing_libraries(tiny_clip, heads, monkeypatch):
    made = sessions_reporting(monkeypatch, [TENSORRT, CUDA, CPU], CPU)
    with pytest.warns(RuntimeWarning) as caught:
        _, engine = engine_pair(tiny_clip, heads)
        assert engine.runs_on == "onnxruntime/CPUExecutionProvider"  # from the probe, before any frame
        engine.segment(IMAGE, short_side=64)
        engine.segment(IMAGE[:40], short_side=32)  # another size, another session: no second warning
    fallbacks = [str(w.message) for w in caught if "ONNX Runtime was asked for" in str(w.message)]
    assert fallbacks == [fallback_warning(TENSORRT, CPU)] and "libnvinfer" in fallbacks[0]
    assert "libcudnn" in fallback_warning(CUDA, CPU) and fallback_warning(CUDA, CUDA) is None
    asked = dict(made[-1].asked_with)
    assert asked[TENSORRT]["trt_fp16_enable"] and asked[TENSORRT]["trt_layer_norm_fp32_fallback"]  # the sidecar's
    assert asked[TENSORRT]["trt_engine_cache_path"] == str(cache_dir("tensorrt")) == asked[TENSORRT]["trt_timing_cache_path"]
    assert asked[CUDA] == {"device_id": 0} and made[-1].calls == ["run"]


@pytest.mark.parametrize("provider", [CUDA, TENSORRT])
def test_gpu_providers_run_through_io_binding_with_the_same_results(tiny_clip, heads, monkeypatch, provider):
    made = sessions_reporting(monkeypatch, [provider, CPU], provider)
    reference, engine = engine_pair(tiny_clip, heads)
    got, expected = engine.segment(IMAGE, short_side=64), reference.segment(IMAGE, short_side=64)
    assert made[-1].calls == ["run_with_iobinding"] and engine.runs_on == f"onnxruntime/{provider}"
    assert np.abs(got.probs - expected.probs).max() <= 1e-4 and (got.labels == expected.labels).mean() >= 0.999


def test_sessions_are_bounded_least_recently_used_first(tiny_clip, heads):
    _, engine = engine_pair(tiny_clip, heads)
    backend = engine.onnx
    sizes = [(32, 32), (32, 48), (48, 32), (48, 48), (64, 32)]
    first = backend.session(sizes[0], 0.2)
    for size in sizes[1:4]:
        backend.session(size, 0.2)
    assert backend.session(sizes[0], 0.2) is first  # used again: the most recent now
    backend.session(sizes[4], 0.2)
    assert backend.status.startswith(f"{onnx_backend.MAX_SESSIONS} loaded")
    assert backend.session(sizes[0], 0.2) is first  # kept; (32, 48), the least recently used, went


def in_child(monkeypatch) -> list:
    """Records the gamma of every export handed to a child process."""
    handed, original = [], ExportProcesses.export
    monkeypatch.setattr(ExportProcesses, "export", lambda self, gamma, *rest: handed.append(gamma) or
                        original(self, gamma, *rest))
    return handed


def test_a_failed_export_is_remembered_reported_and_never_retried_per_frame(tiny_clip, heads, monkeypatch):
    _, engine = engine_pair(tiny_clip, heads)
    engine.segment(IMAGE, short_side=64)
    children = in_child(monkeypatch)
    monkeypatch.setattr(onnx_export_process, "WORKER", "clip_dinoiser_ros.model.no_such_worker")  # the child fails
    engine.gamma = 0.4
    before = engine.segment(IMAGE, short_side=64)  # the graph in use runs while 0.4 is tried in the background
    assert engine.onnx.wait_prepared(timeout=300)
    for _ in range(3):
        after = engine.segment(IMAGE, short_side=64)
    assert children == [0.4] and np.array_equal(before.labels, after.labels)
    assert "FAILED 64x96 gamma 0.4: RuntimeError: the export process exited with status 1" in engine.graph_status
    assert "No module named clip_dinoiser_ros.model.no_such_worker" in engine.graph_status  # the child's own words
    tries = []

    def failing(*args, **kwargs):
        tries.append(args[2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(onnx_backend, "export_graph", failing)
    fresh = ClipDinoiser(tiny_clip, heads, precision="fp32", templates="simple", gamma=0.5, backend="onnxruntime")
    fresh.set_prompts(PROMPTS)
    with pytest.raises(OSError, match="No space left"):  # no graph to fall back on: made on the first frame
        fresh.segment(IMAGE, short_side=64)
    for _ in range(2):
        with pytest.raises(RuntimeError, match="not retried.*No space left"):
            fresh.segment(IMAGE, short_side=64)
    assert tries == [0.5] and children == [0.4]  # each export tried once


def test_a_live_gamma_change_is_exported_while_frames_keep_coming(tiny_clip, heads, monkeypatch):
    reference, engine = engine_pair(tiny_clip, heads)
    exports, in_process = [], []
    original, in_this_process = ExportProcesses.export, onnx_backend.export_graph

    def timed(*args, **kwargs):
        started = time.perf_counter()
        result = original(*args, **kwargs)
        exports.append((started, time.perf_counter(), threading.current_thread().name))
        return result

    monkeypatch.setattr(ExportProcesses, "export", timed)
    monkeypatch.setattr(onnx_backend, "export_graph",
                        lambda *a, **k: in_process.append(a[2]) or in_this_process(*a, **k))
    engine.segment(IMAGE, short_side=64)  # the first graph: made on the first frame (nothing to fall back on)
    stamps = [time.perf_counter()]
    for _ in range(10):
        engine.segment(IMAGE, short_side=64)
        stamps.append(time.perf_counter())
    steady = statistics.median(np.diff(stamps))
    engine.gamma = reference.gamma = 0.35
    changed = len(stamps)
    deadline = time.monotonic() + 600  # a guard against a hang, not a measure
    while len(stamps) == changed or not engine.onnx.wait_prepared(timeout=0) and time.monotonic() < deadline:
        engine.segment(IMAGE, short_side=64)  # the first queues the export of gamma 0.35
        stamps.append(time.perf_counter())
        time.sleep(max(steady, 1 / 30))  # a 30 Hz camera (half the engine's pace where it is slower): the
        # export (lowest priority) gets the rest; at the engine's own pace (1 ms a frame, warm) it starved
    result = engine.segment(IMAGE, short_side=64)
    stamps.append(time.perf_counter())
    gaps = np.diff(stamps[changed - 1:])
    (started, ended, thread), = exports
    assert in_process == [0.2]  # the first graph, on the first frame; gamma 0.35's in a child process
    during = [b - a for a, b in zip(stamps, stamps[1:]) if a >= started and b <= ended]
    print(f"export {ended - started:.2f} s on {thread}; {len(gaps)} frames meanwhile; longest gap "
          f"{gaps.max() * 1e3:.0f} ms; median frame {steady * 1e3:.1f} ms before the change, "
          f"{statistics.median(during) * 1e3:.1f} ms during the export")
    assert thread == "onnx-export" and len(during) >= 3
    assert gaps.max() < (ended - started) / 3  # no frame waited for the export
    assert np.abs(result.probs - reference.segment(IMAGE, short_side=64).probs).max() <= 1e-4  # switched


def running_child(engine) -> object:
    """The export process the engine's background preparation started (a Popen)."""
    return wait_until(lambda: engine.onnx._processes._child, 300, "an export process")


def test_a_killed_export_process_is_reported_and_close_ends_the_one_running(tiny_clip, heads):
    _, engine = engine_pair(tiny_clip, heads)
    engine.segment(IMAGE, short_side=64)
    engine.gamma = 0.45
    engine.segment(IMAGE, short_side=64)
    os.kill(running_child(engine).pid, signal.SIGKILL)  # the out-of-memory killer, or a user's kill -9
    assert engine.onnx.wait_prepared(timeout=300)
    assert "FAILED 64x96 gamma 0.45: RuntimeError: the export process was killed by SIGKILL" in engine.graph_status

    engine.gamma = 0.5
    engine.segment(IMAGE, short_side=64)
    child = running_child(engine)
    engine.close()  # the node's shutdown: the child ends (SIGTERM), its partial file and the tower file go
    assert child.poll() is not None and engine.onnx.wait_prepared(timeout=60)
    assert sorted(path.name for path in cache_dir("onnx").iterdir() if path.name.startswith(".")) == []
    assert len(list(cache_dir("onnx").glob("*.onnx"))) == 1  # gamma 0.2's, still in use
    assert engine.segment(IMAGE, short_side=64).labels.shape == (60, 80)


def test_read_only_caches_fall_back_to_private_folders_and_the_engine_runs(monkeypatch, tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("a file where the user cache should be")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocked))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        engine = build_engine(EngineSettings(device="cpu", clip_model=TINY_MODEL, random_weights=True,
                                             templates="simple", backend="onnxruntime"))
        engine.set_prompts(PROMPTS)
        first = engine.segment(IMAGE, short_side=64)
        engine.gamma = 0.3
        engine.segment(IMAGE, short_side=64)
        assert engine.onnx.wait_prepared(timeout=300)
        engine.segment(IMAGE, short_side=64)
    messages = [str(w.message) for w in caught if "cannot be written" in str(w.message)]
    assert sorted(m.split()[2].rsplit("/", 1)[1] for m in messages) == ["onnx", "text_embeddings"]  # one each
    assert first.labels.shape == (60, 80) and "FAILED" not in engine.graph_status
    assert engine.graph_status.startswith("2 loaded")
