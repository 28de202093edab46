"""Encodes new prompt lists off the frame path and switches the active vocabulary atomically.

Requests carry increasing version numbers, drawn from a counter the owner keeps for the life of the
process (so a version never names two vocabularies, across cleanup and configure too); while one is
being encoded, newer requests replace the waiting one (the last wins, nothing piles up), and a result
that is already outdated is discarded. Asking again for the prompts in effect, with nothing else queued,
changes nothing and keeps their version. The encoding thread exists only while there is something to
encode (see torch_threads); ``close`` cancels an encoding between its batches and waits a bounded time.
"""
from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Callable, Iterator, Optional, Sequence

if TYPE_CHECKING:
    from ..model import Vocabulary

Encoder = Callable[[Sequence[str], Callable[[], bool]], "Vocabulary"]  # (prompts, cancelled) -> vocabulary
CLOSE_TIMEOUT_S = 1.0  # a batch of the text tower takes about that on a 2-core CPU; then it is abandoned
_log = logging.getLogger(__name__)


class VocabularySwitcher:
    def __init__(
        self,
        encode: Encoder,
        on_ready: Callable[[int, Vocabulary], None],
        on_error: Callable[[int, Exception], None],
        initial: tuple[int, Vocabulary],
        initial_prompts: Sequence[str],
        versions: Iterator[int],
    ) -> None:
        self._encode = encode
        self._on_ready = on_ready
        self._on_error = on_error
        self._active = initial
        self._active_prompts = list(initial_prompts)
        self._versions = versions
        self._pending: Optional[tuple[int, list[str]]] = None
        self._encoding: Optional[int] = None  # the version being encoded now
        self._lock = threading.Lock()
        self._closed = False
        self._thread: Optional[threading.Thread] = None

    @property
    def active(self) -> tuple[int, Vocabulary]:
        """(version, vocabulary) now in effect: read once per frame so a frame never mixes two."""
        return self._active

    @property
    def active_prompts(self) -> list[str]:
        """The prompt strings behind the active vocabulary, as they were requested."""
        return list(self._active_prompts)

    @property
    def requested_version(self) -> int:
        """The version that will be in effect once the queued work is done (the active one if none)."""
        with self._lock:
            if self._pending is not None:
                return self._pending[0]
            return self._encoding if self._encoding is not None else self._active[0]

    def request(self, prompts: Sequence[str]) -> int:
        """Queue ``prompts`` (already validated); returns the version they will have."""
        with self._lock:
            if self._pending is None and self._encoding is None and list(prompts) == self._active_prompts:
                return self._active[0]
            version = next(self._versions)
            self._pending = (version, list(prompts))
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(target=self._run, name="vocabulary-encoder", daemon=True)
                self._thread.start()
            return version

    def close(self, timeout: float = CLOSE_TIMEOUT_S) -> bool:
        """Stop encoding (cancelled at the next batch) and forget the encoder; False if it is still running."""
        with self._lock:
            self._closed = True
            self._pending = None
            thread = self._thread
        if thread is not None:
            thread.join(timeout=timeout)
        self._encode = self._on_ready = self._on_error = _closed  # the model and its owner are let go
        return thread is None or not thread.is_alive()

    def _cancelled(self) -> bool:
        return self._closed

    def _run(self) -> None:
        """Encode until nothing is pending, then end (the thread is forgotten under the lock)."""
        while True:
            with self._lock:
                if self._closed or self._pending is None:
                    self._thread = None
                    return
                version, prompts = self._pending
                self._pending = None
                self._encoding = version
            encode, on_ready, on_error = self._encode, self._on_ready, self._on_error
            try:
                vocabulary = encode(prompts, self._cancelled)
            except Exception as error:  # reported, the old vocabulary stays
                with self._lock:
                    self._encoding = None
                if not self._closed:
                    _notify(on_error, version, error)
                continue
            with self._lock:
                self._encoding = None
                if self._closed or self._pending is not None:
                    continue  # a newer request is waiting: this result is already outdated
                self._active = (version, vocabulary)
                self._active_prompts = prompts
            _notify(on_ready, version, vocabulary)


def _notify(callback: Callable[..., None], *args: object) -> None:
    """A callback that raises is logged; the encoder keeps serving the next request."""
    try:
        callback(*args)
    except Exception:  # noqa: BLE001 - the owner's bug must not end vocabulary switching for good
        _log.exception("vocabulary callback failed")


def _closed(*_args: object) -> None:
    raise RuntimeError("the vocabulary switcher is closed")
