"""Registry credentials, authentication challenges and a Bearer token cache.

Pure (no network): :mod:`pytest_containers.image.registry` does the HTTP.

Challenges (RFC 7235 section 4.1, ``WWW-Authenticate``): :func:`parse_challenges`
turns a header into ``[(scheme, params)]``, one entry per challenge, in order.

Credentials (Docker ``config.json``, containers-auth.json(5)), files read in
this order, the first that has credentials for the host wins (podman's order):

1. ``$REGISTRY_AUTH_FILE`` if set, else ``$XDG_RUNTIME_DIR/containers/auth.json``;
2. ``$XDG_CONFIG_HOME/containers/auth.json`` (``~/.config/containers/auth.json``);
3. ``$DOCKER_CONFIG/config.json``, else ``~/.docker/config.json``.

A missing file is skipped. In each file (all have the same format)::

    {"auths": {"HOST[:PORT]": {"auth": base64("USER:PASSWORD")}
                              | {"username": U, "password": P}
                              | {"identitytoken": REFRESH_TOKEN, ...}},
     "credHelpers": {"HOST[:PORT]": "NAME"},
     "credsStore": "NAME"}

the host's ``credHelpers`` entry comes first, then its ``auths`` entry, then
``credsStore``. A helper is ``docker-credential-NAME get`` on ``$PATH``: the
server address on stdin, ``{"ServerURL", "Username", "Secret"}`` JSON on stdout;
a non-zero exit saying "credentials not found" means none (a ``Username`` of
``<token>`` makes ``Secret`` an identity token). Keys are matched as Docker
does: ``HOST:PORT`` exactly, then any key that is the same host once its
``http(s)://`` and path are dropped (``https://HOST:PORT/v1/``); Docker Hub
(``docker.io``, ``index.docker.io``, ``registry-1.docker.io``) is stored under
``https://index.docker.io/v1/``. A malformed file raises
:class:`AuthenticationError` naming the file and what is wrong.

Tokens (distribution ``docs/spec/auth/token.md``): :class:`TokenCache` keeps
each token per ``(realm, service, scope)`` for its ``expires_in`` seconds
(default 60 and never less, as the spec asks and Docker does), minus
``EXPIRY_MARGIN`` seconds, measured from its arrival on a monotonic clock.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from pytest_containers.exceptions import AuthenticationError

#: The key Docker stores Docker Hub credentials under, and the hosts it stands for.
DOCKER_HUB_KEY = "https://index.docker.io/v1/"
DOCKER_HUB_HOSTS = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
#: Token lifetime when ``expires_in`` is absent, and the least accepted (token.md), seconds.
DEFAULT_TOKEN_TTL = 60.0
#: Seconds before its expiry that a cached token is no longer used.
EXPIRY_MARGIN = 5.0
#: Seconds a credential helper may take.
HELPER_TIMEOUT = 30.0

# -- challenges (RFC 7235 section 2.1 and 4.1) --------------------------------

_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_SCHEME_RE = re.compile(rf"({_TOKEN})")
_TOKEN68_RE = re.compile(r"[ \t]+([A-Za-z0-9\-._~+/]+=*)[ \t]*(?:,|$)")
_PARAM_RE = re.compile(rf'[ \t]*({_TOKEN})[ \t]*=[ \t]*(?:"((?:[^"\\]|\\.)*)"|([^,\s"]*))')
_SEPARATORS_RE = re.compile(r"[\s,]*")
_LIST_SEP_RE = re.compile(r"[ \t]*(?:,[ \t]*)*")


class Challenge(NamedTuple):
    """One challenge: ``scheme`` lower-cased (``basic``, ``bearer``), ``params``
    with lower-cased names and unquoted values (a token68 is under ``""``)."""

    scheme: str
    params: dict[str, str]


def parse_challenges(header: str) -> list[Challenge]:
    """All challenges of a ``WWW-Authenticate`` value, in order (RFC 7235 4.1).

    ``Basic realm="x", Bearer realm="y",service="z"`` gives two. Tolerates
    spaces around ``=`` and ``,``, empty list elements, unquoted values (up to
    the next comma or space), and commas inside quoted values; a parameter named
    twice keeps its first value; text that is no challenge is skipped. Never raises.
    """
    out: list[Challenge] = []
    i, end = 0, len(header)
    while True:
        i = _SEPARATORS_RE.match(header, i).end()  # type: ignore[union-attr]
        if i >= end:
            return out
        scheme = _SCHEME_RE.match(header, i)
        if scheme is None:  # garbage: skip to the next comma
            comma = header.find(",", i)
            i = end if comma < 0 else comma + 1
            continue
        i = scheme.end()
        params: dict[str, str] = {}
        token68 = _TOKEN68_RE.match(header, i)
        if token68 is not None:  # Negotiate abc== (RFC 7235 2.1)
            params[""] = token68.group(1)
            i = token68.end()
        else:
            while (param := _PARAM_RE.match(header, i)) is not None:
                name, quoted, bare = param.groups()
                value = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else bare
                params.setdefault(name.lower(), value)
                i = _LIST_SEP_RE.match(header, param.end()).end()  # type: ignore[union-attr]
        out.append(Challenge(scheme.group(1).lower(), params))


def find_challenge(challenges: list[Challenge], scheme: str) -> Challenge | None:
    """The first challenge of ``scheme`` (lower case), or ``None``."""
    return next((c for c in challenges if c.scheme == scheme), None)


def challenge_error(header: str) -> str:
    """Why a Bearer token was not enough, from the ``error`` of its challenge (RFC 6750 3.1).

    Registry 2.8.2 sends the same body ("authentication required") whether the
    token was rejected or merely lacks the scope; only the challenge tells.
    Returns ``" (...)"`` to append to a message, or ``""``.
    """
    bearer = find_challenge(parse_challenges(header), "bearer")
    params = bearer.params if bearer else {}
    error = params.get("error")
    realm = params.get("realm", "the realm")
    if error == "invalid_token":
        return (
            f" (error=invalid_token: the registry rejected the token from {realm}: signature,"
            " certificate, issuer, audience or expiry)"
        )
    if error == "insufficient_scope":
        scope = params.get("scope") or "the requested scope"
        return f" (error=insufficient_scope: the token from {realm} does not grant {scope})"
    return f" (error={error})" if error else ""


# -- credentials ------------------------------------------------------------


@dataclass(frozen=True)
class Credentials:
    """A user name and password (or an ``identity_token``, an OAuth2 refresh
    token) for one registry; ``source`` says where they were found. The
    secrets are kept out of ``repr``."""

    username: str
    password: str = field(repr=False)
    source: str = ""
    identity_token: str | None = field(default=None, repr=False)

    @property
    def basic_authorization(self) -> str:
        """The ``Authorization`` value ``Basic base64(user:password)`` (RFC 7617)."""
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")


class Lookup(NamedTuple):
    """What :meth:`Keychain.lookup` found (``credentials``, or ``None``) and
    ``searched``: one line per place looked at, in order, for error messages."""

    credentials: Credentials | None
    searched: tuple[str, ...]


def normalize_host(host: str) -> str:
    """A ``config.json`` key or host as a bare ``host[:port]``, lower-cased
    (Docker's ``ConvertToHostname``); Docker Hub aliases give ``docker.io``."""
    name = host.strip().lower()
    for prefix in ("http://", "https://"):
        name = name.removeprefix(prefix)
    name = name.split("/", 1)[0]
    return "docker.io" if name in DOCKER_HUB_HOSTS else name


def lookup_keys(host: str) -> tuple[str, ...]:
    """The exact keys tried for ``host``, in order: ``HOST``, ``https://HOST``,
    ``http://HOST`` (for Docker Hub: ``https://index.docker.io/v1/`` then its host names)."""
    if normalize_host(host) == "docker.io":
        return (DOCKER_HUB_KEY, "index.docker.io", "docker.io", "registry-1.docker.io")
    return (host, f"https://{host}", f"http://{host}")


class Keychain:
    """Finds :class:`Credentials` for a registry host in the auth files.

    ``environ``: the environment to read (``HOME``, ``DOCKER_CONFIG``,
    ``REGISTRY_AUTH_FILE``, ``XDG_RUNTIME_DIR``, ``XDG_CONFIG_HOME``, and
    ``PATH`` for credential helpers); defaults to ``os.environ`` at each lookup.
    """

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = environ

    @property
    def environ(self) -> Mapping[str, str]:
        return os.environ if self._environ is None else self._environ

    def auth_files(self) -> list[Path]:
        """The files searched, in precedence order (see the module docstring)."""
        env = self.environ
        home = Path(env.get("HOME") or Path.home())
        files = []
        if env.get("REGISTRY_AUTH_FILE"):
            files.append(Path(env["REGISTRY_AUTH_FILE"]))
        elif env.get("XDG_RUNTIME_DIR"):
            files.append(Path(env["XDG_RUNTIME_DIR"]) / "containers/auth.json")
        config_home = Path(env.get("XDG_CONFIG_HOME") or home / ".config")
        files.append(config_home / "containers/auth.json")
        docker = Path(env["DOCKER_CONFIG"]) if env.get("DOCKER_CONFIG") else home / ".docker"
        files.append(docker / "config.json")
        return list(dict.fromkeys(files))

    def get(self, host: str) -> Credentials | None:
        """Credentials for ``host`` (``HOST[:PORT]``), or ``None``."""
        return self.lookup(host).credentials

    def lookup(self, host: str) -> Lookup:
        """Search every file in order; stop at the first credentials for ``host``."""
        searched: list[str] = []
        for path in self.auth_files():
            try:
                text = path.read_text(encoding="utf-8")
            except FileNotFoundError:
                searched.append(f"{path} (no such file)")
                continue
            except OSError as exc:
                raise _file_error(path, f"cannot be read: {exc.strerror or exc}") from exc
            creds = self._search_file(path, _load(path, text), host, searched)
            if creds is not None:
                return Lookup(creds, tuple(searched))
        return Lookup(None, tuple(searched))

    def _search_file(
        self, path: Path, config: dict[str, Any], host: str, searched: list[str]
    ) -> Credentials | None:
        helpers = config.get("credHelpers") or {}
        key = _find_key(helpers, host)
        if key is not None:
            helper = helpers[key]
            return self._run_helper(helper, key, f"credHelpers[{key!r}] in {path}", searched)
        auths = config.get("auths") or {}
        key = _find_key(auths, host)
        if key is not None:
            creds = _entry_credentials(path, key, auths[key])
            if creds is not None:
                return creds
        store = config.get("credsStore")
        if store:
            server = lookup_keys(host)[0]
            return self._run_helper(store, server, f"credsStore in {path}", searched)
        searched.append(f"{path} (no entry for {host})")
        return None

    def _run_helper(
        self, name: str, server: str, why: str, searched: list[str]
    ) -> Credentials | None:
        """``docker-credential-NAME get`` with ``server`` on stdin (docker-credential-helpers)."""
        program = f"docker-credential-{name}"
        where = f"{program} ({why})"
        executable = shutil.which(program, path=self.environ.get("PATH", os.defpath))
        if executable is None:
            searched.append(f"{where}: not found on PATH")
            return None

        def failed(what: str) -> AuthenticationError:
            message = f"credential helper {where} {what} (asked for {server})"
            return AuthenticationError(message, url=None, status=None, path=executable)

        try:
            done = subprocess.run(
                [executable, "get"],
                input=server,
                capture_output=True,
                text=True,
                env=dict(self.environ),
                timeout=HELPER_TIMEOUT,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise failed(f"failed: {exc}") from exc
        output = (done.stdout + done.stderr).strip()
        if done.returncode != 0:
            if "credentials not found" in output.lower():
                searched.append(f"{where}: no credentials for {server}")
                return None
            raise failed(f"exited with {done.returncode}: {output[:300]}")
        try:
            answer = json.loads(done.stdout)
            user, secret = answer["Username"], answer["Secret"]
            if not isinstance(user, str) or not isinstance(secret, str):
                raise TypeError("Username and Secret must be strings")
        except (ValueError, KeyError, TypeError) as exc:
            raise failed(f'printed no {{"Username", "Secret"}} JSON: {exc!r}') from exc
        if user == "<token>":
            return Credentials(user, "", source=where, identity_token=secret)
        return Credentials(user, secret, source=where)


def _file_error(path: Path, what: str) -> AuthenticationError:
    return AuthenticationError(f"auth file {path} {what}", url=None, status=None, path=str(path))


def _load(path: Path, text: str) -> dict[str, Any]:
    """Parse and shape-check one auth file."""
    try:
        config = json.loads(text) if text.strip() else {}
    except ValueError as exc:
        raise _file_error(path, f"is not valid JSON: {exc}") from exc
    if not isinstance(config, dict):
        raise _file_error(path, f"must hold a JSON object, not {type(config).__name__}")
    for name, kind in (("auths", dict), ("credHelpers", dict), ("credsStore", str)):
        value = config.get(name)
        if value is not None and not isinstance(value, kind):
            want = "an object" if kind is dict else "a string"
            raise _file_error(path, f"has {name!r} that is not {want}: {json.dumps(value)[:80]}")
    for key, value in (config.get("auths") or {}).items():
        if not isinstance(value, dict):
            raise _file_error(path, f"has an auths entry {key!r} that is not a JSON object")
    for key, value in (config.get("credHelpers") or {}).items():
        if not isinstance(value, str) or not value:
            raise _file_error(path, f"has a credHelpers entry {key!r} that is not a helper name")
    return config


def _find_key(entries: Mapping[str, Any], host: str) -> str | None:
    """The key of ``entries`` for ``host``: an exact lookup key, else a normalized match."""
    for key in lookup_keys(host):
        if key in entries:
            return key
    wanted = normalize_host(host)
    return next((key for key in entries if normalize_host(key) == wanted), None)


def _entry_credentials(path: Path, key: str, entry: Mapping[str, Any]) -> Credentials | None:
    """The credentials of one ``auths`` entry; ``None`` for an empty one (a credsStore stub)."""
    source = f"auths[{key!r}] in {path}"
    token = entry.get("identitytoken") or None
    if entry.get("auth"):
        try:
            decoded = base64.b64decode(str(entry["auth"]), validate=True).decode("utf-8")
        except (binascii.Error, ValueError) as exc:
            why = f"has an auths[{key!r}].auth that is not base64: {exc}"
            raise _file_error(path, why) from exc
        user, sep, password = decoded.partition(":")
        if not sep:
            raise _file_error(path, f"has an auths[{key!r}].auth without ':' (want USER:PASSWORD)")
        return Credentials(user, password, source=source, identity_token=token)
    name, secret = entry.get("username"), entry.get("password")
    if name or secret:
        if not isinstance(name, str) or not isinstance(secret, str) or not name:
            raise _file_error(path, f"has an auths[{key!r}] without both username and password")
        return Credentials(name, secret, source=source, identity_token=token)
    if token:
        return Credentials("<token>", "", source=source, identity_token=str(token))
    return None


# -- tokens (token.md "Token Response Fields") --------------------------------


class TokenCache:
    """Bearer tokens per ``(realm, service, scope)``, until they expire.

    ``clock``: a monotonic clock in seconds (``time.monotonic``); injectable for tests.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._tokens: dict[tuple[str, str, str], tuple[str, float]] = {}

    def get(self, realm: str, service: str, scope: str) -> str | None:
        """The cached token, or ``None`` when absent or within ``EXPIRY_MARGIN`` of expiry."""
        found = self._tokens.get((realm, service, scope))
        if found is None or self._clock() >= found[1]:
            return None
        return found[0]

    def put(
        self, realm: str, service: str, scope: str, token: str, expires_in: float | None
    ) -> None:
        """Keep ``token`` for ``expires_in`` seconds from now (``None``, or less than
        ``DEFAULT_TOKEN_TTL``, counts as ``DEFAULT_TOKEN_TTL``) less ``EXPIRY_MARGIN``."""
        ttl = max(DEFAULT_TOKEN_TTL, expires_in or 0.0)
        self._tokens[(realm, service, scope)] = (token, self._clock() + ttl - EXPIRY_MARGIN)

    def discard(self, realm: str, service: str, scope: str) -> None:
        self._tokens.pop((realm, service, scope), None)
