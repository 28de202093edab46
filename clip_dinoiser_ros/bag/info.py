"""``info``: what a bag holds, the ``ros2 bag info`` this tool's users lack."""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from .reading import open_bag


def describe_bag(path: Path) -> str:
    with open_bag(path) as reader:
        counts: dict[str, int] = defaultdict(int)
        types = {}
        for connection in reader.connections:
            counts[connection.topic] += connection.msgcount
            types[connection.topic] = connection.msgtype
        duration = reader.duration / 1e9 if reader.message_count else 0.0
        lines = [
            f"bag:       {path}",
            f"messages:  {reader.message_count}",
            f"duration:  {duration:.3f} s",
            f"start:     {reader.start_time / 1e9:.3f} s" if reader.message_count else "start:     -",
            "",
        ]
        width = max([len("topic"), *map(len, types)])
        kind = max([len("type"), *map(len, types.values())])
        lines.append(f"{'topic':<{width}}  {'type':<{kind}}  {'count':>7}  {'rate Hz':>9}")
        for topic in sorted(types):
            rate = f"{(counts[topic] - 1) / duration:.2f}" if duration > 0 and counts[topic] > 1 else "-"
            lines.append(f"{topic:<{width}}  {types[topic]:<{kind}}  {counts[topic]:>7}  {rate:>9}")
        return "\n".join(lines)
