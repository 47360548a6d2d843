"""A real local registry (distribution's ``docker-registry``) for tests.

:class:`RegistryServer` runs ``docker-registry serve CONFIG`` on a free
``127.0.0.1`` port with filesystem storage in a temp directory, deletes
enabled, and either no auth, token auth (``auth.token``, distribution
``docs/spec/auth/token.md``) against a token server such as
:class:`pytest_containers.plugins.token_server.TokenServer`, or Basic auth
(``auth.htpasswd``, a bcrypt ``htpasswd`` file); :func:`registry`
is the session fixture around it (no auth).

Nothing outlives the process that started the registry: ``docker-registry``
runs with ``PR_SET_PDEATHSIG(SIGKILL)`` (set by a tiny exec wrapper,
:data:`_DEATHSIG_EXEC`, not a ``preexec_fn``), so ``kill -9`` of pytest kills it,
and in its own process group, so a terminal's ^C reaches only pytest, whose
teardown stops it. Its temp dir ``ptc-registry-*`` names its ``owner`` (that
process's pid); :func:`sweep_workdirs` removes those of dead owners.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Protocol

import pytest
from pytest_containers.runtime.sweep import owner_alive

from pytest_containers import _retry
from pytest_containers.exceptions import RegistryError
from pytest_containers.image.registry import RegistryClient

REGISTRY_BINARY = "/usr/bin/docker-registry"
#: Seconds to wait for the registry to answer ``/v2/``, and to exit on stop.
START_TIMEOUT = 15.0
STOP_TIMEOUT = 5.0
#: prefix of the registry's temp dir (in ``tempfile.gettempdir()``)
WORKDIR_PREFIX = "ptc-registry-"

#: ``python -I -S -c _DEATHSIG_EXEC OWNER_PID BINARY ARGS...``: set
#: ``PR_SET_PDEATHSIG(SIGKILL)``, make sure the parent is still ``OWNER_PID`` (it
#: may have died before the prctl), exec ``BINARY ARGS...`` (the setting survives
#: ``execve`` of a binary that is not set-uid and has no file capabilities). The
#: signal follows the death of the *thread* that spawned it: start the registry
#: from a thread that lives as long as it should (pytest's main thread does).
_DEATHSIG_EXEC = r"""
import ctypes, os, sys
ctypes.CDLL(None, use_errno=True).prctl(1, 9, 0, 0, 0)
if os.getppid() != int(sys.argv[1]):
    sys.exit(1)
os.execv(sys.argv[2], sys.argv[2:])
"""

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


_TOKEN_AUTH = """\
auth:
  token:
    realm: {realm}
    service: {service}
    issuer: {issuer}
    rootcertbundle: {rootcertbundle}
"""


#: ``auth.htpasswd``: Basic auth (RFC 7617) against bcrypt entries ``USER:$2y$...``,
#: one a line (distribution accepts bcrypt only); challenges ``Basic realm=HTPASSWD_REALM``.
HTPASSWD_REALM = "ptc-registry"
_HTPASSWD_AUTH = """\
auth:
  htpasswd:
    realm: {realm}
    path: {path}
"""


#: ``middleware.storage`` ``redirect`` (distribution's storage middleware docs): blob
#: GETs answer ``307`` to ``baseurl``'s scheme and host with the path of the blob's
#: data in the storage tree (``/docker/registry/v2/blobs/sha256/<2 hex>/<hex>/data``;
#: 2.8.2 drops any path of ``baseurl``).
_REDIRECT_MIDDLEWARE = """\
middleware:
  storage:
    - name: redirect
      options:
        baseurl: {baseurl}
"""


#: ``validation.manifests.urls.allow`` (distribution's configuration docs): regular
#: expressions a URL in a pushed manifest's ``urls`` must match. Unset, distribution
#: 2.8 refuses every manifest whose descriptors carry ``urls`` (foreign layers).
_MANIFEST_URLS = """\
validation:
  manifests:
    urls:
      allow:
{patterns}
"""


class TokenAuthority(Protocol):
    """What the registry's ``auth.token`` section needs from a token server.

    ``realm``: the token endpoint URL sent in challenges; ``service``: the
    registry's service name (the tokens' ``aud``); ``issuer``: the tokens'
    ``iss``; ``root_cert_path``: a PEM bundle the tokens' ``x5c`` chain must
    verify against. Read once, when the registry starts.
    """

    @property
    def realm(self) -> str: ...

    service: str
    issuer: str
    root_cert_path: Path


def _deathsig_argv() -> list[str]:
    """The :data:`_DEATHSIG_EXEC` prefix of an argv, owned by this process."""
    return [sys.executable, "-I", "-S", "-c", _DEATHSIG_EXEC, str(os.getpid())]


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
    ``token_server``: run in token-auth mode against this (already started) token
    server; every request then needs a Bearer token from its realm.
    ``htpasswd``: run in Basic-auth mode with this bcrypt htpasswd file (read when
    the registry starts); every request then needs a listed user's password.
    ``redirect_baseurl``: enable the ``redirect`` storage middleware, so blob reads
    are redirected (``307``) to this URL (``http://HOST:PORT``) plus the blob data's
    path under :attr:`storage`; serve :attr:`storage` there (e.g. with
    :class:`pytest_containers.plugins.file_server.FileServer`).
    ``manifest_urls_allow``: regular expressions (Go syntax) of the ``urls`` that
    pushed manifests may give for their layers (non-distributable and Docker
    foreign layers); none (the default): distribution refuses any manifest with
    ``urls``. A layer with ``urls`` need not be in the registry.
    """

    def __init__(
        self,
        binary: str = REGISTRY_BINARY,
        *,
        allow_schema1: bool = False,
        token_server: TokenAuthority | None = None,
        htpasswd: Path | None = None,
        redirect_baseurl: str | None = None,
        manifest_urls_allow: Sequence[str] = (),
    ) -> None:
        if token_server is not None and htpasswd is not None:
            raise ValueError("a registry has one auth mode: token_server or htpasswd, not both")
        self.htpasswd = htpasswd
        self.binary = binary
        self.allow_schema1 = allow_schema1
        self.token_server = token_server
        self.redirect_baseurl = redirect_baseurl
        self.manifest_urls_allow = tuple(manifest_urls_allow)
        self.workdir = Path(tempfile.mkdtemp(prefix=WORKDIR_PREFIX))
        (self.workdir / "owner").write_text(f"{os.getpid()}\n")
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
        if self.token_server is not None:
            auth = self.token_server
            text += _TOKEN_AUTH.format(
                realm=auth.realm,
                service=auth.service,
                issuer=auth.issuer,
                rootcertbundle=auth.root_cert_path,
            )
        if self.htpasswd is not None:
            text += _HTPASSWD_AUTH.format(realm=HTPASSWD_REALM, path=Path(self.htpasswd).resolve())
        if self.redirect_baseurl is not None:
            text += _REDIRECT_MIDDLEWARE.format(baseurl=self.redirect_baseurl)
        if self.manifest_urls_allow:  # JSON strings are YAML double-quoted scalars
            patterns = "".join(f"        - {json.dumps(p)}\n" for p in self.manifest_urls_allow)
            text += _MANIFEST_URLS.format(patterns=patterns.rstrip("\n"))
        config.write_text(text)
        with self._log.open("wb") as log:
            self._process = subprocess.Popen(
                [*_deathsig_argv(), self.binary, "serve", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                process_group=0,  # a terminal's ^C is for pytest, whose teardown stops it
                # distribution reads REGISTRY_<SECTION>_... as config overrides: podman's
                # REGISTRY_AUTH_FILE would become a bogus ``auth.file`` section
                env={k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")},
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
        self,
        layout_dir: Path,
        ref_name: str,
        repository: str,
        tag: str,
        *,
        fmt: str | None = None,
        creds: str | None = None,
        skopeo_args: Sequence[str] = (),
    ) -> str:
        """``skopeo copy oci:DIR:REF docker://HOST/REPO:TAG``; return the pushed reference.

        ``fmt``: skopeo ``--format`` (``oci``, ``v2s2``); ``None`` keeps the
        source's. ``creds``: ``USER:PASSWORD`` for the token server or the
        htpasswd file (skopeo ``--dest-creds``). ``skopeo_args``: more ``skopeo copy``
        flags, e.g. ``--preserve-digests`` (push the layers as they are in the layout:
        uncompressed or zstd ones too, never swapped for a variant skopeo's blob info
        cache knows). A layout entry that is an index is copied with
        ``--all``. Raises ``subprocess.CalledProcessError`` (with stderr) on failure.
        """
        dest = f"{self.host}/{repository}:{tag}"
        argv = ["skopeo", "copy", "--quiet", "--all", "--dest-tls-verify=false"]
        if fmt:
            argv += ["--format", fmt]
        if creds:
            argv += ["--dest-creds", creds]
        argv += list(skopeo_args)
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


def sweep_workdirs(tmpdir: Path | None = None) -> list[Path]:
    """Remove the ``ptc-registry-*`` dirs in ``tmpdir`` (default
    ``tempfile.gettempdir()``) whose ``owner`` process is dead (their registry died
    with it); dirs without an owner, or with a live one, are left alone. Returns the
    removed dirs, sorted."""
    removed = []
    for workdir in sorted(Path(tmpdir or tempfile.gettempdir()).glob(f"{WORKDIR_PREFIX}*")):
        if owner_alive(workdir) is False:
            shutil.rmtree(workdir, ignore_errors=True)
            removed.append(workdir)
    return removed


@pytest.fixture(scope="session")
def registry() -> Iterator[RegistryServer]:
    """A running local distribution registry, shared by the whole session.

    Scope: session. Depends on: ``/usr/bin/docker-registry`` (the test is
    skipped when it is missing). Yields: a started :class:`RegistryServer`
    (``.host`` is ``127.0.0.1:PORT``, plain HTTP, no auth, deletes enabled).
    Cleanup: terminates the process (kill after 5 s), reaps it and removes its
    storage directory; nothing is left running, and if pytest is killed the
    registry dies with it (its directory goes at the next session's start).
    """
    if not Path(REGISTRY_BINARY).exists():
        pytest.skip(f"{REGISTRY_BINARY} is not installed")
    sweep_workdirs()
    server = RegistryServer().start()
    try:
        yield server
    finally:
        server.stop()
