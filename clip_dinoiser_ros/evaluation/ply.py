"""The vertices of a PLY file (ASCII or binary, either byte order): labelled point clouds as datasets ship them,
e.g. ScanNet's ``*_vh_clean_2.labels.ply`` (x y z, colour, ``label``), without a point-cloud library.

The vertices must be the first element; faces and other elements after them are not read.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Union

import numpy as np

PLY_TYPES = {"char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2",
             "ushort": "u2", "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
             "float": "f4", "float32": "f4", "double": "f8", "float64": "f8"}
BYTE_ORDERS = {"binary_little_endian": "<", "binary_big_endian": ">"}


def read_ply_vertices(path: Union[str, Path]) -> dict[str, np.ndarray]:
    """Each vertex property by name, (N,) arrays in the file's types (float64 for ASCII files); ValueError saying
    what is wrong."""
    with open(path, "rb") as source:
        if source.readline().rstrip(b"\r\n") != b"ply":
            raise ValueError(f"{path}: not a PLY file (its first line is not 'ply')")
        form, elements = read_header(source, path)
        if not elements or elements[0][0] != "vertex":
            raise ValueError(f"{path}: the vertices must be the first element, got {[e[0] for e in elements]}")
        _, count, properties = elements[0]
        if any(kind is None for _, kind in properties):
            raise ValueError(f"{path}: vertex list properties are not supported")
        if count == 0:
            return {name: np.zeros(0) for name, _ in properties}
        if form == "ascii":
            return ascii_vertices(source, count, properties, path)
        vertex = np.dtype([(name, BYTE_ORDERS[form] + kind) for name, kind in properties])
        body = source.read(count * vertex.itemsize)
    if len(body) < count * vertex.itemsize:
        raise ValueError(f"{path}: truncated: {len(body)} bytes for {count} vertices of {vertex.itemsize}")
    data = np.frombuffer(body, vertex, count)
    return {name: data[name] for name, _ in properties}


def ascii_vertices(source: io.BufferedReader, count: int, properties: list, path: Union[str, Path]
                   ) -> dict[str, np.ndarray]:
    """The next ``count`` lines, one vertex each, as float64 columns."""
    try:
        rows = np.loadtxt(source, max_rows=count, ndmin=2)
    except ValueError as error:
        raise ValueError(f"{path}: bad vertex line: {error}") from error
    if rows.shape != (count, len(properties)):
        raise ValueError(f"{path}: {rows.shape[0]} vertex lines of {rows.shape[1]} values, the header says "
                         f"{count} of {len(properties)}")
    return {name: rows[:, column] for column, (name, _) in enumerate(properties)}


def read_header(source: io.BufferedReader, path: Union[str, Path]) -> tuple[str, list]:
    """The format and the elements: (name, count, [(property, numpy type, or None for a list)])."""
    form, elements = "", []
    for line in source:
        words = line.decode("ascii", errors="replace").split()
        if not words or words[0] in ("comment", "obj_info"):
            continue
        if words[0] == "end_header":
            if form not in ("ascii", *BYTE_ORDERS):
                raise ValueError(f"{path}: PLY format {form or 'missing'} is not ascii or binary")
            return form, elements
        try:
            if words[0] == "format":
                form = words[1]
            elif words[0] == "element":
                elements.append((words[1], int(words[2]), []))
                if elements[-1][1] < 0:
                    raise ValueError("a negative count")
            elif words[0] == "property":
                elements[-1][2].append((words[4], None) if words[1] == "list" else (words[2], PLY_TYPES[words[1]]))
        except (IndexError, KeyError, ValueError) as error:
            raise ValueError(f"{path}: bad PLY header line {line.strip()!r}") from error
    raise ValueError(f"{path}: the PLY header has no end_header")
