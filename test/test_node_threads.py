"""The node's threads without a ROS graph: vocabulary switching and the short-lived torch threads."""
import itertools
import threading
import time

import pytest

from clip_dinoiser_ros.ros.torch_threads import run_on_short_lived_thread
from clip_dinoiser_ros.ros.vocabulary_switcher import VocabularySwitcher
from ros_harness import wait_until


def encoder_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "vocabulary-encoder"]


class Recorder:
    """An encoder that can be held at a gate, and the switcher's callbacks."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.gate.set()
        self.started = threading.Event()
        self.encoded: list[tuple[str, ...]] = []
        self.ready: list[tuple[int, tuple[str, ...]]] = []
        self.errors: list[tuple[int, str]] = []

    def encode(self, prompts, cancelled):
        self.started.set()
        while not self.gate.wait(0.01):  # a long encoding: cancellable between its batches
            if cancelled():
                raise RuntimeError("cancelled")
        if "boom" in prompts:
            raise ValueError("cannot encode boom")
        self.encoded.append(tuple(prompts))
        return tuple(prompts)

    def switcher(self, versions=None) -> VocabularySwitcher:
        return VocabularySwitcher(
            self.encode,
            lambda version, vocabulary: self.ready.append((version, vocabulary)),
            lambda version, error: self.errors.append((version, str(error))),
            initial=(1, ("floor",)), initial_prompts=["floor"], versions=versions or itertools.count(2),
        )


def test_encoding_thread_exists_only_while_there_is_work():
    recorder = Recorder()
    switcher = recorder.switcher()
    assert encoder_threads() == []
    for prompts in (["wall"], ["door", "window"]):
        version = switcher.request(prompts)
        wait_until(lambda: switcher.active[0] == version and not encoder_threads(), 10, "the encoder to finish")
        assert switcher.active == (version, tuple(prompts))
    assert recorder.ready == [(2, ("wall",)), (3, ("door", "window"))]
    switcher.close()


def test_last_request_wins_and_outdated_results_are_dropped():
    recorder = Recorder()
    recorder.gate.clear()
    switcher = recorder.switcher()
    versions = [switcher.request(["class 0"])]
    assert recorder.started.wait(10)
    versions += [switcher.request([f"class {n}"]) for n in range(1, 4)]
    assert versions == [2, 3, 4, 5]
    assert switcher.active == (1, ("floor",))  # the old vocabulary serves until the new one is ready
    recorder.gate.set()
    wait_until(lambda: not encoder_threads(), 10, "the encoder to finish")
    # 2 was already being encoded when 3, 4 and 5 came: 3 and 4 were replaced, 2 was outdated on arrival.
    assert recorder.encoded == [("class 0",), ("class 3",)]
    assert recorder.ready == [(5, ("class 3",))]
    assert switcher.active == (5, ("class 3",))
    switcher.close()


def test_a_failed_encoding_keeps_the_vocabulary_and_reports_the_version():
    recorder = Recorder()
    switcher = recorder.switcher()
    switcher.request(["boom"])
    wait_until(lambda: not encoder_threads(), 10, "the encoder to finish")
    assert recorder.errors == [(2, "cannot encode boom")]
    assert switcher.active == (1, ("floor",))
    switcher.close()


def test_close_cancels_the_running_encoding_and_starts_no_more():
    recorder = Recorder()
    recorder.gate.clear()  # would encode for 10 s
    switcher = recorder.switcher()
    switcher.request(["wall"])
    assert recorder.started.wait(10)
    started = time.monotonic()
    assert switcher.close(timeout=3.0)
    assert time.monotonic() - started < 1.0
    assert encoder_threads() == []
    assert recorder.errors == []  # a cancellation on close is not a failure to report
    switcher.request(["door"])
    assert encoder_threads() == []
    assert switcher.active == (1, ("floor",))


def test_the_encoder_keeps_serving_after_a_callback_raised():
    recorder = Recorder()
    calls = []

    def ready(version, vocabulary):
        calls.append(version)
        raise KeyError("the owner's bug")

    switcher = VocabularySwitcher(recorder.encode, ready, lambda *_: None, initial=(1, ("floor",)),
                                  initial_prompts=["floor"], versions=itertools.count(2))
    for prompts in (["wall"], ["door"]):
        version = switcher.request(prompts)
        wait_until(lambda: switcher.active[0] == version and not encoder_threads(), 10, "the encoder to finish")
    assert calls == [2, 3] and switcher.active == (3, ("door",))
    switcher.close()


def test_versions_keep_growing_across_switchers_that_share_the_counter():
    versions = itertools.count(2)
    first = Recorder().switcher(versions)
    assert first.request(["wall"]) == 2
    first.close()
    second = Recorder().switcher(versions)  # after cleanup and configure
    assert second.request(["door"]) == 3
    second.close()


def test_short_lived_thread_returns_the_result_and_is_gone():
    seen = {}

    def work():
        seen["thread"] = threading.current_thread()
        return 42

    assert run_on_short_lived_thread(work, "loader") == 42
    assert seen["thread"] is not threading.current_thread()
    assert not seen["thread"].is_alive()


def test_short_lived_thread_reraises_the_error():
    def fail():
        raise FileNotFoundError("weights missing")

    with pytest.raises(FileNotFoundError, match="weights missing"):
        run_on_short_lived_thread(fail, "loader")
