"""The latest-frame mailbox: newest frame wins, cameras take turns, the rate limit counts on its clock."""
import threading
import time

from clip_dinoiser_ros.ros.frame_mailbox import FrameMailbox


def take(mailbox, **options):
    """The worker's one-camera-at-a-time take: the frame, or None on timeout."""
    frames = mailbox.take_one(**options)
    return frames[0] if frames else None


class FakeClock:
    """ROS time under use_sim_time: it moves only when /clock says so."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_a_new_frame_replaces_the_waiting_one_and_is_counted_as_dropped():
    mailbox = FrameMailbox(["a"])
    mailbox.put("a", 1)
    mailbox.put("a", 2)
    assert take(mailbox, timeout=0.1).message == 2 and mailbox.dropped("a") == 1
    assert take(mailbox, timeout=0.05) is None


def test_cameras_take_turns():
    mailbox = FrameMailbox(["a", "b"])
    for _ in range(2):
        mailbox.put("a", "a")
        mailbox.put("b", "b")
        assert [take(mailbox, timeout=0.1).camera for _ in range(2)] in (["a", "b"], ["b", "a"])


def test_the_rate_limit_counts_on_the_given_clock_not_on_wall_time():
    clock = FakeClock(100.0)
    mailbox = FrameMailbox(["a"], clock=clock)
    mailbox.put("a", 1)
    assert take(mailbox, min_interval=0.2, timeout=0.1).message == 1
    mailbox.put("a", 2)
    started = time.monotonic()
    assert take(mailbox, min_interval=0.2, timeout=0.3) is None  # 0.3 s of wall time, no bag time
    assert time.monotonic() - started >= 0.3
    taken = []
    waiter = threading.Thread(target=lambda: taken.append(take(mailbox, min_interval=0.2, timeout=5.0)))
    waiter.start()
    time.sleep(0.1)
    clock.now = 100.25  # /clock moves on: the frame is due, and the waiting worker notices
    waiter.join(2.0)
    assert [frame.message for frame in taken] == [2]


def test_a_clock_that_goes_back_makes_the_next_frame_due():
    """A bag played again from its start sends /clock back; frames must not wait for the old time."""
    clock = FakeClock(103.0)
    mailbox = FrameMailbox(["a"], clock=clock)
    mailbox.put("a", 1)
    assert take(mailbox, min_interval=0.2, timeout=0.1).message == 1
    clock.now = 100.0
    mailbox.put("a", 2)
    assert take(mailbox, min_interval=0.2, timeout=0.1).message == 2
