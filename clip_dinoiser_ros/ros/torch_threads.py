"""Which threads run torch CPU work: the inference worker for its lifetime, anything else only briefly.

Every thread that runs a parallel torch CPU op gets an OpenMP (libgomp) thread team that lives as
long as that thread. Once the process holds more team threads than there are cores, libgomp stops
spinning between parallel regions and parks its threads after each one, so every region of every
later frame pays a futex wake-up: on a 2-core machine a frame took about 50 % longer on the worker
while the main thread, which had loaded the model, kept its team. One-off work, loading the model or
encoding a vocabulary, therefore runs on a thread that ends with it and takes its team along.
"""
from __future__ import annotations

import threading
from typing import Callable, Optional, TypeVar

T = TypeVar("T")
POLL_S = 0.1


class Interrupted(Exception):
    """The caller stopped waiting (Ctrl-C during start-up); the work goes on, unreferenced, and is dropped."""


def run_on_short_lived_thread(function: Callable[[], T], name: str,
                              interrupted: Optional[Callable[[], bool]] = None) -> T:
    """``function()`` on a new thread that has ended by the time this returns (or re-raises).

    When ``interrupted()`` turns true first, raises Interrupted at once: loading a model cannot be
    stopped halfway, but a process asked to stop must not wait for it. The thread is a daemon so it
    never holds the process open.
    """
    outcome: dict[str, object] = {}

    def target() -> None:
        try:
            outcome["value"] = function()
        except BaseException as error:  # noqa: BLE001 - handed to the waiting caller
            outcome["error"] = error

    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(POLL_S if interrupted is not None else None)
        if interrupted is not None and interrupted() and thread.is_alive():
            raise Interrupted(f"stopped waiting for {name}")
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["value"]  # type: ignore[return-value]
