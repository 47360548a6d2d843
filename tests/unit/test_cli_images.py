"""``pytest-containers image ...`` failures and messages, without any binary: one
line ``pytest-containers: error: ...`` and exit 125 for our errors and OS errors,
a wait for a store lock reported and interruptible, ``save -o`` errors naming the
output, ``save -o -``, docker-archives, prune's report, and no runtime import."""

from __future__ import annotations

import io
import json
import os
import pty
import signal
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from pytest_containers.cli import main
from pytest_containers.image.store import Store
from tests.unit.test_store_commands import make_image

NAME = "127.0.0.1:5000/a/app:1"


@pytest.fixture
def store(tmp_path: Path) -> Store:
    store = Store(tmp_path / "store")
    make_image(store, NAME, b"payload" * 1000)
    return store


def ptc(store: Path | str, *args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest_containers.cli", "--store", str(store), *args],
        capture_output=True, text=True, timeout=60, check=False, **kwargs,  # type: ignore[call-overload]
    )  # fmt: skip


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 125, proc.stderr
    assert "Traceback" not in proc.stderr
    [line] = proc.stderr.splitlines()
    assert line.startswith("pytest-containers: error: ")
    return line.removeprefix("pytest-containers: error: ")


def test_store_paths_that_cannot_be_stores(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x\n")
    assert "store path '' is empty" in one_error_line(ptc("", "image", "ls", cwd=tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]
    assert "store /proc/nope cannot be created" in one_error_line(ptc("/proc/nope", "image", "ls"))
    line = one_error_line(ptc(tmp_path / "file", "image", "ls"))
    assert line == f"store {tmp_path / 'file'} is not a directory"


def test_a_garbage_index_is_one_line(store: Store) -> None:
    (store.layout / "index.json").write_text("{garbage")
    line = one_error_line(ptc(store.root, "image", "ls"))
    assert f"{store.layout / 'index.json'} is not valid JSON" in line
    assert "move it away" in line


def test_tag_refusals_are_one_line(store: Store) -> None:
    other = "sha256:" + "0f" * 32
    line = one_error_line(ptc(store.root, "image", "tag", NAME, f"x/app@{other}"))
    assert f"{other} is not a digest of that image" in line
    line = one_error_line(ptc(store.root, "image", "tag", NAME, "Mine:v1"))
    assert "repository names must be lowercase: 'Mine' is not" in line
    assert [line.split()[0] for line in ptc(store.root, "image", "ls").stdout.splitlines()] == [
        "REFERENCE",
        NAME,
    ]


def test_inspect_takes_an_id_from_ls(store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--store", str(store.root), "image", "ls"]) == 0
    short = capsys.readouterr().out.splitlines()[1].split()[1]  # DIGEST, as ls shows it
    assert main(["--store", str(store.root), "image", "inspect", short]) == 0
    assert json.loads(capsys.readouterr().out)["reference"] == NAME


def test_pull_missing_answers_from_the_store(
    store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    image = store.require(NAME)  # its registry, 127.0.0.1:5000, is not running
    assert main(["--store", str(store.root), "image", "pull", "--pull", "missing", NAME]) == 0
    assert capsys.readouterr().out == f"{NAME}: {image.digest}\n"
    absent = "127.0.0.1:5000/a/absent:1"
    assert main(["--store", str(store.root), "image", "pull", "--pull", "never", absent]) == 125
    assert f"pytest-containers image pull {absent}" in capsys.readouterr().err


# -- a held store lock -------------------------------------------------------------------

_HOLDER = r"""
import sys
from pathlib import Path
from pytest_containers.image import locks
fd = locks.lock(Path(sys.argv[1]), timeout=5, what="test")
print("held", flush=True)
sys.stdin.read()
"""


def test_a_held_lock_is_reported_and_ctrl_c_ends_the_wait(store: Store) -> None:
    lock = store.locks_dir / "index.json.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(lock)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        waiting = subprocess.Popen(
            [sys.executable, "-m", "pytest_containers.cli", "--store", str(store.root),
             "image", "tag", NAME, "b/app:2"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert waiting.stderr is not None
        line = waiting.stderr.readline()  # after about a second
        assert line.startswith(
            f"pytest-containers: waiting for the store lock {lock} held by pid {holder.pid} ("
        )
        assert "-c import sys" in line and line.endswith("...\n")
        waiting.send_signal(signal.SIGINT)
        assert waiting.wait(timeout=10) == 130
        assert waiting.stderr.read() == ""  # no traceback
    finally:
        holder.communicate("")
    assert [str(i.reference) for i in store.images()] == [NAME]


# -- image save -----------------------------------------------------------------------------


def test_save_errors_name_the_output(store: Store, tmp_path: Path) -> None:
    missing = tmp_path / "missing" / "x.tar"
    line = one_error_line(ptc(store.root, "image", "save", NAME, "-o", str(missing)))
    assert line == f"cannot write the archive {missing}: directory {missing.parent} does not exist"
    line = one_error_line(ptc(store.root, "image", "save", NAME, "-o", str(tmp_path)))
    assert line.startswith(f"cannot write the archive to {tmp_path}: it is a directory")
    under_file = store.root / "oci" / "oci-layout" / "x.tar"
    line = one_error_line(ptc(store.root, "image", "save", NAME, "-o", str(under_file)))
    assert line == (
        f"cannot write the archive {under_file}: {store.layout / 'oci-layout'} is not a directory"
    )
    assert not list(tmp_path.glob("*.tar")) and not list(tmp_path.glob(".*"))


def test_save_to_stdout(store: Store, tmp_path: Path) -> None:
    with open(tmp_path / "out.tar", "wb") as out:
        proc = subprocess.run(
            [sys.executable, "-m", "pytest_containers.cli", "--store", str(store.root),
             "image", "save", NAME, "-o", "-"],
            stdout=out, stderr=subprocess.PIPE, check=False, cwd=tmp_path,
        )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert ptc(store.root, "image", "save", NAME, "-o", str(tmp_path / "file.tar")).returncode == 0
    assert (tmp_path / "out.tar").read_bytes() == (tmp_path / "file.tar").read_bytes()
    with tarfile.open(tmp_path / "out.tar") as tar:
        assert "oci-layout" in tar.getnames()


def test_save_to_stdout_refuses_a_terminal(store: Store, tmp_path: Path) -> None:
    controller, terminal = pty.openpty()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "pytest_containers.cli", "--store", str(store.root),
             "image", "save", NAME, "-o", "-"],
            stdout=terminal, stderr=subprocess.PIPE, text=True, timeout=60, check=False,
            cwd=tmp_path,
        )  # fmt: skip
    finally:
        os.close(terminal)
        os.close(controller)
    assert proc.returncode == 125
    assert "refusing to write an archive to a terminal" in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store"]  # no file named '-'


def test_save_of_a_corrupt_blob_fails_naming_it(store: Store, tmp_path: Path) -> None:
    layer = store.require(NAME).layers[0].digest
    path = store.blob_path(layer)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    line = one_error_line(ptc(store.root, "image", "save", NAME, "-o", str(tmp_path / "x.tar")))
    assert f"blob {layer} of {NAME} in the store {store.root} is corrupt: {path} hashes to" in line
    assert list(tmp_path.iterdir()) == [store.root]


# -- image load ------------------------------------------------------------------------------


def test_load_recognizes_a_docker_archive(store: Store, tmp_path: Path) -> None:
    archive = tmp_path / "docker.tar"
    with tarfile.open(archive, "w") as tar:
        for name, data in (("manifest.json", b"[]"), ("repositories", b"{}")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    line = one_error_line(ptc(store.root, "image", "load", "-i", str(archive)))
    assert f"{archive} is a docker-archive" in line
    assert f"skopeo copy docker-archive:{archive} oci-archive:{tmp_path / 'docker-oci.tar'}" in line


def test_load_of_an_unnamed_image_names_the_flag(store: Store, tmp_path: Path) -> None:
    saved = tmp_path / "a.tar"
    assert ptc(store.root, "image", "save", NAME, "-o", str(saved)).returncode == 0
    unnamed = tmp_path / "unnamed.tar"
    with tarfile.open(saved) as tin, tarfile.open(unnamed, "w") as tout:
        for member in tin:
            data = tin.extractfile(member).read() if member.isfile() else b""  # type: ignore[union-attr]
            if member.name == "index.json":
                index = json.loads(data)
                del index["manifests"][0]["annotations"]
                data = json.dumps(index).encode()
                member.size = len(data)
            tout.addfile(member, io.BytesIO(data))
    line = one_error_line(ptc(store.root, "image", "load", "-i", str(unnamed)))
    assert "has no name" in line and "--tag/-t REF" in line
    proc = ptc(store.root, "image", "load", "-i", str(unnamed), "--tag", "b/app:2")
    assert (proc.returncode, proc.stdout) == (0, "Loaded image: docker.io/b/app:2\n")


# -- image prune -----------------------------------------------------------------------------


def test_prune_says_what_it_kept_and_why(store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    store.remove(NAME)
    assert main(["--store", str(store.root), "image", "prune"]) == 0
    out = capsys.readouterr().out
    assert "kept 3 blob(s) and 0 snapshot(s)" in out
    assert "younger than the grace period of 300 s" in out and "--all removes them" in out
    assert "Total reclaimed space: 0.0MB" in out
    assert main(["--store", str(store.root), "image", "prune", "--grace", "3600"]) == 0
    assert "grace period of 3600 s" in capsys.readouterr().out
    assert main(["--store", str(store.root), "image", "prune", "--all"]) == 0
    out = capsys.readouterr().out
    assert out.count("deleted blob: ") == 3 and "kept" not in out
    assert list(store.blobs_dir.iterdir()) == []


# -- the runtime side is not needed --------------------------------------------------------


def test_image_commands_do_not_import_the_runtime_side(store: Store) -> None:
    """What ``cli`` itself imported for ``run`` only (the sweep of dead containers,
    the backends' plugin manager) is not needed by ``image``; the package's own
    ``__init__`` is another matter."""
    code = (
        "import sys\n"
        "for name in ('pytest_containers.runtime.sweep', 'pytest_containers._pluginmanager'):\n"
        "    sys.modules[name] = None  # importing it fails\n"
        "from pytest_containers.cli import main\n"
        f"sys.exit(main(['--store', {str(store.root)!r}, 'image', 'ls']))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert NAME in proc.stdout


@pytest.mark.parametrize("argv", [
    ["stop", "-t", "-1", "x"], ["run", "--cpus", "abc", "img"], ["bogus"],
    ["run", "--cpus", "1e308", "img"],
])
def test_usage_errors_are_one_line_and_125(argv: list[str],
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """As docker's flag errors: one line naming the argument, exit 125 (not argparse's
    usage text and 2), and no traceback for a number out of range."""
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    assert code == 125, err
    assert len(err.strip().splitlines()) == 1 and "error:" in err and "Traceback" not in err


@pytest.mark.parametrize("signal_", ["99", "0", "FOO"])
def test_kill_refuses_an_unknown_signal_by_name(signal_: str,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["kill", "-s", signal_, "ptc-no-such-container"]) == 125
    assert f"unknown signal '{signal_}'" in capsys.readouterr().err
