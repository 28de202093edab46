"""Encodes new prompt lists off the frame path and switches the active vocabulary atomically.

Requests carry increasing version numbers; while one is being encoded, newer requests replace the
waiting one (the last wins, nothing piles up), and a result that is already outdated is discarded.
The encoding thread exists only while there is something to encode (see torch_threads).
"""
from __future__ import annotations

import threading
from typing import Callable, Optional, Sequence

from ..model import Vocabulary

Encoder = Callable[[Sequence[str]], Vocabulary]


class VocabularySwitcher:
    def __init__(
        self,
        encode: Encoder,
        on_ready: Callable[[int, Vocabulary], None],
        on_error: Callable[[int, Exception], None],
        initial: tuple[int, Vocabulary],
    ) -> None:
        self._encode = encode
        self._on_ready = on_ready
        self._on_error = on_error
        self._active = initial
        self._requested_version = initial[0]
        self._pending: Optional[tuple[int, list[str]]] = None
        self._lock = threading.Lock()
        self._closed = False
        self._thread: Optional[threading.Thread] = None

    @property
    def active(self) -> tuple[int, Vocabulary]:
        """(version, vocabulary) now in effect: read once per frame so a frame never mixes two."""
        return self._active

    @property
    def requested_version(self) -> int:
        """The version of the newest accepted request (in effect once encoded)."""
        return self._requested_version

    def request(self, prompts: Sequence[str]) -> int:
        """Queue ``prompts`` (already validated); returns the version they will have."""
        with self._lock:
            self._requested_version += 1
            self._pending = (self._requested_version, list(prompts))
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(target=self._run, name="vocabulary-encoder", daemon=True)
                self._thread.start()
            return self._requested_version

    def close(self) -> None:
        with self._lock:
            self._closed = True
            thread = self._thread
        if thread is not None:
            thread.join(timeout=30)

    def _run(self) -> None:
        """Encode until nothing is pending, then end (the thread is forgotten under the lock)."""
        while True:
            with self._lock:
                if self._closed or self._pending is None:
                    self._thread = None
                    return
                version, prompts = self._pending
                self._pending = None
            try:
                vocabulary = self._encode(prompts)
            except Exception as error:  # reported, the old vocabulary stays
                self._on_error(version, error)
                continue
            with self._lock:
                if self._closed or (self._pending is not None and self._pending[0] > version):
                    continue
                self._active = (version, vocabulary)
            self._on_ready(version, vocabulary)
