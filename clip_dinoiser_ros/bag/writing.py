"""Writing rosbag2 files that are valid up to their last message, or are not there at all.

rosbag2 writes its metadata.yaml (and mcap its summary) on close, so the writer is closed at the end of
a run and on Ctrl-C (the bag then holds everything up to the last message written). A run that fails
removes its bag; one killed outright leaves a folder without metadata.yaml, which no reader takes.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Optional

from rclpy.serialization import serialize_message
from rosbags.rosbag2 import StoragePlugin, Writer, WriterError
from rosbags.interfaces import Connection

from .errors import BagError
from .typestore import message_type_name, ros2_typestore

STORAGES = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
BAG_VERSION = 9  # rosbag2's metadata version since Jazzy


def prepare_output(out: Path, overwrite: bool) -> None:
    """Refuse an existing output unless asked, before any slow work starts."""
    if out.exists() and not overwrite:
        raise BagError(f"{out} exists: choose another --out or pass --overwrite")
    if not out.parent.is_dir():
        raise BagError(f"{out.parent}: no such folder for --out")


class BagWriter:
    """Messages in, a rosbag2 folder out; connections are created on a topic's first message."""

    def __init__(self, out: Path, storage: str = "mcap", overwrite: bool = False) -> None:
        prepare_output(out, overwrite)
        if out.is_dir():
            shutil.rmtree(out)
        elif out.exists():
            out.unlink()
        self.out = out
        self._writer = Writer(out, version=BAG_VERSION, storage_plugin=STORAGES[storage])
        self._connections: dict[tuple[str, str], Connection] = {}
        self._copies: dict[tuple, Connection] = {}  # copies of the input's connections (add_copy)
        self.messages = 0

    def __enter__(self) -> BagWriter:
        try:
            self._writer.open()
        except WriterError as error:
            raise BagError(f"cannot write {self.out}: {error}") from error
        return self

    def __exit__(self, kind: Optional[type], error: Optional[BaseException], _: Any) -> None:
        """Keep the bag on success and on Ctrl-C; remove it when the run failed."""
        if kind is None or issubclass(kind, KeyboardInterrupt):
            self._writer.close()
        else:
            shutil.rmtree(self.out, ignore_errors=True)

    def write(self, topic: str, message: Any, timestamp: int) -> None:
        """An rclpy message, serialised as the live node would publish it."""
        self.write_serialized(topic, message_type_name(type(message)), serialize_message(message), timestamp)

    def write_serialized(self, topic: str, msgtype: str, data: bytes, timestamp: int) -> None:
        key = (topic, msgtype)
        connection = self._connections.get(key)
        if connection is None:
            try:
                connection = self._writer.add_connection(topic, msgtype, typestore=ros2_typestore())
            except (KeyError, WriterError) as error:
                raise BagError(f"cannot record {topic}: no definition of {msgtype} here ({error})") from error
            self._connections[key] = connection
        self._writer.write(connection, timestamp, data)
        self.messages += 1

    def add_copy(self, connection: Connection) -> Connection:
        """The output connection copying ``connection`` of a rosbag2 input: its type, definition, type hash,
        serialisation format and offered QoS as recorded, so any type is kept whether or not a class exists
        for it. A BagError for an old bag that records no definition of a type unknown here."""
        ext = connection.ext
        key = (connection.topic, connection.msgtype, connection.msgdef, connection.digest, ext.serialization_format,
               repr(ext.offered_qos_profiles))  # connections alike in all of these are one in the output
        copied = self._copies.get(key)
        if copied is None:
            try:
                copied = self._writer.add_connection(
                    connection.topic, connection.msgtype, msgdef=connection.msgdef.data or None,
                    rihs01=connection.digest or None, typestore=ros2_typestore(),
                    serialization_format=ext.serialization_format, offered_qos_profiles=ext.offered_qos_profiles)
            except (KeyError, WriterError) as error:
                raise BagError(f"{connection.topic}: the bag records no definition of {connection.msgtype} and "
                               f"none is known here ({error})") from error
            self._copies[key] = copied
        return copied

    def copy(self, connection: Connection, timestamp: int, data: bytes) -> None:
        """A rosbag2 record written as it is, byte for byte, on the copy of its connection (``add_copy``)."""
        self._writer.write(self.add_copy(connection), timestamp, data)
        self.messages += 1
