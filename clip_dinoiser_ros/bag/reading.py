"""Opening bags and walking their camera frames, with errors that say what is wrong and what exists."""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rosbags.highlevel import AnyReader, AnyReaderError

from ..pipeline.image_codec import ImageDecodeError, compressed_to_rgb, image_to_rgb
from .errors import BagError
from .typestore import ros2_typestore

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
IMAGE_TYPES = (IMAGE, COMPRESSED_IMAGE)
MAX_PIXELS = 1 << 30


@dataclass(frozen=True)
class BagMessage:
    topic: str
    msgtype: str
    timestamp: int  # receive (log) time in ns, as recorded
    message: Any  # rosbags' deserialised message
    raw: bytes  # as stored: CDR in rosbag2, ROS 1 serialisation in ROS 1 bags


@contextmanager
def open_bag(path: Path) -> Iterator[AnyReader]:
    """``with open_bag(path) as reader``: a ROS 1 ``.bag`` or a rosbag2 folder (sqlite3 or mcap), closed after."""
    if not path.exists():
        raise BagError(f"{path}: no such bag (a ROS 1 .bag file or a rosbag2 folder)")
    try:
        reader = AnyReader([path], default_typestore=ros2_typestore())
        reader.open()
    except (AnyReaderError, OSError, ValueError, KeyError) as error:
        raise BagError(f"{path}: not a readable bag: {error}") from error
    try:
        yield reader
    finally:
        reader.close()


def topic_types(reader: AnyReader) -> dict[str, str]:
    return {connection.topic: connection.msgtype for connection in reader.connections}


def check_topics(reader: AnyReader, topics: Sequence[str], accepted: Sequence[str] = IMAGE_TYPES) -> None:
    """Every requested topic exists and has an accepted type; the error lists what the bag does hold."""
    types = topic_types(reader)
    for topic in topics:
        if topic not in types:
            candidates = [t for t, msgtype in types.items() if msgtype in accepted]
            raise BagError(f"topic {topic} is not in the bag; its {' or '.join(accepted)} topics: "
                           f"{', '.join(sorted(candidates)) or 'none'}")
        if types[topic] not in accepted:
            raise BagError(f"topic {topic} holds {types[topic]}, not {' or '.join(accepted)}")


def messages(reader: AnyReader, topics: Sequence[str]) -> Iterator[BagMessage]:
    """The topics' messages in recorded order; a message that cannot be read or decoded is a BagError."""
    for connection, timestamp, raw in records(reader, topics):
        yield decode(reader, connection, timestamp, raw)


def decode(reader: AnyReader, connection: Any, timestamp: int, raw: bytes) -> BagMessage:
    """One record of ``records`` deserialised; a BagError when it cannot be."""
    try:
        message = reader.deserialize(raw, connection.msgtype)
    except Exception as error:  # rosbags raises several kinds for a damaged record
        raise BagError(f"{connection.topic} at {timestamp} ns: cannot decode the message: {error}") from error
    return BagMessage(connection.topic, connection.msgtype, timestamp, message, raw)


def records(reader: AnyReader, topics: Sequence[str]) -> Iterator[tuple[Any, int, bytes]]:
    """The topics' (connection, log time, raw bytes) in recorded order, undecoded: copying needs no type;
    rosbags' errors for a damaged file (several kinds, storage by storage) as a BagError."""
    connections = [c for c in reader.connections if c.topic in topics]
    records = reader.messages(connections=connections)
    last = None
    while True:
        try:
            record = next(records)
        except StopIteration:
            return
        except Exception as error:
            where = f"after {last} ns" if last is not None else "at its first message"
            raise BagError(f"{reader.paths[0]}: cannot read on {where}: {type(error).__name__}: {error}") from error
        last = record[1]
        yield record


def is_rosbag2(reader: AnyReader) -> bool:
    """Its messages are ROS 2 CDR already, to be copied as they are."""
    return bool(reader.is2)


def to_rgb(item: BagMessage) -> np.ndarray:
    """The same decoding as the live node (every encoding it takes, JPEG/PNG included), writable for torch."""
    decode = compressed_to_rgb if item.msgtype == COMPRESSED_IMAGE else image_to_rgb
    try:
        return np.require(decode(item.message, MAX_PIXELS), requirements="W")
    except ImageDecodeError as error:
        raise BagError(f"{item.topic} at {item.timestamp} ns: {error}") from error


def mono_labels(item: BagMessage) -> np.ndarray:
    """A mono8/mono16 label image (ground truth or a recorded mask) as a 2-D integer array."""
    message = item.message
    dtypes = {"mono8": np.uint8, "8UC1": np.uint8, "mono16": np.uint16, "16UC1": np.uint16}
    if item.msgtype != IMAGE or message.encoding not in dtypes:
        raise BagError(f"{item.topic}: labels must be mono8 or mono16 sensor_msgs/Image, "
                       f"not {getattr(message, 'encoding', item.msgtype)}")
    dtype = np.dtype(dtypes[message.encoding]).newbyteorder(">" if message.is_bigendian else "<")
    rows = np.frombuffer(message.data, dtype=np.uint8, count=message.height * message.step)
    rows = rows.reshape(message.height, message.step)[:, : message.width * dtype.itemsize]
    return np.ascontiguousarray(rows).view(dtype).astype(dtype.newbyteorder("="))
