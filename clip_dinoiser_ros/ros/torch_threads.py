"""Which threads run torch CPU work: the inference worker for its lifetime, anything else only briefly.

Every thread that runs a parallel torch CPU op gets an OpenMP (libgomp) thread team that lives as
long as that thread. Once the process holds more team threads than there are cores, libgomp stops
spinning between parallel regions and parks its threads after each one, so every region of every
later frame pays a futex wake-up: on a 2-core machine a frame took about 50 % longer on the worker
while the main thread, which had loaded the model, kept its team. One-off work, loading the model or
encoding a vocabulary, therefore runs on a thread that ends with it and takes its team along.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Callable, TypeVar

T = TypeVar("T")


def run_on_short_lived_thread(function: Callable[[], T], name: str) -> T:
    """``function()`` on a new thread that has ended by the time this returns (or re-raises)."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix=name) as pool:
        return pool.submit(function).result()
