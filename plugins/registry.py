"""A real local registry (distribution's ``docker-registry``) for tests.

:class:`RegistryServer` runs ``docker-registry serve CONFIG`` on a free
``127.0.0.1`` port with filesystem storage in a temp directory, no auth,
deletes enabled; :func:`registry` is the session fixture around it.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_containers import _retry
from pytest_containers.exceptions import RegistryError
from pytest_containers.image.registry import RegistryClient

REGISTRY_BINARY = "/usr/bin/docker-registry"
#: Seconds to wait for the registry to answer ``/v2/``, and to exit on stop.
START_TIMEOUT = 15.0
STOP_TIMEOUT = 5.0

_CONFIG = """\
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {storage}
  delete:
    enabled: true
http:
  addr: {host}
"""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RegistryServer:
    """A ``docker-registry`` process; :meth:`start` it, :meth:`stop` it.

    ``host``: ``127.0.0.1:PORT``; ``url``: ``http://127.0.0.1:PORT``;
    ``storage``: the registry's storage root (its ``docker/registry/v2`` tree),
    exposed so tests can corrupt blobs. ``allow_schema1``: accept Docker schema 1
    pushes (``skopeo copy --format v2s1``), to test clients that must refuse them.
    """

    def __init__(self, binary: str = REGISTRY_BINARY, *, allow_schema1: bool = False) -> None:
        self.binary = binary
        self.allow_schema1 = allow_schema1
        self.workdir = Path(tempfile.mkdtemp(prefix="ptc-registry-"))
        self.storage = self.workdir / "storage"
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._log = self.workdir / "registry.log"

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def start(self, *, timeout: float = START_TIMEOUT) -> RegistryServer:
        """Start and wait until ``/v2/`` answers; return self.

        Raises ``TimeoutError`` with the registry's log when it does not.
        """
        self.storage.mkdir(exist_ok=True)
        self.port = _free_port()
        config = self.workdir / "config.yml"
        text = _CONFIG.format(storage=self.storage, host=self.host)
        if self.allow_schema1:  # distribution 2.8 refuses schema 1 pushes otherwise
            text += "compatibility:\n  schema1:\n    enabled: true\n"
        config.write_text(text)
        with self._log.open("wb") as log:
            self._process = subprocess.Popen(
                [self.binary, "serve", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

        def ready() -> bool:
            assert self._process is not None
            if self._process.poll() is not None:
                raise RuntimeError(f"exited with {self._process.returncode}")
            with RegistryClient(self.host, timeout=1.0) as client:
                try:
                    client.ping()
                except RegistryError:
                    return False
            return True

        try:
            _retry.wait_until(ready, timeout=timeout, what=f"registry at {self.url}")
        except TimeoutError as exc:
            output = self._log.read_text(errors="replace")[-2000:]
            self.stop()
            raise TimeoutError(f"{exc}\nregistry log:\n{output}") from None
        return self

    def push_oci(
        self, layout_dir: Path, ref_name: str, repository: str, tag: str, *, fmt: str | None = None
    ) -> str:
        """``skopeo copy oci:DIR:REF docker://HOST/REPO:TAG``; return the pushed reference.

        ``fmt``: skopeo ``--format`` (``oci``, ``v2s2``); ``None`` keeps the
        source's. A layout entry that is an index is copied with ``--all``.
        Raises ``subprocess.CalledProcessError`` (with stderr) on failure.
        """
        dest = f"{self.host}/{repository}:{tag}"
        argv = ["skopeo", "copy", "--quiet", "--all", "--dest-tls-verify=false"]
        if fmt:
            argv += ["--format", fmt]
        argv += [f"oci:{layout_dir}:{ref_name}", f"docker://{dest}"]
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise subprocess.CalledProcessError(done.returncode, argv, done.stdout, done.stderr)
        return dest

    def blob_data_path(self, digest: str) -> Path:
        """Where the registry keeps the bytes of blob ``digest`` (``sha256:<hex>``)."""
        hex_ = digest.split(":", 1)[1]
        return self.storage / "docker/registry/v2/blobs/sha256" / hex_[:2] / hex_ / "data"

    def stop(self) -> None:
        """Terminate (then kill after ``STOP_TIMEOUT`` s), reap, and remove the temp dir.

        Safe to call twice, or after the process died on its own.
        """
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> RegistryServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


@pytest.fixture(scope="session")
def registry() -> Iterator[RegistryServer]:
    """A running local distribution registry, shared by the whole session.

    Scope: session. Depends on: ``/usr/bin/docker-registry`` (the test is
    skipped when it is missing). Yields: a started :class:`RegistryServer`
    (``.host`` is ``127.0.0.1:PORT``, plain HTTP, no auth, deletes enabled).
    Cleanup: terminates the process (kill after 5 s), reaps it and removes its
    storage directory; nothing is left running.
    """
    if not Path(REGISTRY_BINARY).exists():
        pytest.skip(f"{REGISTRY_BINARY} is not installed")
    server = RegistryServer().start()
    try:
        yield server
    finally:
        server.stop()
