"""The per-frame graph run by ONNX Runtime: exported on first use of each input size, cached on disk, run
with the best execution provider present (TensorRT, then CUDA, then the CPU), with the provider read back.

Sessions are few and bounded (an LRU of MAX_SESSIONS). A change of settings (gamma, short side) that needs
graphs not loaded yet is prepared in the background while frames keep the settings in use, then taken on
the first frame after it is ready, as a vocabulary switch is: the export runs in a child process
(onnx_export_process: torch.onnx.export holds the GIL for long stretches, a thread of this process stalled
every frame), a background thread waits for it and loads the session. A failed export is remembered and
reported (``status``), never retried per frame. ``close`` ends an export that is running.
"""
from __future__ import annotations

import json
import threading
import warnings
from collections import OrderedDict, deque
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Hashable, Iterable, Optional

import torch
from torch import nn

from .dense_clip import DenseClipEncoder
from .heads_download import cache_dir, sha256_of
from .onnx_export import OPSET, description_key, export_graph, graph_description
from .onnx_export_process import ExportProcesses
from .onnx_io import run_session
from .onnx_providers import PROVIDER_ORDER, TENSORRT, ProviderOptions, fallback_warning, session_providers
from .user_cache import writable

MAX_SESSIONS = 4  # e.g. two cameras' sizes, each under the settings in use and the ones being prepared
Key = tuple[tuple[int, int], float]  # (input size, gamma)


def best_providers(available: Optional[list[str]] = None) -> list[str]:
    """The execution providers to ask for, best first, of those this onnxruntime build has."""
    if available is None:
        import onnxruntime

        available = onnxruntime.get_available_providers()
    return [provider for provider in PROVIDER_ORDER if provider in available]


class OnnxRuntimeBackend:
    """Sessions per (input size, gamma), made from cached exports; ``run`` takes and gives torch tensors."""

    def __init__(self, encoder: DenseClipEncoder, heads: nn.Module, fingerprint: Callable[[], str],
                 folder: Optional[Path] = None, options: ProviderOptions = ProviderOptions(),
                 providers: Optional[list[str]] = None) -> None:
        try:
            import onnxruntime  # noqa: F401
        except ImportError as error:
            raise RuntimeError("backend 'onnxruntime' needs the onnx extra: pip install 'clip_dinoiser_ros[onnx]' "
                               "(onnxruntime-gpu where CUDA is present)") from error
        self.encoder, self.heads, self._fingerprint = encoder, heads, fingerprint
        self.folder = folder or cache_dir("onnx")
        self.providers = providers or best_providers()
        self.options = options
        self.provider = self.asked  # the provider sessions run on, as the latest one says
        self._sessions: OrderedDict[Key, tuple[Any, str]] = OrderedDict()  # key -> (session, its provider)
        self._failed: dict[Key, str] = {}
        self._queued: set[Key] = set()
        self._current: Optional[Hashable] = None  # the settings frames run with
        self._in_use: set[Key] = set()  # their graphs
        self._warned: set[str] = set()
        self._lock = threading.Lock()  # the tables above
        self._exporting = threading.Lock()  # one export on a thread of this process, or session creation, at a time
        self._idle = threading.Condition(self._lock)
        self._requests: deque[Key] = deque()  # queued keys, in order (under the lock)
        self._worker: Optional[threading.Thread] = None
        self._processes = ExportProcesses(encoder, heads)  # the background exports
        self._report(self._probe())

    @property
    def asked(self) -> str:
        """The provider asked for (the best this onnxruntime build has)."""
        return self.providers[0]

    @property
    def status(self) -> str:
        """For /diagnostics: the graphs loaded, being prepared, and the exports that failed (with why)."""
        with self._lock:
            parts = [f"{len(self._sessions)} loaded" + "".join(
                f", in use {_name(key)}" for key in sorted(self._in_use))]
            if self._queued:
                parts.append("preparing " + ", ".join(_name(key) for key in sorted(self._queued)))
            parts += [f"FAILED {_name(key)}: {why}" for key, why in sorted(self._failed.items())]
        return "; ".join(parts)

    def settle(self, asked: Hashable, keys_of: Callable[[Hashable], set[Key]]) -> Hashable:
        """The settings to run this frame with: ``asked`` when its graphs (``keys_of(asked)``) are loaded;
        else the settings in use while ``asked``'s are prepared in the background; ``asked``, prepared on
        this thread, when nothing is in use (the first frame, a new camera size)."""
        wanted = keys_of(asked)
        with self._lock:
            missing = [key for key in wanted if key not in self._sessions]
            failure = next((self._failed[key] for key in missing if key in self._failed), None)
            current = self._current
            if not missing:
                self._current, self._in_use = asked, wanted
                return asked
            in_use = keys_of(current) if current is not None else set()
            if current != asked and in_use and all(key in self._sessions for key in in_use):
                if failure is None:
                    self._enqueue(missing)
                self._in_use = in_use
                return current
        if failure is not None:
            raise _failure(failure)
        for key in sorted(missing):
            self.session(*key)
        with self._lock:
            self._current, self._in_use = asked, wanted
        return asked

    def run(self, pixels: torch.Tensor, text_embeddings: torch.Tensor, gamma: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) normalised, padded pixels and (S, E) text -> synonym logits and objectness logits."""
        size = (int(pixels.shape[-2]), int(pixels.shape[-1]))
        session, provider = self._loaded(size, gamma)
        patch = self.encoder.patch_size
        return run_session(session, provider, pixels, text_embeddings, (size[0] // patch, size[1] // patch))

    def session(self, size: tuple[int, int], gamma: float) -> Any:
        """The session of this input size and gamma, made (and exported, when not cached) if not loaded."""
        return self._loaded(size, gamma)[0]

    def wait_prepared(self, timeout: Optional[float] = None) -> bool:
        """Block until no background preparation is queued or running; False on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: not self._queued, timeout)

    def close(self) -> None:
        """Drop what is queued and end the export running (its child process): the engine is released."""
        with self._idle:
            self._queued.difference_update(self._requests)
            self._requests.clear()
            self._idle.notify_all()
        self._processes.close()

    def _loaded(self, size: tuple[int, int], gamma: float) -> tuple[Any, str]:
        key = (size, float(gamma))
        with self._lock:
            if key in self._sessions:
                self._sessions.move_to_end(key)
                return self._sessions[key]
            if key in self._failed:
                raise _failure(self._failed[key])
        with self._exporting:
            with self._lock:
                if key in self._sessions:  # made by the background thread meanwhile
                    return self._sessions[key]
            try:
                loaded = self._load(*key)
            except Exception as error:
                with self._lock:
                    self._failed[key] = f"{type(error).__name__}: {error}"
                raise
            self._adopt(key, loaded)
        return loaded

    def _adopt(self, key: Key, loaded: tuple[Any, str]) -> None:
        """Keep the session (evicting the least recently used beyond MAX_SESSIONS) and report its provider."""
        with self._lock:
            self._sessions[key] = loaded
            while len(self._sessions) > MAX_SESSIONS:
                self._sessions.popitem(last=False)
        self._report(loaded[1])

    def _report(self, provider: str) -> None:
        """``provider`` is what runs now; the first time it is not the one asked for, one warning says why."""
        with self._lock:
            self.provider = provider
            warning = fallback_warning(self.asked, provider)
            first = warning is not None and warning not in self._warned
            if first:
                self._warned.add(warning)
        if first:
            warnings.warn(warning, RuntimeWarning, stacklevel=2)

    def _enqueue(self, keys: Iterable[Key]) -> None:
        """Queue ``keys`` for the background thread (called with the lock held)."""
        for key in keys:
            if key not in self._queued:
                self._queued.add(key)
                self._requests.append(key)
        if self._worker is None:
            self._worker = threading.Thread(target=self._prepare_queued, name="onnx-export", daemon=True)
            self._worker.start()

    def _prepare_queued(self) -> None:
        """The background thread: prepares what is queued, then ends (it holds no engine alive when idle)."""
        while True:
            with self._lock:
                if not self._requests:
                    self._worker = None
                    self._processes.release()  # under the lock: a new worker's export cannot start meanwhile
                    return
                key = self._requests.popleft()
            try:  # the export outside _exporting: a new camera's first graph is not held up by it
                self._exported(*key, in_child=True)
                self._loaded(*key)
            except Exception as error:  # reported by status
                with self._lock:
                    self._failed.setdefault(key, f"{type(error).__name__}: {error}")
            with self._idle:
                self._queued.discard(key)
                self._idle.notify_all()

    def _load(self, size: tuple[int, int], gamma: float) -> tuple[Any, str]:
        """A session for the export of (size, gamma) (read from the cache or exported into it) and the
        provider it runs on, as the session says."""
        import onnxruntime

        path, sidecar = self._exported(size, gamma, in_child=False)
        session = onnxruntime.InferenceSession(str(path), providers=self._session_providers(sidecar))
        return session, session.get_providers()[0]

    def _exported(self, size: tuple[int, int], gamma: float, in_child: bool) -> tuple[Path, dict[str, Any]]:
        """The export of (size, gamma) and its sidecar, read from the cache or exported into it, on this
        thread or (``in_child``) in a child process."""
        description = graph_description(self.encoder, gamma, size, self._fingerprint(), OPSET)
        path = self.folder / f"{description_key(description)}.onnx"
        sidecar = self._cached(path, description)
        if sidecar is None and writable(self.folder) != self.folder:  # exported by this process, read-only cache
            path = writable(self.folder) / path.name
            sidecar = self._cached(path, description)
        if sidecar is None and not in_child:
            sidecar = export_graph(self.encoder, self.heads, gamma, size, path, self._fingerprint(), OPSET)
        elif sidecar is None:
            self._processes.export(gamma, size, path, self._fingerprint(), OPSET)
            sidecar = self._cached(path, description)
            if sidecar is None:
                raise RuntimeError(f"the export process ended without writing {path} as described")
        return path, sidecar

    def _session_providers(self, sidecar: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        engines = writable(cache_dir("tensorrt")) if TENSORRT in self.providers else cache_dir("tensorrt")
        return session_providers(self.providers, self.options, engines, bool(sidecar.get("layer_norm_fp32")))

    def _probe(self) -> str:
        """The provider a session gets here, read from one of a one-node graph: what runs_on says before
        the first frame's graph is made (ONNX Runtime falls back silently when libraries are missing)."""
        import onnxruntime
        from onnx import TensorProto, helper

        value = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
        graph = helper.make_graph([helper.make_node("Add", ["x", "x"], ["y"])], "probe", [value],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=7)
        options = replace(self.options, engine_cache=False, timing_cache=False)
        session = onnxruntime.InferenceSession(model.SerializeToString(),
                                               providers=session_providers(self.providers, options, self.folder, False))
        return session.get_providers()[0]

    @staticmethod
    def _cached(path: Path, description: dict[str, Any]) -> Optional[dict[str, Any]]:
        """The sidecar when ``path`` holds the export ``description`` names (its sidecar says so); a stale,
        corrupt or foreign pair is exported again, with a warning."""
        sidecar = path.with_suffix(".json")
        if not path.is_file() or not sidecar.is_file():
            return None
        try:
            recorded = json.loads(sidecar.read_text())
            same = all(recorded.get(name) == value for name, value in description.items())
            why = "its sidecar names other weights, settings or versions"
            if same and recorded.get("onnx_sha256") != sha256_of(path):
                same, why = False, "the file is not the one its sidecar describes (sha256)"
        except (OSError, ValueError, AttributeError) as error:
            same, why = False, f"unreadable sidecar ({error})"
        if not same:
            warnings.warn(f"ONNX cache: ignoring {path}: {why}; exporting again", RuntimeWarning, stacklevel=3)
            return None
        return recorded


def _name(key: Key) -> str:
    (height, width), gamma = key
    return f"{height}x{width} gamma {gamma:g}"


def _failure(why: str) -> RuntimeError:
    return RuntimeError(f"the ONNX graph could not be made (not retried until the next configure): {why}")
