"""``clip-dinoiser-demo``: start the node, stream real photos to it, report what comes back.

The node runs in its own process (the installed ``clip_dinoiser_node``) with a params file written to
the output folder; photos from scikit-image's sample data are published as 640x480 rgb8 frames on
/demo_camera/image_raw at a steady rate, each stamped with the time it was sent. For every answered
frame the demo prints the end-to-end latency and the classes covering most of the image, then a
summary, and writes <n>_input.png, <n>_mask.png (palette PNG, pixel = class id) and <n>_overlay.png.

Exit codes: 0 frames were answered and the node stopped cleanly; 1 the node failed, never got ready
or answered nothing; 2 nothing could start (no weights, bad arguments); 130 interrupted (Ctrl-C).

Without --random-weights the CLIP-DINOiser heads (--heads, default ``published``: the paper's checkpoint,
downloaded once into the user cache) and the pretrained CLIP weights are required; with it both are random
and the output is NOT a segmentation result.
"""
from __future__ import annotations

import argparse
import ctypes
import os
import random
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from clip_dinoiser_ros.model.heads_download import PUBLISHED
from clip_dinoiser_ros.visualization import RANDOM_NOTICE, RANDOM_STAMP

NODE_NAME = "clip_dinoiser"
INPUT_TOPIC = "/demo_camera/image_raw"
OUTPUT_PREFIX = "/demo_camera/segmentation"
FRAME_ID = "demo_camera"
FRAME_SIZE = (640, 480)  # width, height
DEFAULT_PROMPTS = ["background", "person", "cat", "cup", "rocket"]
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "motorcycle_left", "camera")
DDS_TRANSPORTS = "SHM?sockets_size=33554432"
NO_HEADS_MESSAGE = (
    "CLIP-DINOiser needs its trained heads: --heads published (the default: the paper's checkpoint from "
    "github.com/wysoczanska/clip_dinoiser, downloaded once), an http(s) URL, or --heads PATH to a local "
    "checkpoints/last.pt"
)
RANDOM_HINT = (
    "The heads (--heads published, the default) are downloaded once into the user cache; with a local copy run:\n"
    "    make demo DEMO_ARGS='--heads /path/to/checkpoints/last.pt'\n"
    "To check the plumbing (node, topics, latency) without weights run:  make demo WEIGHTS=random\n"
    "(or clip-dinoiser-demo --random-weights); its output is NOT a segmentation result."
)
TOP_CLASSES = 3
LOG_TAIL_LINES = 30


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clip-dinoiser-demo",
        description="Run the clip_dinoiser node on a stream of real photos and report latency and classes.",
    )
    parser.add_argument("--random-weights", action="store_true",
                        help="random CLIP and heads: plumbing and timing only, the output means nothing")
    parser.add_argument("--heads", default=PUBLISHED,
                        help="heads checkpoint: 'published' (default: the paper's checkpoints/last.pt, downloaded "
                        "once and cached), an http(s) URL (downloaded once and cached), or a local file")
    parser.add_argument("--clip-model", default="ViT-B-16", help="open_clip model name (default: ViT-B-16)")
    parser.add_argument("--clip-pretrained", default="laion2b_s34b_b88k",
                        help="open_clip pretrained tag or a local weights file")
    parser.add_argument("--prompts", nargs="+", default=DEFAULT_PROMPTS, help="class prompts (class i = label i)")
    parser.add_argument("--frames", type=int, default=10, help="frames to send (default: 10)")
    parser.add_argument("--rate", type=float, default=2.0, help="frames per second sent (default: 2)")
    parser.add_argument("--out", type=Path, default=Path("demo_output"), help="output folder (default: demo_output/)")
    parser.add_argument("--save", type=int, default=5, help="answered frames whose PNGs are written (default: 5)")
    parser.add_argument("--ready-timeout", type=float, default=180.0,
                        help="seconds to wait for the node to load the model and go active (default: 180)")
    parser.add_argument("--drain-timeout", type=float, default=60.0,
                        help="seconds to wait for the last frame's answer after sending (default: 60)")
    return parser


# ---------------------------------------------------------------------------------------------- setup
class SetupError(Exception):
    """Stops the demo before anything starts (exit code 2)."""


def configure_environment() -> dict[str, str]:
    """DDS over shared memory only, a domain of this run's own, offline model hub; before rclpy is imported."""
    os.environ["FASTDDS_BUILTIN_TRANSPORTS"] = DDS_TRANSPORTS
    os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.pop("ROS_AUTOMATIC_DISCOVERY_RANGE", None)  # with SHM only it would deliver nothing
    os.environ.pop("ROS_LOCALHOST_ONLY", None)
    if not os.environ.get("ROS_DOMAIN_ID"):
        os.environ["ROS_DOMAIN_ID"] = str(random.randint(1, 100))
    return dict(os.environ)


def check_arguments(args: argparse.Namespace) -> None:
    if args.frames < 1:
        raise SetupError(f"--frames must be at least 1, got {args.frames}")
    if not args.rate > 0:
        raise SetupError(f"--rate must be positive, got {args.rate}")
    from clip_dinoiser_ros.model.vocabulary import parse_prompts

    try:
        parse_prompts(list(args.prompts))
    except ValueError as error:
        raise SetupError(f"--prompts: {error}") from error
    import open_clip

    from clip_dinoiser_ros.model import clip_loading  # noqa: F401  (registers the package's extra model configs)

    if args.clip_model not in open_clip.list_models():
        raise SetupError(f"--clip-model {args.clip_model!r} is not an open_clip model (see open_clip.list_models())")


def check_weights(args: argparse.Namespace) -> list[str]:
    """What the node would fail on at configure, checked here first; empty when the weights are there."""
    from clip_dinoiser_ros.model import CheckpointError, WeightsUnavailableError
    from clip_dinoiser_ros.model.clip_loading import resolve_pretrained_file
    from clip_dinoiser_ros.model.heads import read_checkpoint

    problems = []
    if not args.heads:
        problems.append(NO_HEADS_MESSAGE)
    else:
        try:
            read_checkpoint(args.heads)  # downloads 'published' or a URL into the cache the node reads
        except CheckpointError as error:
            problems.append(f"--heads: {error}; expected the published checkpoints/last.pt of CLIP-DINOiser")
        except WeightsUnavailableError as error:
            problems.append(f"{error}\n(here: --heads PATH)")
    try:
        resolve_pretrained_file(args.clip_model, args.clip_pretrained)
    except WeightsUnavailableError as error:
        problems.append(f"{error}\n(here: --clip-pretrained PATH)")
    except ValueError as error:  # a tag this model does not have
        problems.append(f"--clip-pretrained: {error}")
    return problems


def load_photos() -> list[tuple[str, np.ndarray]]:
    """scikit-image's sample photos, as 640x480 RGB."""
    import skimage.data
    from PIL import Image

    photos = []
    for name in PHOTOS:
        if name == "motorcycle_left":
            array = skimage.data.stereo_motorcycle()[0]
        else:
            array = getattr(skimage.data, name)()
        image = Image.fromarray(np.asarray(array)).convert("RGB").resize(FRAME_SIZE, Image.Resampling.BILINEAR)
        photos.append((name, np.asarray(image)))
    return photos


# ----------------------------------------------------------------------------------------------- node
def node_executable() -> Path:
    script = Path(sys.executable).parent / "clip_dinoiser_node"
    if not script.exists():
        raise SetupError(f"{script} is missing: run `make install`")
    return script


def _die_with_parent() -> None:
    """In the child: SIGINT when the demo dies, even by SIGKILL (Linux), so no node is left running."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGINT)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class NodeProcess:
    """The node in its own process group (a terminal Ctrl-C reaches the demo, which forwards one SIGINT)."""

    def __init__(self, out: Path, parameters: dict[str, Any], env: dict[str, str]) -> None:
        import yaml

        self.params_file = out / "params.yaml"
        self.params_file.write_text(yaml.safe_dump({NODE_NAME: {"ros__parameters": parameters}}))
        self.log_file = out / "node.log"
        self._log = open(self.log_file, "wb")
        self.process = subprocess.Popen(
            [str(node_executable()), "--ros-args", "--params-file", str(self.params_file)],
            stdout=self._log, stderr=subprocess.STDOUT, env=env,
            process_group=0, preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def tail(self, lines: int = LOG_TAIL_LINES) -> str:
        self._log.flush()
        text = self.log_file.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:]) if text else "(the node wrote nothing)"

    def stop(self, timeout: float = 30.0) -> Optional[int]:
        """SIGINT to this node's PID, then wait; returns the exit status (-9 if it had to be killed)."""
        if self.alive():
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                print(f"the node (pid {self.pid}) did not stop within {timeout:.0f} s of SIGINT: killing it",
                      file=sys.stderr, flush=True)
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode


# ------------------------------------------------------------------------------------------- results
@dataclass
class Frame:
    index: int
    photo: str
    rgb: np.ndarray
    stamp_ns: int
    mask: Any = None
    overlay: Any = None
    confidences: Any = None
    latency_ms: Optional[float] = None
    reported: bool = False


@dataclass
class Results:
    """Frames by stamp, filled by the subscription callbacks (executor thread)."""

    frames: dict[int, Frame] = field(default_factory=dict)
    label_info: Any = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    events: deque = field(default_factory=deque)  # answered frames to report, in arrival order

    def _frame(self, message: Any) -> Optional[Frame]:
        stamp = message.header.stamp
        return self.frames.get(stamp.sec * 1_000_000_000 + stamp.nanosec)

    def on_mask(self, message: Any) -> None:
        received_ns = time.time_ns()
        with self.lock:
            frame = self._frame(message)
            if frame is not None and frame.mask is None:
                frame.mask = message
                frame.latency_ms = (received_ns - frame.stamp_ns) / 1e6
                self._maybe_report(frame)

    def on_confidences(self, message: Any) -> None:
        with self.lock:
            frame = self._frame(message)
            if frame is not None:
                frame.confidences = message
                self._maybe_report(frame)

    def on_overlay(self, message: Any) -> None:
        with self.lock:
            frame = self._frame(message)
            if frame is not None:
                frame.overlay = message

    def on_label_info(self, message: Any) -> None:
        with self.lock:
            self.label_info = message

    def _maybe_report(self, frame: Frame) -> None:
        if frame.mask is not None and frame.confidences is not None and not frame.reported:
            frame.reported = True
            self.events.append(frame)

    def answered(self) -> list[Frame]:
        with self.lock:
            return sorted((f for f in self.frames.values() if f.mask is not None), key=lambda f: f.index)


def top_classes(confidences: Any, count: int = TOP_CLASSES) -> str:
    ranked = sorted(zip(confidences.labels, confidences.coverage), key=lambda item: -item[1])
    return ", ".join(f"{name} {coverage:.0%}" for name, coverage in ranked[:count] if coverage >= 0.005) or "(nothing labelled)"


def report(frame: Frame, random_weights: bool) -> None:
    suffix = "  [random weights]" if random_weights else ""
    print(f"frame {frame.index:3d} ({frame.photo}): latency {frame.latency_ms:7.0f} ms, "
          f"top classes: {top_classes(frame.confidences)}{suffix}", flush=True)


def image_array(message: Any) -> np.ndarray:
    from clip_dinoiser_ros.ros.image_codec import image_to_rgb

    if message.encoding in ("mono8", "mono16"):
        dtype = np.dtype(np.uint8) if message.encoding == "mono8" else np.dtype(">u2" if message.is_bigendian else "<u2")
        rows = np.frombuffer(message.data, dtype=np.uint8).reshape(message.height, message.step)
        pixels = rows[:, : message.width * dtype.itemsize].copy().view(dtype)
        return pixels.reshape(message.height, message.width)
    return image_to_rgb(message, max_pixels=1 << 30)


def save_frame(frame: Frame, out: Path, names: Sequence[str], random_weights: bool) -> list[Path]:
    from PIL import Image

    from clip_dinoiser_ros.visualization import class_palette, draw_stamp

    written = []
    path = out / f"{frame.index}_input.png"
    Image.fromarray(frame.rgb).save(path)
    written.append(path)
    labels = image_array(frame.mask)
    path = out / f"{frame.index}_mask.png"
    if labels.dtype == np.uint8:
        palette = np.zeros((256, 3), np.uint8)  # unlabelled (255) stays black
        palette[: len(names)] = class_palette(len(names))[:256]
        mask = Image.fromarray(labels, mode="L")
        mask.putpalette(palette.tobytes())  # viewers show colours, pixel values stay class ids
    else:
        mask = Image.fromarray(labels.astype(np.uint16))  # more than 255 classes: 16-bit class ids
    mask.save(path)
    written.append(path)
    if frame.overlay is not None:
        picture = image_array(frame.overlay)
        if random_weights:
            picture = draw_stamp(picture, RANDOM_STAMP)
        path = out / f"{frame.index}_overlay.png"
        Image.fromarray(picture).save(path)
        written.append(path)
    return written


# ------------------------------------------------------------------------------------------------ run
class Interrupted(Exception):
    """SIGINT or SIGTERM on the demo."""


def _raise_interrupted(signum: int, _frame: Any) -> None:
    raise Interrupted(signal.Signals(signum).name)


def banner(text: str) -> None:
    line = "!" * (len(text) + 8)
    print(f"{line}\n!!! {text} !!!\n{line}", flush=True)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    env = configure_environment()
    if args.random_weights:
        banner(RANDOM_NOTICE)
    try:
        check_arguments(args)
        if not args.random_weights:
            problems = check_weights(args)
            if problems:
                print("clip-dinoiser-demo cannot run the model: weights are missing.\n", file=sys.stderr)
                for problem in problems:
                    print(f"error: {problem}\n", file=sys.stderr)
                print(RANDOM_HINT, file=sys.stderr, flush=True)
                return 2
        args.out.mkdir(parents=True, exist_ok=True)
        node_executable()
        photos = load_photos()
    except SetupError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    parameters = {
        "image_topics": [INPUT_TOPIC],
        "prompts": list(args.prompts),
        "random_weights": bool(args.random_weights),
        "clip_model": args.clip_model,
        "clip_pretrained": args.clip_pretrained,
        "heads": str(args.heads),
        "input_reliability": "reliable",
    }
    previous = {s: signal.signal(s, _raise_interrupted) for s in (signal.SIGINT, signal.SIGTERM)}
    node = None
    try:
        node = NodeProcess(args.out, parameters, env)
        print(f"started clip_dinoiser_node (pid {node.pid}, ROS_DOMAIN_ID={env['ROS_DOMAIN_ID']}, "
              f"{args.clip_model}, params {node.params_file}, log {node.log_file})", flush=True)
        status = run(args, node, photos)
    except Interrupted as why:
        print(f"\ninterrupted ({why}): stopping the node", file=sys.stderr, flush=True)
        status = 130
    finally:
        if node is not None:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip the wait
            code = node.stop(timeout=30.0)
            if code != 0:
                print(f"the node exited with status {code}; its log ({node.log_file}) ends with:\n{node.tail()}",
                      file=sys.stderr, flush=True)
                if status == 0:
                    status = 1
            else:
                print("node stopped (SIGINT, exit status 0)", flush=True)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if args.random_weights:
        banner(RANDOM_NOTICE)
    return status


def run(args: argparse.Namespace, node: NodeProcess, photos: list[tuple[str, np.ndarray]]) -> int:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header
    from vision_msgs.msg import LabelInfo

    from clip_dinoiser_ros.msg import ClassConfidences
    from clip_dinoiser_ros.ros.image_codec import array_to_image

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
        return stream(args, node, photos, demo, publisher, results, array_to_image, Header)
    finally:
        executor.shutdown(timeout_sec=2.0)
        demo.destroy_node()
        rclpy.try_shutdown(context=context)
        spinner.join(timeout=5.0)


def stream(args, node, photos, demo, publisher, results: Results, array_to_image, Header) -> int:
    from builtin_interfaces.msg import Time

    # ---- wait for the node: vocabulary published (label_info) and our frames' subscriber matched
    print(f"waiting for the node to load {args.clip_model} and go active (up to {args.ready_timeout:.0f} s)...",
          flush=True)
    started = time.monotonic()
    while results.label_info is None or publisher.get_subscription_count() == 0:
        if not node.alive():
            print(f"error: the node exited with status {node.process.returncode} before it was ready; "
                  f"its log ({node.log_file}) ends with:\n{node.tail()}", file=sys.stderr, flush=True)
            return 1
        if time.monotonic() - started > args.ready_timeout:
            print(f"error: the node was not ready after {args.ready_timeout:.0f} s (no label_info on "
                  f"{OUTPUT_PREFIX}/label_info or no subscriber on {INPUT_TOPIC}); its log ({node.log_file}) "
                  f"ends with:\n{node.tail()}", file=sys.stderr, flush=True)
            return 1
        time.sleep(0.1)
    names = [vision_class.class_name for vision_class in results.label_info.class_map]
    print(f"node ready after {time.monotonic() - started:.1f} s; classes: {names}", flush=True)

    # ---- stream at a steady rate; every frame gets a unique stamp (the time it is sent)
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
            return 1
        photo, rgb = photos[index % len(photos)]
        stamp_ns = max(time.time_ns(), last_stamp_ns + 1)
        last_stamp_ns = stamp_ns
        header = Header(stamp=Time(sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000), frame_id=FRAME_ID)
        with results.lock:
            results.frames[stamp_ns] = Frame(index, photo, rgb, stamp_ns)
        publisher.publish(array_to_image(rgb, "rgb8", header))
        next_send += period

    # ---- the newest frame is always processed eventually: wait for it, then for late overlays
    last = results.frames[last_stamp_ns]
    deadline = time.monotonic() + args.drain_timeout
    while last.mask is None and time.monotonic() < deadline and node.alive():
        drain_reports(results, args.random_weights)
        time.sleep(0.05)
    overlay_deadline = time.monotonic() + 2.0
    while time.monotonic() < overlay_deadline and any(f.overlay is None for f in results.answered()):
        time.sleep(0.05)
    drain_reports(results, args.random_weights)
    node_died = not node.alive()
    if node_died:
        print(f"error: the node died (status {node.process.returncode}); its log ends with:\n{node.tail()}",
              file=sys.stderr, flush=True)

    # ---- files and summary
    answered = results.answered()
    written: list[Path] = []
    for frame in answered[: max(args.save, 0)]:
        written += save_frame(frame, args.out, names, args.random_weights)
    summarise(args, results, answered, written)
    return 1 if node_died or not answered else 0


def drain_reports(results: Results, random_weights: bool) -> None:
    while results.events:
        report(results.events.popleft(), random_weights)


def summarise(args: argparse.Namespace, results: Results, answered: list[Frame], written: list[Path]) -> None:
    sent = len(results.frames)
    latencies = [f.latency_ms for f in answered if f.latency_ms is not None]
    dropped = sorted(f.index for f in results.frames.values() if f.mask is None)
    print("\n===== clip-dinoiser-demo summary =====")
    if args.random_weights:
        print(f"!!! {RANDOM_NOTICE} !!!")
    print(f"model: {args.clip_model} ({'random weights' if args.random_weights else args.clip_pretrained}), "
          f"prompts: {list(args.prompts)}")
    print(f"frames sent: {sent} at {args.rate:g} Hz, answered: {len(answered)}, dropped: {len(dropped)}"
          + (f" (frames {dropped})" if dropped else ""))
    if latencies:
        print(f"end-to-end latency: median {statistics.median(latencies):.0f} ms, "
              f"min {min(latencies):.0f} ms, max {max(latencies):.0f} ms")
    else:
        print("end-to-end latency: no frame was answered")
    if written:
        print(f"files: {len(written)} PNGs in {args.out.resolve()}/ (<n>_input.png, <n>_mask.png, <n>_overlay.png"
              f"{'; overlays stamped ' + repr(RANDOM_STAMP) if args.random_weights else ''}), "
              f"node log and params there too")
    else:
        print(f"files: node log and params in {args.out.resolve()}/")
    print("======================================", flush=True)


if __name__ == "__main__":
    sys.exit(main())
