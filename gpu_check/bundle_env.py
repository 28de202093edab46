"""What the GPU bundle adds to a bare ``python3`` with torch: its wheels, and stand-ins for two binaries.

The bundle carries only pure-Python wheels (the target's Python version is not known in advance), so
``prepare`` unpacks them into the run's folder and puts that first on ``sys.path`` (open_clip reads its
model configs and BPE vocabulary as files, which a wheel on ``sys.path`` as a zip would not give it).
Two binary packages that open_clip imports are not carried:

- ``regex``: when absent, a stand-in built on the standard ``re`` translates the one pattern open_clip's
  tokenizer compiles (letters, numbers, the rest); tokens differ from ``regex`` only for numeric
  characters outside the decimal digits (such as ``²`` or ``½``).
- ``torchvision``: open_clip imports its image transforms at import; the engine never uses them (it
  preprocesses itself). When absent, stand-ins exist only while ``open_clip`` is imported and raise
  ImportError when used, so torch never sees a torchvision that is not there.
"""
from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import re
import sys
import types
import zipfile
from pathlib import Path
from typing import Any

ABSENT_AT_IMPORT = ("torchvision",)  # imported by open_clip at import, never used by the engine
REGEX_CLASSES = {  # open_clip's tokenizer pattern pieces (regex's Unicode properties) in standard re
    r"[\p{L}]": r"[^\W\d_]",
    r"[\p{N}]": r"\d",
    r"[^\s\p{L}\p{N}]": r"(?:[^\s\w]|_)",
}


def unpack_wheels(wheels: Path, site: Path) -> list[str]:
    """Unpack every wheel of ``wheels`` into ``site`` (a fresh folder), put it first on sys.path."""
    names = []
    for wheel in sorted(wheels.glob("*.whl")):
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(site)
        names.append(wheel.name)
    sys.path.insert(0, str(site))
    importlib.invalidate_caches()
    return names


def regex_stand_in() -> types.ModuleType:
    """A ``regex`` module on the standard ``re`` for the patterns open_clip's tokenizer uses."""
    module = types.ModuleType("regex", "Stand-in for regex (the GPU bundle's), on the standard re.")

    def compile_(pattern: str, flags: int = 0) -> re.Pattern:
        for unicode_class, translated in REGEX_CLASSES.items():
            pattern = pattern.replace(unicode_class, translated)
        if r"\p{" in pattern or r"\P{" in pattern:
            raise ValueError(f"the bundle's stand-in for regex cannot translate {pattern!r}; install regex")
        return re.compile(pattern, flags)

    module.compile = compile_
    module.findall = lambda pattern, text, flags=0: (
        pattern if isinstance(pattern, re.Pattern) else compile_(pattern, flags)).findall(text)
    module.IGNORECASE = re.IGNORECASE
    return module


class _Unavailable(type):
    """Placeholder classes: any attribute is another placeholder, creating one raises ImportError."""

    def __getattr__(cls, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return _Unavailable(f"{cls.__name__}.{name}", (), {"__module__": cls.__module__})

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        raise ImportError(f"{cls.__module__}.{cls.__name__} is unavailable: {cls.__module__.split('.')[0]} "
                          "is not installed (the GPU bundle stood in for it at import only)")


class _StandInModule(types.ModuleType):
    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return _Unavailable(name, (), {"__module__": self.__name__})


class _StandInFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def __init__(self, roots: tuple[str, ...]) -> None:
        self.roots = roots

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname.split(".")[0] in self.roots:
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        module = _StandInModule(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        pass


def import_open_clip() -> tuple[types.ModuleType, list[str]]:
    """``open_clip`` imported, with stand-ins for what is absent; returns it and the names stood in for."""
    stood_in = []
    if importlib.util.find_spec("regex") is None:
        sys.modules["regex"] = regex_stand_in()
        stood_in.append("regex")
    absent = tuple(name for name in ABSENT_AT_IMPORT if importlib.util.find_spec(name) is None)
    finder = _StandInFinder(absent)
    sys.meta_path.insert(0, finder)
    try:
        import open_clip
    finally:
        sys.meta_path.remove(finder)
        for name in [name for name in sys.modules if name.split(".")[0] in absent]:
            del sys.modules[name]
    return open_clip, stood_in + list(absent)


def prepare(bundle: Path, work: Path) -> dict[str, Any]:
    """Wheels unpacked under ``work``, the bundle's sources importable, open_clip imported; what was done."""
    wheels = unpack_wheels(bundle / "wheels", work / "site")
    sys.path.insert(1, str(bundle / "bench"))
    open_clip, stood_in = import_open_clip()
    return {"wheels": wheels, "stood_in": stood_in, "open_clip": open_clip.__version__,
            "open_clip_from": str(Path(open_clip.__file__).parent)}
