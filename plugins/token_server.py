"""A minimal Docker token server for tests (distribution ``docs/spec/auth/token.md``, ``jwt.md``).

:class:`TokenServer` answers ``GET /token?service=S&scope=T:NAME:ACTIONS[&scope=...]``
on a free ``127.0.0.1`` port (stdlib ``http.server`` in a thread) with
``{"token": JWT, "access_token": JWT, "expires_in": 300, "issued_at": RFC 3339}``.
The JWT is signed ES256 by a fresh P-256 key; its header carries the key's
self-signed certificate as ``x5c``, which the registry verifies against its
``auth.token.rootcertbundle`` (:attr:`TokenServer.root_cert_path`).

Grants: an anonymous request gets the requested actions that are in
``anonymous_actions`` (``pull``); a request with HTTP Basic credentials of a
configured user gets every requested action; wrong credentials get 401, an
unknown ``service`` 400, and ``refuse_status`` (e.g. 403) refuses everything.
``POST /token`` takes the OAuth2 form (distribution ``docs/spec/auth/oauth.md``)
``grant_type=refresh_token&refresh_token=R&service=S&scope=...``: a refresh token
listed in ``refresh_tokens`` counts as its user's credentials, others get 401.
Every request is recorded in :attr:`TokenServer.requests`, in arrival order.

Needs the ``cryptography`` package (a test dependency, not a runtime one):
this module is imported only by the tests that use it.
"""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
import json
import shutil
import tempfile
import threading
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID
from pytest_containers.plugins._httpd import ThreadedServer

#: Lifetime of issued tokens, in seconds (the spec's default is 60).
TOKEN_TTL = 300.0


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class TokenRequest:
    """One request the server answered.

    ``path``: the URL path; ``query``: its parameters, each a list of values in
    order (``scope`` may repeat); ``user``: the Basic user name, ``None`` when
    anonymous; ``status``: the HTTP status sent; ``access``: the granted
    ``[{type, name, actions}]`` claim (empty unless ``status`` is 200).
    """

    path: str
    query: Mapping[str, list[str]]
    user: str | None
    status: int
    access: tuple[Mapping[str, Any], ...] = ()

    @property
    def scopes(self) -> list[str]:
        return list(self.query.get("scope", []))


def parse_scope(scope: str) -> dict[str, Any]:
    """``repository:team/app:pull,push`` -> ``{"type", "name", "actions"}`` (token.md "Scope").

    The name may itself contain ``:`` (a registry host with a port); the type
    may carry a class, ``repository(plugin)``, which is dropped.
    """
    rtype, _, rest = scope.partition(":")
    name, _, actions = rest.rpartition(":")
    if not rtype or not name:
        raise ValueError(f"malformed scope {scope!r}")
    return {
        "type": rtype.split("(", 1)[0],
        "name": name,
        "actions": [a for a in actions.split(",") if a],
    }


@dataclass
class TokenServer:
    """A token server; :meth:`start` it, :meth:`stop` it (or use ``with``).

    ``service``: the expected ``service`` parameter and the tokens' ``aud``;
    ``issuer``: the tokens' ``iss`` (the registry's ``auth.token.issuer``);
    ``users``: user name -> password accepted as HTTP Basic credentials, whose
    requests are granted every requested action; ``anonymous_actions``: what
    anonymous requests may get; ``refuse_status``: when set, every request is
    answered with this status and a JSON error body.
    """

    service: str = "ptc-registry"
    issuer: str = "ptc-token-server"
    users: Mapping[str, str] = field(default_factory=dict)
    anonymous_actions: Iterable[str] = ("pull",)
    refuse_status: int | None = None
    ttl: float = TOKEN_TTL
    refresh_tokens: Mapping[str, str] = field(default_factory=dict)
    requests: list[TokenRequest] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        self.anonymous_actions = frozenset(self.anonymous_actions)
        self.workdir = Path(tempfile.mkdtemp(prefix="ptc-token-server-"))
        self.root_cert_path = self.workdir / "root.pem"
        self.port = 0
        self._lock = threading.Lock()
        self._server = ThreadedServer()
        self._key = ec.generate_private_key(ec.SECP256R1())
        now = _dt.datetime.now(_dt.UTC)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, self.issuer)])
        self._cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _dt.timedelta(hours=1))
            .not_valid_after(now + _dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self._key, hashes.SHA256())
        )
        self.root_cert_path.write_bytes(self._cert.public_bytes(serialization.Encoding.PEM))

    # -- addresses ------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def realm(self) -> str:
        """The realm for the registry's ``auth.token.realm``: ``http://127.0.0.1:PORT/token``."""
        return f"{self.url}/token"

    # -- tokens ---------------------------------------------------------------

    def issue(self, access: list[dict[str, Any]], subject: str = "") -> str:
        """A compact JWS: ES256 over ``header.claims``, ``x5c`` = [our certificate, DER]."""
        now = int(_dt.datetime.now(_dt.UTC).timestamp())
        der = self._cert.public_bytes(serialization.Encoding.DER)
        header = {"typ": "JWT", "alg": "ES256", "x5c": [base64.b64encode(der).decode("ascii")]}
        claims = {
            "iss": self.issuer,
            "sub": subject,
            "aud": self.service,
            "exp": now + int(self.ttl),
            "nbf": now - 1,
            "iat": now,
            "jti": uuid.uuid4().hex,
            "access": access,
        }
        signing_input = ".".join(
            _b64url(json.dumps(part, separators=(",", ":")).encode()) for part in (header, claims)
        )
        der_sig = self._key.sign(signing_input.encode("ascii"), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der_sig)  # JWS wants raw r || s, 32 bytes each
        return f"{signing_input}.{_b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"

    def _grant(self, scopes: list[str], user: str | None) -> list[dict[str, Any]]:
        granted = []
        for scope in scopes:
            wanted = parse_scope(scope)
            allowed = (
                wanted["actions"]
                if user
                else [a for a in wanted["actions"] if a in self.anonymous_actions]
            )
            granted.append({**wanted, "actions": allowed})
        return granted

    def _answer(
        self, path: str, query: dict[str, list[str]], authorization: str | None
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        """(status, JSON body, extra headers) for one request."""
        user: str | None = None
        access: list[dict[str, Any]] = []

        def done(status: int, body: dict[str, Any], **headers: str) -> tuple[int, dict, dict]:
            record = TokenRequest(path, query, user, status, tuple(access) if status == 200 else ())
            with self._lock:
                self.requests.append(record)
            return status, body, headers

        def error(status: int, code: str, message: str, **headers: str) -> tuple[int, dict, dict]:
            return done(status, {"errors": [{"code": code, "message": message}]}, **headers)

        if authorization and authorization.lower().startswith("basic "):
            try:
                name, _, password = (
                    base64.b64decode(authorization[6:].strip(), validate=True)
                    .decode()
                    .partition(":")
                )
            except (binascii.Error, UnicodeDecodeError):
                return error(400, "UNSUPPORTED", "malformed Basic credentials")
            user = name
            if self.users.get(name) != password:
                return error(
                    401,
                    "UNAUTHORIZED",
                    f"bad credentials for {name!r}",
                    **{"WWW-Authenticate": 'Basic realm="ptc-token-server"'},
                )
        if self.refuse_status is not None:
            return error(self.refuse_status, "DENIED", "this token server refuses every request")
        if path != "/token":
            return error(404, "NOT_FOUND", f"no such endpoint {path}")
        if query.get("service") != [self.service]:
            return error(400, "UNSUPPORTED", f"unknown service {query.get('service')!r}")
        try:
            access = self._grant(query.get("scope", []), user)
        except ValueError as exc:
            return error(400, "UNSUPPORTED", str(exc))
        token = self.issue(access, subject=user or "")
        issued = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "token": token,
            "access_token": token,
            "expires_in": int(self.ttl),
            "issued_at": issued,
        }
        return done(200, body)

    # -- lifecycle ------------------------------------------------------------

    def start(self) -> TokenServer:
        """Listen on a free ``127.0.0.1`` port and serve in a thread; return self."""
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"  # one request per connection: threads end

            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                split = urlsplit(self.path)
                status, body, headers = server._answer(
                    split.path, parse_qs(split.query), self.headers.get("Authorization")
                )
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                length = int(self.headers.get("Content-Length") or 0)
                form = parse_qs(self.rfile.read(length).decode())
                user = server.refresh_tokens.get((form.get("refresh_token") or [""])[0])
                grant = form.get("grant_type") == ["refresh_token"] and user in server.users
                basic = f"{user}:{server.users[user]}" if grant and user else ":"
                authorization = "Basic " + base64.b64encode(basic.encode()).decode()
                del self.headers["Authorization"]
                self.headers["Authorization"] = authorization
                self.path = urlsplit(self.path).path + "?" + urlencode(form, doseq=True)
                self.do_GET()

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self.port = self._server.start(Handler, "ptc-token-server")
        return self

    def stop(self) -> None:
        """Stop serving, close the socket, join the threads, remove the temp dir.

        Safe to call twice. The port stays recorded, so :attr:`realm` then names
        an address where nothing listens (an unreachable realm).
        """
        self._server.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> TokenServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
