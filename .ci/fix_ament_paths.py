#!/usr/bin/env python3
"""Point the ROS wheels' exported CMake files at this Python's include directories.

The `ros-*` wheels from PyPI were built in a manylinux image whose Python lived in
/opt/python/cp311-cp311. Their exported `*__rosidl_generator_pyExport.cmake` files still name
that image's Python and numpy include directories, which do not exist here, so CMake refuses to
configure any package that depends on them (e.g. our messages, which depend on std_msgs).

This script rewrites those include paths to the running interpreter's (run it with the venv's
python). It is idempotent: it replaces only the foreign prefix, and running it again finds nothing.

Usage: python fix_ament_paths.py PREFIX      (PREFIX: the venv / install prefix, holds share/)
"""
import sys
import sysconfig
from pathlib import Path

import numpy

FOREIGN_PYTHON_ROOT = "/opt/python/cp311-cp311"
FOREIGN_INCLUDES = {
    f"{FOREIGN_PYTHON_ROOT}/include/python3.11": sysconfig.get_paths()["include"],
    f"{FOREIGN_PYTHON_ROOT}/lib/python3.11/site-packages/numpy/_core/include": numpy.get_include(),
}


def main(argv):
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    share = Path(argv[1]) / "share"
    if not share.is_dir():
        print(f"fix_ament_paths: {share} does not exist", file=sys.stderr)
        return 1
    for new in FOREIGN_INCLUDES.values():
        if not Path(new).is_dir():
            print(f"fix_ament_paths: include directory {new} does not exist", file=sys.stderr)
            return 1
    changed = 0
    for path in sorted(share.glob("*/cmake/*.cmake")):
        text = path.read_text()
        if FOREIGN_PYTHON_ROOT not in text:
            continue
        new_text = text
        for old, new in FOREIGN_INCLUDES.items():
            new_text = new_text.replace(old, new)
        if FOREIGN_PYTHON_ROOT in new_text:
            leftover = [line.strip() for line in new_text.splitlines() if FOREIGN_PYTHON_ROOT in line]
            print(f"fix_ament_paths: {path} still names {FOREIGN_PYTHON_ROOT}:", file=sys.stderr)
            for line in leftover:
                print(f"    {line}", file=sys.stderr)
            return 1
        path.write_text(new_text)
        changed += 1
    print(f"fix_ament_paths: rewrote {changed} CMake file(s) under {share}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
