"""The demo's side of DDS: a node of its own that sends the photos and collects what the node answers.

rclpy is imported only here, inside run(), after the demo has set the DDS environment and started the
node process; its own context, without rclpy's signal handlers, leaves Ctrl-C to the demo.
"""
from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path
from typing import Any, Optional

from clip_dinoiser_ros.demo.photos import Photos, save_frame
from clip_dinoiser_ros.demo.results import Frame, Results, drain_reports, summarise
from clip_dinoiser_ros.supervision import NodeProcess

INPUT_TOPIC = "/demo_camera/image_raw"
OUTPUT_PREFIX = "/demo_camera/segmentation"
FRAME_ID = "demo_camera"
OVERLAY_GRACE_S = 2.0  # the overlay of an answered frame may come a little after its mask


def run(args: argparse.Namespace, node: NodeProcess, photos: Photos) -> int:
    """Subscribe to the node's outputs, stream the photos, report; the demo's exit code."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image
    from vision_msgs.msg import LabelInfo

    from clip_dinoiser_ros.msg import ClassConfidences

    context = rclpy.Context()
    rclpy.init(context=context, args=[], signal_handler_options=SignalHandlerOptions.NO)  # Ctrl-C is ours
    demo = rclpy.create_node("clip_dinoiser_demo", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(demo)
    spinner = threading.Thread(target=executor.spin, name="demo-spin", daemon=True)
    results = Results()
    output_qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    label_qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    demo.create_subscription(Image, f"{OUTPUT_PREFIX}/mask", results.on_mask, output_qos)
    demo.create_subscription(Image, f"{OUTPUT_PREFIX}/overlay", results.on_overlay, output_qos)
    demo.create_subscription(ClassConfidences, f"{OUTPUT_PREFIX}/class_confidences", results.on_confidences,
                             output_qos)
    demo.create_subscription(LabelInfo, f"{OUTPUT_PREFIX}/label_info", results.on_label_info, label_qos)
    publisher = demo.create_publisher(
        Image, INPUT_TOPIC, QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)
    )
    spinner.start()
    try:
        return stream(args, node, photos, publisher, results)
    finally:
        executor.shutdown(timeout_sec=2.0)
        demo.destroy_node()
        rclpy.try_shutdown(context=context)
        spinner.join(timeout=5.0)


def stream(args: argparse.Namespace, node: NodeProcess, photos: Photos, publisher: Any,
           results: Results) -> int:
    """Wait for the node, send the frames, wait for the answers, write files and the summary."""
    if not wait_until_ready(args, node, publisher):
        return 1
    last_stamp_ns = send_frames(args, node, photos, publisher, results)
    if last_stamp_ns is None:
        return 1
    wait_for_answers(args, node, results, results.frames[last_stamp_ns])
    node_died = not node.alive()
    if node_died:
        print(f"error: the node died (status {node.process.returncode}); its log ends with:\n{node.tail()}",
              file=sys.stderr, flush=True)
    names = results.class_names()
    answered = results.answered()
    written: list[Path] = []
    for frame in answered[: max(args.save, 0)]:
        written += save_frame(frame, args.out, names, args.random_weights)
    summarise(args, results, answered, written)
    return 1 if node_died or not answered else 0


def wait_until_ready(args: argparse.Namespace, node: NodeProcess, publisher: Any) -> bool:
    """True once the node subscribed to our frames; False (said on stderr) when it died or timed out first."""
    print(f"waiting for the node to load {args.clip_model} and go active (up to {args.ready_timeout:.0f} s)...",
          flush=True)
    started = time.monotonic()
    while publisher.get_subscription_count() == 0:
        if not node.alive():
            print(f"error: the node exited with status {node.process.returncode} before it was ready; "
                  f"its log ({node.log_file}) ends with:\n{node.tail()}", file=sys.stderr, flush=True)
            return False
        if time.monotonic() - started > args.ready_timeout:
            print(f"error: the node was not ready after {args.ready_timeout:.0f} s (no subscriber on "
                  f"{INPUT_TOPIC}); its log ({node.log_file}) ends with:\n{node.tail()}", file=sys.stderr, flush=True)
            return False
        time.sleep(0.1)
    print(f"node ready after {time.monotonic() - started:.1f} s", flush=True)
    return True


def send_frames(args: argparse.Namespace, node: NodeProcess, photos: Photos, publisher: Any,
                results: Results) -> Optional[int]:
    """Publish at a steady rate, each frame stamped with a unique time (when it is sent), reporting answers
    between sends; the last frame's stamp, or None (said on stderr) when the node died."""
    from builtin_interfaces.msg import Time
    from std_msgs.msg import Header

    from clip_dinoiser_ros.pipeline.image_codec import array_to_image

    print(f"streaming {args.frames} frames at {args.rate:g} Hz on {INPUT_TOPIC} "
          f"(the node keeps only the newest frame: frames arriving while it is busy are dropped)", flush=True)
    period = 1.0 / args.rate
    next_send = time.monotonic()
    last_stamp_ns = 0
    for index in range(args.frames):
        while True:
            drain_reports(results, args.random_weights)
            delay = next_send - time.monotonic()
            if delay <= 0:
                break
            time.sleep(min(delay, 0.05))
        if not node.alive():
            print(f"error: the node died (status {node.process.returncode}) while streaming; its log ends "
                  f"with:\n{node.tail()}", file=sys.stderr, flush=True)
            return None
        photo, rgb = photos[index % len(photos)]
        stamp_ns = max(time.time_ns(), last_stamp_ns + 1)
        last_stamp_ns = stamp_ns
        header = Header(stamp=Time(sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000), frame_id=FRAME_ID)
        with results.lock:
            results.frames[stamp_ns] = Frame(index, photo, rgb, stamp_ns)
        publisher.publish(array_to_image(rgb, "rgb8", header))
        next_send += period
    return last_stamp_ns


def wait_for_answers(args: argparse.Namespace, node: NodeProcess, results: Results, last: Frame) -> None:
    """The node always processes the newest frame eventually: wait for its answer, then for late overlays."""
    deadline = time.monotonic() + args.drain_timeout
    while last.mask is None and time.monotonic() < deadline and node.alive():
        drain_reports(results, args.random_weights)
        time.sleep(0.05)
    overlay_deadline = time.monotonic() + OVERLAY_GRACE_S
    while time.monotonic() < overlay_deadline and any(f.overlay is None for f in results.answered()):
        time.sleep(0.05)
    drain_reports(results, args.random_weights)
