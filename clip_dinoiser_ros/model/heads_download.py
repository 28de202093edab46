"""Where the heads checkpoint comes from: ``published`` (the paper's file), any http(s) URL, or a local file.

Remote files are downloaded once into the user cache (``$XDG_CACHE_HOME/clip_dinoiser_ros/heads``, default
``~/.cache/...``) under a name derived from their URL. A download goes to a hidden ``.part`` file in the cache
folder, is verified, and only then renamed into place, so an interrupted or refused download never becomes a
cache hit. Files with a known digest (the published ones) are verified on every use as well: hashing a few MB
takes milliseconds, and a corrupted or wrongly hand-placed cache file must not be trusted forever. The
training tool fetches the FOUND decoder the same way.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import re
import shutil
import urllib.error
import urllib.parse
import urllib.request
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, Optional, Union

from ..atomic_file import atomic_path, remove_abandoned
from .errors import CheckpointError, WeightsUnavailableError
from .user_cache import writable

PUBLISHED = "published"
URL_SCHEMES = ("http://", "https://")
DEFAULT_TIMEOUT_S = 30.0  # per socket operation, not for the whole file
CHUNK_BYTES = 1 << 20
URL_HASH_CHARS = 16
ACCEPTED_FORMS = (
    f"'{PUBLISHED}' (the paper's checkpoint, downloaded once and cached), an http:// or https:// URL "
    "(downloaded once and cached), or the path of a local checkpoint file such as checkpoints/last.pt"
)


@dataclass(frozen=True)
class RemoteFile:
    """A downloadable file; its digest (git blob id or sha256, when known) is checked after download and on use.

    ``what`` names it in messages, ``local_option`` is how a user passes a local copy instead.
    """

    url: str
    git_blob_id: Optional[str] = None
    sha256: Optional[str] = None
    what: str = "CLIP-DINOiser heads checkpoint"
    local_option: str = "heads:=/path/to/last.pt"

    @property
    def digest(self) -> Optional[str]:
        return self.git_blob_id or self.sha256


PUBLISHED_HEADS = RemoteFile(
    "https://github.com/wysoczanska/clip_dinoiser/raw/a954aae6fb61f5ff18834e50a0c78a2258cd9afb/checkpoints/last.pt",
    "0b6c94d9c439ebac7bcb07fe805be3654ea03c7f",
)


def git_blob_id(path: Union[str, Path]) -> str:
    """The id git gives the file's content (SHA-1 of ``blob <size>\\0`` + bytes): comparable with the repository."""
    return hash_file(hashlib.sha1(b"blob %d\0" % Path(path).stat().st_size), path)


def sha256_of(path: Union[str, Path]) -> str:
    return hash_file(hashlib.sha256(), path)


def hash_file(digest: Any, path: Union[str, Path]) -> str:
    """``digest`` (a hashlib object) updated with the file's bytes, as hex."""
    with open(path, "rb") as source:
        for chunk in iter(lambda: source.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def cache_dir(kind: str) -> Path:
    """``$XDG_CACHE_HOME/clip_dinoiser_ros/KIND``; an unset, empty or relative XDG_CACHE_HOME means ~/.cache."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    root = Path(base) if os.path.isabs(base) else Path.home() / ".cache"
    return root / "clip_dinoiser_ros" / kind


def heads_cache_dir() -> Path:
    return cache_dir("heads")


def cache_file_name(url: str) -> str:
    """A hash of the whole URL (distinct URLs never collide) plus its basename (readable in a listing)."""
    basename = PurePosixPath(urllib.parse.urlsplit(url).path).name or "heads.pt"
    safe_basename = re.sub(r"[^A-Za-z0-9._-]", "_", basename)
    return f"{hashlib.sha256(url.encode()).hexdigest()[:URL_HASH_CHARS]}-{safe_basename}"


def resolve_heads(
    source: str,
    *,
    published: RemoteFile = PUBLISHED_HEADS,
    cache_dir: Optional[Path] = None,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> Path:
    """The local file for a heads source, downloading (once) what is remote."""
    if source == PUBLISHED:
        return cached_download(published, cache_dir or heads_cache_dir(), timeout)
    if source.startswith(URL_SCHEMES):
        known_id = published.git_blob_id if source == published.url else None
        return cached_download(RemoteFile(source, known_id), cache_dir or heads_cache_dir(), timeout)
    path = Path(source)
    if path.is_file():
        return path
    raise CheckpointError(f"heads checkpoint {source} does not exist; heads accepts {ACCEPTED_FORMS}")


def cached_download(remote: RemoteFile, cache_dir: Path, timeout: float) -> Path:
    """The cached copy of ``remote``, verified when its blob id is known; downloaded only when absent (into
    a private temporary folder when ``cache_dir`` cannot be written: see user_cache)."""
    target = cache_dir / cache_file_name(remote.url)
    if not target.is_file():
        target = writable(cache_dir) / target.name
    if target.is_file():
        actual = digest_mismatch(remote, target)
        if actual:
            raise CheckpointError(
                f"{remote.what} refused: the cached file {target} has {digest_name(remote)} {actual}, expected "
                f"{remote.digest} for {remote.url}; delete it to download it again"
            )
        return target
    download(remote, target, timeout)
    return target


def download(remote: RemoteFile, target: Path, timeout: float) -> None:
    """Fetch into a hidden temporary file next to ``target``, verify, rename; on any failure (Ctrl-C included)
    remove it, and first remove those of earlier downloads killed outright (atomic_file)."""
    with ExitStack() as writing:
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            remove_abandoned(target)
            temporary = writing.enter_context(atomic_path(target))
        except OSError as error:
            raise unavailable(remote, target, f"cannot write to the cache folder {target.parent}: {error}") from error
        with open(temporary, "wb") as sink:
            fetch(remote, sink, target, timeout)
        actual = digest_mismatch(remote, temporary)
        if actual:
            raise CheckpointError(
                f"{remote.what} refused: the download from {remote.url} has {digest_name(remote)} {actual}, "
                f"expected {remote.digest}; nothing was kept"
            )


def fetch(remote: RemoteFile, sink: BinaryIO, target: Path, timeout: float) -> None:
    """Copy the response body into ``sink``; any network problem becomes WeightsUnavailableError."""
    request = urllib.request.Request(remote.url, headers={"User-Agent": "clip_dinoiser_ros"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            announced = response.headers.get("Content-Length")
            shutil.copyfileobj(response, sink, CHUNK_BYTES)
    except urllib.error.HTTPError as error:
        raise unavailable(remote, target, f"HTTP {error.code} {error.reason}") from error
    except urllib.error.URLError as error:
        raise unavailable(remote, target, str(error.reason)) from error
    except (OSError, http.client.HTTPException) as error:
        raise unavailable(remote, target, f"{type(error).__name__}: {error}") from error
    received = sink.tell()
    if announced is not None and announced.isdigit() and received != int(announced):
        # http.client returns a short body silently when the connection drops before Content-Length.
        raise unavailable(remote, target, f"the connection ended after {received} of {announced} bytes")


def digest_name(remote: RemoteFile) -> str:
    return "git blob id" if remote.git_blob_id else "sha256"


def digest_mismatch(remote: RemoteFile, path: Path) -> Optional[str]:
    """The file's digest when it differs from the known one; None when it matches or none is known."""
    if remote.digest is None:
        return None
    actual = git_blob_id(path) if remote.git_blob_id else sha256_of(path)
    return actual if actual != remote.digest else None


def unavailable(remote: RemoteFile, target: Path, reason: str) -> WeightsUnavailableError:
    """One message with everything needed offline: what failed and why, where the file goes, the alternative."""
    lines = [
        f"could not download the {remote.what} from {remote.url}: {reason}.",
        f"Download it on a connected machine and place it at\n    {target}",
    ]
    if remote.digest:
        lines.append(f"(it is checked against {digest_name(remote)} {remote.digest})")
    lines.append(f"or pass a local file instead: {remote.local_option}")
    return WeightsUnavailableError("\n".join(lines))
