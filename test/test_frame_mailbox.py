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


def test_unpaired_frames_at_30_hz_leave_after_the_hold_of_the_first_one():
    """A depth camera whose depth never pairs: each new colour frame replaces the waiting one, but the hold
    counts from the first unpaired frame, so one leaves within the hold however fast frames come (a fresh
    hold per frame never came due above 1 / hold Hz)."""
    mailbox = FrameMailbox(["a"])
    hold, first_put = 0.1, []
    stop = threading.Event()

    def camera():  # 30 Hz, paced on the monotonic clock
        start = time.monotonic()
        for index in range(1, 10_000):
            if stop.is_set():
                return
            mailbox.put("a", index, key=index, complete=False, hold_s=hold)
            first_put.append(time.monotonic())  # after put: its own clock read came before this one
            time.sleep(max(0.0, start + index / 30.0 - time.monotonic()))

    producer = threading.Thread(target=camera)
    producer.start()
    try:
        frame = take(mailbox, timeout=10.0)
    finally:
        stop.set()
        producer.join()
    assert frame is not None and not frame.complete and frame.message > 1  # newer frames did replace it
    assert frame.ready <= first_put[0] + hold  # the first frame's hold, not the last one's


def test_a_paired_frame_is_not_displaced_by_a_newer_unpaired_one():
    mailbox = FrameMailbox(["a"])
    mailbox.put("a", "paired 1", key=1)
    assert not mailbox.put("a", "alone 2", key=2, complete=False, hold_s=0.1)  # set aside, counted as dropped
    assert mailbox.dropped("a") == 1
    assert mailbox.put("a", "paired 2", key=2)  # its pair came: it is back, and replaces paired 1
    assert mailbox.dropped("a") == 1  # paired 1 is the one lost
    assert take(mailbox, timeout=0.1).message == "paired 2"
    mailbox.put("a", "alone 3", key=3, complete=False, hold_s=0.0)
    assert take(mailbox, timeout=0.1).message == "alone 3"  # nothing paired waits: it goes alone
