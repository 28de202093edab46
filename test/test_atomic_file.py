"""Files written whole or not at all: what a writer killed outright leaves behind is removed by the next writer of
the same file, never what a live writer is still writing, nor another file's."""
import errno
import signal
import subprocess
import sys
from pathlib import Path

from abandoned_parts import age
from clip_dinoiser_ros import atomic_file
from clip_dinoiser_ros.atomic_file import remove_abandoned

WRITER = """
import pathlib, sys
from clip_dinoiser_ros.atomic_file import atomic_write
with atomic_write(pathlib.Path(sys.argv[1])) as sink:
    sink.write(b"whole")
    sink.flush()
    print("writing", flush=True)
    sys.stdin.read()  # until the test closes stdin, or kills this process
"""


def parts(folder: Path) -> set[Path]:
    return set(folder.glob(".*.part"))


def start_writer(target: Path) -> tuple[subprocess.Popen, Path]:
    """A process in the middle of writing ``target``, and its temporary file."""
    before = parts(target.parent)
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(target)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline() == "writing\n"
    (temporary,) = parts(target.parent) - before
    return writer, temporary


def test_a_part_left_by_a_killed_writer_is_removed_and_a_live_writer_s_is_kept(tmp_path):
    target = tmp_path / "map.npz"
    killed, abandoned = start_writer(target)
    live, in_use = start_writer(target)
    other_file = tmp_path / ".map.npz.json.abcdefgh.part"  # the sidecar's, of another target
    other_file.write_bytes(b"")
    try:
        killed.send_signal(signal.SIGKILL)
        killed.wait(timeout=30)
        assert abandoned.exists()  # nothing could remove it
        age(abandoned, 0.0)
        young = remove_abandoned(target)  # its writer might not have locked it yet
        for path in (abandoned, in_use, other_file):
            age(path)
        old = remove_abandoned(target)
        kept = in_use.exists() and other_file.exists()
    finally:
        for writer in (killed, live):
            writer.stdin.close()  # the live one finishes its file
        finished = live.wait(timeout=30)
        killed.wait(timeout=30)
    assert young == [] and old == [abandoned] and kept and finished == 0
    assert target.read_bytes() == b"whole" and parts(tmp_path) == {other_file}


def test_a_filesystem_without_locks_still_gets_whole_files(tmp_path, monkeypatch):
    def refused(handle, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(atomic_file.fcntl, "flock", refused)
    with atomic_file.atomic_write(tmp_path / "heads.pt") as sink:
        sink.write(b"whole")
        (temporary,) = parts(tmp_path)
        age(temporary)
        assert atomic_file.remove_abandoned(tmp_path / "heads.pt") == []  # unlocked, old, but never taken
    assert (tmp_path / "heads.pt").read_bytes() == b"whole" and not parts(tmp_path)
