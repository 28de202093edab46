"""A depth camera's health as /diagnostics shows it: depth that pairs too late is a warning, not health."""
from diagnostic_msgs.msg import DiagnosticStatus

from clip_dinoiser_ros.ros import depth_health
from clip_dinoiser_ros.ros.depth_health import DepthHealth


def status(health: DepthHealth) -> tuple[bytes, str, dict[str, str]]:
    found = health.status("cam depth", "/cam/depth", "/cam/camera_info", {})
    return found.level, found.message, {value.key: value.value for value in found.values}


def test_depth_that_pairs_after_its_frame_went_alone_says_to_raise_sync_wait_s(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(depth_health.time, "monotonic", lambda: clock[0])
    health = DepthHealth()
    for _ in range(30):  # a slow aligner: every pair comes after its colour frame was segmented alone
        health.on_camera_info()
        health.on_frame(paired=False)
        health.on_pair()
        health.on_late_pair()
        clock[0] += 0.2
    level, message, values = status(health)
    assert level == DiagnosticStatus.WARN and "raise sync_wait_s" in message, message
    assert (values["pairs_made"], values["pairs_late"], values["frames_paired"]) == ("30", "30", "0")

    for _ in range(5):  # sync_wait_s raised: the pairs come in time
        health.on_camera_info()
        health.on_pair()
        health.on_frame(paired=True)
        clock[0] += 0.2
    assert status(health)[0] == DiagnosticStatus.OK


def test_a_camera_whose_depth_never_pairs_warns_after_the_window(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(depth_health.time, "monotonic", lambda: clock[0])
    health = DepthHealth()
    health.on_camera_info()
    health.on_frame(paired=False)
    assert status(health)[0] == DiagnosticStatus.OK  # not yet: the window has not passed
    clock[0] += depth_health.WINDOW_S + 0.1
    health.on_camera_info()
    health.on_frame(paired=False)
    level, message, _ = status(health)
    assert level == DiagnosticStatus.WARN and "no frame segmented with depth from /cam/depth since the activation" in message


def test_a_camera_that_stops_is_not_reported_as_missing_its_camera_info(monkeypatch):
    """Its last frame is segmented a little after its last camera_info came: that gap is no missing camera_info."""
    clock = [100.0]
    monkeypatch.setattr(depth_health.time, "monotonic", lambda: clock[0])
    health = DepthHealth()
    for _ in range(10):
        health.on_camera_info()
        clock[0] += 0.5  # a slow model: the frame is segmented half a second after its camera_info came
        health.on_frame(paired=True)
    clock[0] += depth_health.WINDOW_S - 0.2  # the camera stopped: camera_info is out of the window, the frame not
    assert "camera_info" not in status(health)[1]
    clock[0] += 0.4
    level, message, _ = status(health)
    assert level == DiagnosticStatus.WARN and "no frame segmented with depth" in message, message


def test_frames_without_camera_info_for_a_window_are_reported(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(depth_health.time, "monotonic", lambda: clock[0])
    health = DepthHealth()
    health.on_camera_info()
    for _ in range(30):  # frames keep coming, camera_info stopped
        clock[0] += 0.2
        health.on_frame(paired=False)
    level, message, _ = status(health)
    assert level == DiagnosticStatus.WARN and "no camera_info on /cam/camera_info" in message, message
