"""Heads sources: 'published' and URLs are downloaded once from a loopback server, verified and cached."""
import hashlib
import http.server
import shutil
import socket
import subprocess
import threading
from pathlib import Path

import pytest
import torch

from abandoned_parts import plant_abandoned
from clip_dinoiser_ros.model import CheckpointError, ClipDinoiser, DinoiserHeads, WeightsUnavailableError
from clip_dinoiser_ros.model import heads_download, save_checkpoint
from clip_dinoiser_ros.model.heads import build_heads
from clip_dinoiser_ros.model.heads_download import (
    PUBLISHED_HEADS,
    RemoteFile,
    git_blob_id,
    heads_cache_dir,
    resolve_heads,
)
from clip_dinoiser_ros.model import build as engine_factory
from clip_dinoiser_ros.model.build import EngineSettings, build_engine

FEATURE_DIM = 64  # the tiny test CLIP's width


class LoopbackServer:
    """Serves ``files`` (path -> bytes) on 127.0.0.1 and records every request; ``truncate`` drops mid-body."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.requests: list[str] = []
        self.truncate = False
        self.stopped = False
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                server.requests.append(self.path)
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2] if server.truncate else body)

            def log_message(self, *args) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_port}{path}"

    def stop(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Whatever a test resolves without an explicit cache lands in tmp_path, never in the real ~/.cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))


@pytest.fixture()
def checkpoint(tmp_path) -> Path:
    torch.manual_seed(0)
    path = tmp_path / "source" / "last.pt"
    path.parent.mkdir()
    save_checkpoint(DinoiserHeads(FEATURE_DIM), path, epoch=100)
    return path


@pytest.fixture()
def server(checkpoint):
    server = LoopbackServer({"/ckpt/last.pt": checkpoint.read_bytes(), "/other/last.pt": checkpoint.read_bytes()})
    yield server
    server.stop()


@pytest.fixture()
def published(server, checkpoint) -> RemoteFile:
    return RemoteFile(server.url("/ckpt/last.pt"), git_blob_id(checkpoint))


def closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/ckpt/last.pt"


def all_files(folder: Path) -> list[Path]:
    """Every file, hidden temporaries included."""
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def assert_same_heads(heads: DinoiserHeads, checkpoint: Path) -> None:
    expected = torch.load(checkpoint, weights_only=True)["model_state_dict"]
    for key, value in heads.state_dict().items():
        assert torch.equal(value, expected[key]), key


def test_git_blob_id_is_gits_content_id(tmp_path):
    path = tmp_path / "hello.txt"
    path.write_bytes(b"hello\n")
    assert git_blob_id(path) == "ce013625030ba8dba906f756967f9e9ca394464a"  # `git hash-object` of "hello\n"
    if shutil.which("git"):
        path.write_bytes(bytes(range(256)) * 1000)
        expected = subprocess.run(["git", "hash-object", str(path)], capture_output=True, text=True, check=True)
        assert git_blob_id(path) == expected.stdout.strip()


def test_published_constant_pins_the_papers_commit():
    assert PUBLISHED_HEADS.url.startswith("https://github.com/wysoczanska/clip_dinoiser/raw/a954aae6fb61f5ff")
    assert PUBLISHED_HEADS.url.endswith("/checkpoints/last.pt")
    assert PUBLISHED_HEADS.git_blob_id == "0b6c94d9c439ebac7bcb07fe805be3654ea03c7f"


def test_published_is_downloaded_verified_and_loads_through_build_heads(tmp_path, server, published, checkpoint):
    cache = tmp_path / "cache"
    abandoned = plant_abandoned(cache / heads_download.cache_file_name(published.url))  # a download killed outright
    path = resolve_heads("published", published=published, cache_dir=cache)
    assert path.parent == cache and path.name.endswith("-last.pt")
    assert path.read_bytes() == checkpoint.read_bytes()
    assert all_files(cache) == [path] and not abandoned.exists()  # no temporary left, the abandoned one removed
    assert server.requests == ["/ckpt/last.pt"]
    assert_same_heads(build_heads(path, FEATURE_DIM), checkpoint)


def test_build_heads_and_the_engine_accept_a_url(tmp_path, server, checkpoint, tiny_clip):
    url = server.url("/ckpt/last.pt")
    assert_same_heads(build_heads(url, FEATURE_DIM), checkpoint)
    engine = ClipDinoiser(tiny_clip, url)  # cached by the first call: no second request
    assert_same_heads(engine.heads, checkpoint)
    assert server.requests == ["/ckpt/last.pt"]
    assert len(all_files(tmp_path / "xdg" / "clip_dinoiser_ros" / "heads")) == 1


def test_cache_hit_makes_no_request_even_with_the_server_stopped(tmp_path, server, published):
    first = resolve_heads("published", published=published, cache_dir=tmp_path / "cache")
    server.stop()  # its port is closed: a request now could only fail
    assert resolve_heads("published", published=published, cache_dir=tmp_path / "cache") == first
    assert server.requests == ["/ckpt/last.pt"]


def test_an_unwritable_cache_downloads_into_a_private_folder_with_one_warning(tmp_path, server, published):
    blocked = tmp_path / "file"
    blocked.write_text("a file where the cache folder should be")
    with pytest.warns(RuntimeWarning, match="cannot be written") as caught:
        first = resolve_heads("published", published=published, cache_dir=blocked / "heads")
        again = resolve_heads("published", published=published, cache_dir=blocked / "heads")
    assert first == again and not first.is_relative_to(tmp_path) and git_blob_id(first) == published.git_blob_id
    assert len(caught) == 1 and server.requests == ["/ckpt/last.pt"]  # the stand-in is this process's cache


def test_a_read_only_cache_holding_the_file_is_used_as_it_is(tmp_path, server, published, monkeypatch):
    """A container image with the heads placed in its (read-only) cache: used, nothing written, no warning."""
    cache = tmp_path / "cache"
    placed = resolve_heads("published", published=published, cache_dir=cache)
    monkeypatch.setattr(heads_download, "writable", lambda folder: pytest.fail("a cache hit must write nothing"))
    assert resolve_heads("published", published=published, cache_dir=cache) == placed


def test_hash_mismatch_is_refused_and_nothing_is_kept(tmp_path, server, checkpoint):
    wrong = RemoteFile(server.url("/ckpt/last.pt"), "0" * 40)
    with pytest.raises(CheckpointError) as caught:
        resolve_heads("published", published=wrong, cache_dir=tmp_path / "cache")
    message = str(caught.value)
    assert wrong.url in message and "0" * 40 in message and git_blob_id(checkpoint) in message
    assert all_files(tmp_path / "cache") == []


def test_a_url_equal_to_the_published_one_is_verified_too(tmp_path, server):
    url = server.url("/ckpt/last.pt")
    with pytest.raises(CheckpointError, match="expected " + "1" * 40):
        resolve_heads(url, published=RemoteFile(url, "1" * 40), cache_dir=tmp_path / "cache")
    assert all_files(tmp_path / "cache") == []


def test_corrupted_cached_published_file_is_refused_naming_it(tmp_path, server, published):
    path = resolve_heads("published", published=published, cache_dir=tmp_path / "cache")
    path.write_bytes(path.read_bytes()[:-1] + b"x")
    with pytest.raises(CheckpointError) as caught:
        resolve_heads("published", published=published, cache_dir=tmp_path / "cache")
    assert str(path) in str(caught.value) and "delete it" in str(caught.value)
    assert server.requests == ["/ckpt/last.pt"]


def test_server_down_gives_one_clear_message(tmp_path):
    url = closed_port_url()
    remote = RemoteFile(url, "a" * 40)
    with pytest.raises(WeightsUnavailableError) as caught:
        resolve_heads("published", published=remote, cache_dir=tmp_path / "cache")
    message = str(caught.value)
    target = tmp_path / "cache" / heads_download.cache_file_name(url)
    assert f"could not download the CLIP-DINOiser heads checkpoint from {url}" in message
    assert "Connection refused" in message
    assert f"place it at\n    {target}\n" in message
    assert "a" * 40 in message
    assert "heads:=/path/to/last.pt" in message
    assert all_files(tmp_path / "cache") == []


def test_http_404_names_the_status_and_keeps_nothing(tmp_path, server):
    url = server.url("/missing/last.pt")
    with pytest.raises(WeightsUnavailableError, match="HTTP 404") as caught:
        resolve_heads(url, cache_dir=tmp_path / "cache")
    assert url in str(caught.value)
    assert all_files(tmp_path / "cache") == []


def test_dropped_connection_is_not_cached_and_the_next_run_downloads_again(tmp_path, server, checkpoint):
    url = server.url("/ckpt/last.pt")
    server.truncate = True
    with pytest.raises(WeightsUnavailableError, match=r"ended after \d+ of \d+ bytes"):
        resolve_heads(url, cache_dir=tmp_path / "cache")
    assert all_files(tmp_path / "cache") == []
    server.truncate = False
    assert resolve_heads(url, cache_dir=tmp_path / "cache").read_bytes() == checkpoint.read_bytes()
    assert server.requests == ["/ckpt/last.pt", "/ckpt/last.pt"]


def test_ctrl_c_during_download_leaves_no_file(tmp_path, server, published, monkeypatch):
    def interrupted_copy(source, sink, length):
        sink.write(source.read(1000))
        raise KeyboardInterrupt

    monkeypatch.setattr(heads_download.shutil, "copyfileobj", interrupted_copy)
    with pytest.raises(KeyboardInterrupt):
        resolve_heads("published", published=published, cache_dir=tmp_path / "cache")
    assert all_files(tmp_path / "cache") == []


def test_urls_are_cached_by_url(tmp_path, server, checkpoint):
    cache = tmp_path / "cache"
    first = resolve_heads(server.url("/ckpt/last.pt"), cache_dir=cache)
    again = resolve_heads(server.url("/ckpt/last.pt"), cache_dir=cache)
    other = resolve_heads(server.url("/other/last.pt"), cache_dir=cache)
    assert first == again != other
    assert first.name == hashlib.sha256(server.url("/ckpt/last.pt").encode()).hexdigest()[:16] + "-last.pt"
    assert other.name.endswith("-last.pt")
    assert server.requests == ["/ckpt/last.pt", "/other/last.pt"]
    assert all_files(cache) == sorted([first, other])


def test_xdg_cache_home_is_honoured(tmp_path, server, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "elsewhere"))
    assert heads_cache_dir() == tmp_path / "elsewhere" / "clip_dinoiser_ros" / "heads"
    path = resolve_heads(server.url("/ckpt/last.pt"))
    assert path.parent == tmp_path / "elsewhere" / "clip_dinoiser_ros" / "heads"


@pytest.mark.parametrize("xdg", [None, "", "relative/cache"])
def test_without_a_usable_xdg_cache_home_the_cache_is_under_home(tmp_path, monkeypatch, xdg):
    if xdg is None:
        monkeypatch.delenv("XDG_CACHE_HOME")
    else:
        monkeypatch.setenv("XDG_CACHE_HOME", xdg)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert heads_cache_dir() == tmp_path / "home" / ".cache" / "clip_dinoiser_ros" / "heads"


def test_local_path_is_used_as_is(tmp_path, server, checkpoint):
    assert resolve_heads(str(checkpoint), cache_dir=tmp_path / "cache") == checkpoint
    assert server.requests == [] and all_files(tmp_path / "cache") == []


@pytest.mark.parametrize("source", ["publish", "ftp://example.org/last.pt", "checkpoints/missing.pt"])
def test_unknown_source_lists_the_accepted_forms(tmp_path, source):
    with pytest.raises(CheckpointError) as caught:
        resolve_heads(source, cache_dir=tmp_path / "cache")
    message = str(caught.value)
    assert f"{source} does not exist" in message
    assert "'published'" in message and "http:// or https:// URL" in message and "local checkpoint file" in message


def settings(heads: str) -> EngineSettings:
    return EngineSettings(
        device="cpu", precision="fp32", clip_model="ViT-Tiny-16-test", clip_pretrained="unused", heads=heads,
        templates="simple", gamma=0.2, delta=0.99, random_weights=False,
    )


def test_engine_factory_fails_on_the_heads_before_loading_clip(monkeypatch):
    def load_clip(*args, **kwargs):
        raise AssertionError("CLIP was loaded before the heads were resolved")

    monkeypatch.setattr(engine_factory, "load_clip", load_clip)
    with pytest.raises(WeightsUnavailableError, match="could not download"):
        build_engine(settings(closed_port_url()))
    with pytest.raises(ValueError, match="heads is empty.*'published'"):
        build_engine(settings(""))


def test_engine_factory_builds_with_downloaded_heads(monkeypatch, server, checkpoint, tiny_clip):
    monkeypatch.setattr(engine_factory, "load_clip", lambda *args, **kwargs: tiny_clip)
    engine = build_engine(settings(server.url("/ckpt/last.pt")))
    assert_same_heads(engine.heads, checkpoint)
