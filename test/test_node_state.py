"""State that stays true, checked inside a node instance (this test process) over real DDS.

The node runs on an executor thread of its own, as ``run`` runs it; the probe talks to it like another
process would. In here the tests can see what the outside cannot: which thread creates publishers,
which outputs a frame computed, and an encoder that fails on demand.
"""
import threading

import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image

from node_frames import rgb_message, synthetic_rgb
from ros_harness import answer_to, parameter_client, set_parameter, wait_until

TOPIC = "/state_cam/image_raw"


class SpunNode:
    """A ClipDinoiserNode spun on its own thread; transitions run there too, as services would."""

    def __init__(self, **parameters) -> None:
        from clip_dinoiser_ros.ros.node import ClipDinoiserNode
        from clip_dinoiser_ros.ros.run_node import executor_type

        parameters = {"device": "cpu", **parameters}  # CPU on a CUDA workstation too
        overrides = [Parameter(name, value=value) for name, value in parameters.items()]
        self.node = ClipDinoiserNode(parameter_overrides=overrides)
        self.executor = executor_type()()
        self.executor.add_node(self.node)
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._spin, name="executor", daemon=True)
        self.thread.start()

    def _spin(self) -> None:
        while not self._stop.is_set():
            self.executor.spin_once(timeout_sec=0.05)

    def alive(self) -> bool:
        return self.thread.is_alive()

    def log(self) -> str:
        return "(in this process: see the captured output)"

    def on_executor(self, function):
        task = self.executor.create_task(function)
        wait_until(task.done, 120, f"{function} on the executor")
        return task.result()

    def close(self) -> None:
        self.on_executor(lambda: self.node.on_shutdown(None))
        self._stop.set()
        self.thread.join(10)
        self.executor.shutdown()
        self.node.destroy_node()


@pytest.fixture(scope="module")
def spun(ros):
    from rclpy.lifecycle import TransitionCallbackReturn

    spun = SpunNode(image_topics=[TOPIC], prompts=["road", "car"], clip_model="ViT-Tiny-16-test",
                    random_weights=True)
    assert spun.node.get_name() == "clip_dinoiser"
    assert spun.on_executor(spun.node.trigger_configure) == TransitionCallbackReturn.SUCCESS
    assert spun.on_executor(spun.node.trigger_activate) == TransitionCallbackReturn.SUCCESS
    yield spun
    spun.close()


@pytest.fixture(scope="module")
def parameters(probe, spun):
    return parameter_client(probe, "clip_dinoiser")


def get_parameter(client, name):
    future = client.get_parameters([name])
    wait_until(future.done, 20, "get_parameters answer")
    return list(future.result().values[0].string_array_value)


def serve_a_frame(probe, spun, output="mask"):
    return answer_to(probe, spun, rgb_message(synthetic_rgb(96, 64)), TOPIC, f"/state_cam/segmentation/{output}", Image)


class Spy:
    """Wraps a callable and records (thread id, arguments) of every call."""

    def __init__(self, function) -> None:
        self.function, self.calls = function, []

    def __call__(self, *args, **kwargs):
        self.calls.append((threading.get_ident(), args, kwargs))
        return self.function(*args, **kwargs)


def test_outputs_are_computed_only_for_their_subscribers(spun, probe, monkeypatch):
    from clip_dinoiser_ros.pipeline import messages as outputs

    segment = Spy(spun.node._engine.segment_batch)
    monkeypatch.setattr(spun.node._engine, "segment_batch", segment)
    confidence, overlay, statistics = (Spy(outputs.confidence_image), Spy(outputs.overlay_image),
                                       Spy(outputs.class_statistics))
    monkeypatch.setattr(outputs, "confidence_image", confidence)
    monkeypatch.setattr(outputs, "overlay_image", overlay)
    monkeypatch.setattr(outputs, "class_statistics", statistics)

    serve_a_frame(probe, spun, "mask")
    assert segment.calls and all(kwargs["probs"] is False for _, _, kwargs in segment.calls)
    assert not confidence.calls and not overlay.calls and not statistics.calls

    serve_a_frame(probe, spun, "confidence")
    assert confidence.calls and all(kwargs["probs"] is False for _, _, kwargs in segment.calls)

    segment.calls.clear()
    serve_a_frame(probe, spun, "confidence/road")
    assert segment.calls[-1][2]["probs"] is True  # the K x H x W map only while a per-class topic is subscribed


def test_publishers_are_created_and_destroyed_on_the_executor_thread(spun, probe, parameters, monkeypatch):
    created, destroyed = Spy(spun.node.create_publisher), Spy(spun.node.destroy_publisher)
    monkeypatch.setattr(spun.node, "create_publisher", created)
    monkeypatch.setattr(spun.node, "destroy_publisher", destroyed)
    topics = [f"/state_cam/segmentation/confidence/{token}" for token in ("bus", "tree", "sky")]
    subscriptions = [probe.collect(Image, topic) for topic in topics]  # class publishers exist while subscribed
    published = lambda: sum(probe.node.count_publishers(topic) for topic in topics)  # noqa: E731
    try:
        assert set_parameter(parameters, "prompts", ["bus", "tree", "sky"]).successful
        wait_until(lambda: published() == 3, 30, "the new class topics")
        assert set_parameter(parameters, "prompts", ["road", "car"]).successful
        wait_until(lambda: published() == 0, 30, "the class topics gone with their classes")
    finally:
        for subscription in subscriptions:
            probe.node.destroy_subscription(subscription.subscription)
    assert len(created.calls) >= 3 and len(destroyed.calls) >= 3  # bus, tree, sky in, then out
    assert {thread for thread, _, _ in created.calls + destroyed.calls} == {spun.thread.ident}


def test_a_failed_vocabulary_restores_the_parameter_and_warns_for_a_while(spun, probe, parameters, monkeypatch):
    from clip_dinoiser_ros.ros.diagnostics import WINDOW_S

    assert set_parameter(parameters, "prompts", ["road", "car"]).successful
    wait_until(lambda: spun.node._switcher.active_prompts == ["road", "car"], 30, "road, car in effect")
    encode = spun.node._engine.encode_prompts

    def failing(prompts, cancelled=None, **limits):
        if "boom" in prompts:
            raise RuntimeError("CUDA out of memory (simulated)")
        return encode(prompts, cancelled, **limits)

    monkeypatch.setattr(spun.node._engine, "encode_prompts", failing)
    diagnostics = probe.collect(DiagnosticArray, "/diagnostics")
    assert set_parameter(parameters, "prompts", ["boom", "bang"]).successful  # valid: refused only by the model
    wait_until(lambda: get_parameter(parameters, "prompts") == ["road", "car"], 20, "prompts restored")
    assert spun.node._switcher.active_prompts == ["road", "car"]

    def vocabulary_level():
        arrays = diagnostics.matching(lambda a: any(s.name == "/clip_dinoiser: vocabulary" for s in a.status))
        if not arrays:
            return None
        status = next(s for s in arrays[-1].status if s.name == "/clip_dinoiser: vocabulary")
        return status.level, status.message

    level, message = wait_until(lambda: (v := vocabulary_level()) and v[0] == DiagnosticStatus.WARN and v, 10,
                                "a vocabulary WARN")
    assert "CUDA out of memory (simulated)" in message
    wait_until(lambda: (v := vocabulary_level()) and v[0] == DiagnosticStatus.OK, WINDOW_S + 5, "the WARN cleared")
    assert serve_a_frame(probe, spun).encoding == "mono8"  # and frames are still served



def test_a_single_frame_the_engine_refuses_is_tried_once_and_counted(spun, probe, monkeypatch):
    engine = spun.node._engine
    calls = []

    def refusing_batch(images, **settings):
        calls.append("batch")
        raise ValueError("refused (simulated)")

    def refusing(image, mode, **settings):
        calls.append("alone")
        raise ValueError("refused (simulated)")

    monkeypatch.setattr(engine, "segment_batch", refusing_batch)
    monkeypatch.setattr(engine, "segment", refusing)
    stats = spun.node._activation._cameras[TOPIC].stats
    before = stats.report()
    publisher = probe.node.create_publisher(Image, TOPIC, 10)
    try:
        def counted():
            publisher.publish(rgb_message(synthetic_rgb(96, 64)))
            return stats.report().failed > before.failed

        wait_until(counted, 20, "the refused frame counted as a model failure", interval=0.3)
    finally:
        probe.node.destroy_publisher(publisher)
    assert calls and "alone" not in calls, calls  # whole mode: one batch call per frame, no second try
    after = stats.report()
    assert after.rejected == before.rejected  # the input was fine: not a rejected frame
    assert "refused (simulated)" in after.last_error


def test_a_model_failing_on_every_frame_is_an_error_in_diagnostics_after_five_seconds(spun, probe, monkeypatch):
    """Out of memory on every frame, say: failures are counted apart from rejected inputs, and after
    WINDOW_S of nothing but failures the camera's status is ERROR, naming the error."""
    from clip_dinoiser_ros.ros.diagnostics import WINDOW_S

    def out_of_memory(images, **settings):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory (simulated)")

    monkeypatch.setattr(spun.node._engine, "segment_batch", out_of_memory)
    stats = spun.node._activation._cameras[TOPIC].stats
    rejected = stats.report().rejected
    diagnostics = probe.collect(DiagnosticArray, "/diagnostics")
    publisher = probe.node.create_publisher(Image, TOPIC, 10)
    name = f"/clip_dinoiser: {TOPIC}"

    def camera_level():
        publisher.publish(rgb_message(synthetic_rgb(96, 64)))
        arrays = diagnostics.matching(lambda a: any(s.name == name for s in a.status))
        return arrays and next(s for s in arrays[-1].status if s.name == name)

    try:
        warned = wait_until(lambda: (s := camera_level()) and s.level == DiagnosticStatus.WARN
                            and "failed in the model" in s.message and s, 10, "a WARN")  # not one of silence before
        error = wait_until(lambda: (s := camera_level()) and s.level == DiagnosticStatus.ERROR and s,
                           WINDOW_S + 10, "an ERROR once every frame failed for WINDOW_S", interval=0.2)
    finally:
        probe.node.destroy_publisher(publisher)
        probe.node.destroy_subscription(diagnostics.subscription)
    assert "failed in the model" in warned.message
    assert "every frame failed" in error.message and "can't allocate memory (simulated)" in error.message
    values = {item.key: item.value for item in error.values}
    assert int(values["frames_failed"]) >= 2 and int(values["frames_rejected"]) == rejected
    monkeypatch.undo()
    assert serve_a_frame(probe, spun)  # the worker outlived every failure


TWO = ["/left_cam/image_raw", "/right_cam/image_raw"]


@pytest.fixture(params=["on"])
def two_cameras(ros, request):
    from rclpy.lifecycle import TransitionCallbackReturn

    spun = SpunNode(image_topics=TWO, prompts=["road", "car"], clip_model="ViT-Tiny-16-test", random_weights=True,
                    short_side=32, batch_cameras=request.param)
    assert spun.on_executor(spun.node.trigger_configure) == TransitionCallbackReturn.SUCCESS
    assert spun.on_executor(spun.node.trigger_activate) == TransitionCallbackReturn.SUCCESS
    yield spun
    spun.close()


def send_to_both(probe, spun, width: int = 96):
    """One frame on each camera until both masks come back; the masks' headers."""
    collectors = [probe.collect(Image, topic.replace("image_raw", "segmentation/mask")) for topic in TWO]
    publishers = [probe.node.create_publisher(Image, topic, 10) for topic in TWO]
    messages = [rgb_message(synthetic_rgb(width, 64, seed=index)) for index in range(2)]
    try:
        def answered():
            for publisher, message in zip(publishers, messages):
                publisher.publish(message)
            return all(c.matching(lambda m, h=msg.header: m.header == h) for c, msg in zip(collectors, messages))

        wait_until(answered, 30, "masks for both cameras", interval=0.3)
    finally:
        for collector, publisher in zip(collectors, publishers):
            probe.node.destroy_subscription(collector.subscription)
            probe.node.destroy_publisher(publisher)


@pytest.mark.parametrize("two_cameras, shared", [("on", True), ("auto", False)], indirect=["two_cameras"])
def test_frames_waiting_on_several_cameras_share_one_pass(two_cameras, shared, probe, monkeypatch):
    """on: one pass for both; auto on the CPU: one camera at a time (batching measured no faster there)."""
    engine = two_cameras.node._engine
    batches = []

    def slow_batch(images, **settings):  # a slow model: both cameras' next frames wait meanwhile
        batches.append(len(images))
        threading.Event().wait(0.3)
        return original(images, **settings)

    original = engine.segment_batch
    monkeypatch.setattr(engine, "segment_batch", slow_batch)
    send_to_both(probe, two_cameras)
    assert (2 in batches) == shared and max(batches) <= 2


def test_a_frame_the_engine_refuses_does_not_cost_the_other_cameras_frame(two_cameras, probe, monkeypatch):
    engine = two_cameras.node._engine
    original = engine.segment_batch

    def refusing_batch(images, **settings):
        threading.Event().wait(0.3)  # slow: from the second pass on, both cameras' frames wait together
        if len(images) > 1:
            raise ValueError("one of these frames is refused (simulated)")
        if images[0].shape[1] == 97:
            raise ValueError("97 pixels wide is refused (simulated)")
        return original(images, **settings)

    def refusing(image, mode, **settings):
        return refusing_batch([image], **settings)[0]

    monkeypatch.setattr(engine, "segment_batch", refusing_batch)
    monkeypatch.setattr(engine, "segment", refusing)
    send_to_both(probe, two_cameras)  # both served, in a batch or alone
    left = probe.collect(Image, "/left_cam/segmentation/mask")
    right = two_cameras.node._activation._cameras[TWO[1]]
    publishers = [probe.node.create_publisher(Image, topic, 10) for topic in TWO]
    try:
        def refused_and_served():
            publishers[0].publish(rgb_message(synthetic_rgb(96, 64)))
            publishers[1].publish(rgb_message(synthetic_rgb(97, 64)))
            return left.messages and right.stats.report().failed > 0

        wait_until(refused_and_served, 30, "the left frame served, the right one a model failure", interval=0.3)
    finally:
        probe.node.destroy_subscription(left.subscription)
        for publisher in publishers:
            probe.node.destroy_publisher(publisher)


def test_cleanup_lets_the_model_go_and_on_error_cleans_up_from_active(ros, probe):
    """After cleanup nothing holds the engine; a transition that raises lands in on_error, which frees
    everything and leaves the node unconfigured (configurable again)."""
    import gc
    import weakref

    from rclpy.lifecycle import TransitionCallbackReturn

    camera = "/release_cam/image_raw"
    spun = SpunNode(image_topics=[camera], prompts=["road", "car"], clip_model="ViT-Tiny-16-test", random_weights=True)
    try:
        assert spun.on_executor(spun.node.trigger_configure) == TransitionCallbackReturn.SUCCESS
        assert spun.on_executor(spun.node.trigger_activate) == TransitionCallbackReturn.SUCCESS
        answer_to(probe, spun, rgb_message(synthetic_rgb(96, 64)), camera, "/release_cam/segmentation/mask", Image)
        engine = weakref.ref(spun.node._engine)
        assert spun.on_executor(spun.node.trigger_deactivate) == TransitionCallbackReturn.SUCCESS
        assert spun.on_executor(spun.node.trigger_cleanup) == TransitionCallbackReturn.SUCCESS
        gc.collect()
        assert engine() is None, gc.get_referrers(engine())

        assert spun.on_executor(spun.node.trigger_configure) == TransitionCallbackReturn.SUCCESS
        assert spun.on_executor(spun.node.trigger_activate) == TransitionCallbackReturn.SUCCESS
        engine = weakref.ref(spun.node._engine)
        activation = spun.node._activation

        stop, calls = activation.stop, []

        def failing_once(*args):
            calls.append(args)
            if len(calls) == 1:
                raise RuntimeError("stop failed (simulated)")
            return stop(*args)

        activation.stop = failing_once
        spun.on_executor(spun.node.trigger_deactivate)  # raises inside: rclpy runs on_error
        assert spun.node._state_machine.current_state[1] == "unconfigured" and len(calls) == 2
        del activation, stop, failing_once
        gc.collect()
        assert spun.node._engine is None and spun.node._activation is None and engine() is None
        wait_until(lambda: probe.node.count_subscribers(camera) == 0, 10, "the input subscription gone")
        assert spun.on_executor(spun.node.trigger_configure) == TransitionCallbackReturn.SUCCESS
    finally:
        spun.close()
