"""Challenge parsing, credential lookup (config.json, auth.json, helpers) and the token cache."""

from __future__ import annotations

import base64
import json
import pickle
import sys
from pathlib import Path

import pytest

from pytest_containers.exceptions import AuthenticationError
from pytest_containers.image.auth import (
    DOCKER_HUB_KEY,
    Challenge,
    Credentials,
    Keychain,
    TokenCache,
    challenge_error,
    lookup_keys,
    normalize_host,
    parse_challenges,
)

HOST = "127.0.0.1:5000"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


# -- challenges ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (
            'Bearer realm="https://auth.example/token",service="registry.example",'
            'scope="repository:a/b:pull"',
            [
                (
                    "bearer",
                    {
                        "realm": "https://auth.example/token",
                        "service": "registry.example",
                        "scope": "repository:a/b:pull",
                    },
                )
            ],
        ),
        # odd spacing around = and , and before the scheme
        (
            '  Bearer   realm = "https://a/t" ,   service= "reg" ,scope ="x"  ',
            [("bearer", {"realm": "https://a/t", "service": "reg", "scope": "x"})],
        ),
        # a comma inside a quoted value
        (
            'Bearer realm="r",scope="repository:a:pull,push"',
            [("bearer", {"realm": "r", "scope": "repository:a:pull,push"})],
        ),
        # no service
        ('Bearer realm="https://a/t"', [("bearer", {"realm": "https://a/t"})]),
        # unquoted values (token68-free), including URL characters
        (
            "Bearer realm=https://a:8443/t,service=reg",
            [("bearer", {"realm": "https://a:8443/t", "service": "reg"})],
        ),
        # several schemes in one header
        (
            'Basic realm="x", Bearer realm="y",service="z"',
            [("basic", {"realm": "x"}), ("bearer", {"realm": "y", "service": "z"})],
        ),
        (
            'Bearer realm="y", scope="a,b", Basic realm="x"',
            [("bearer", {"realm": "y", "scope": "a,b"}), ("basic", {"realm": "x"})],
        ),
        # case-insensitive scheme and names; escapes in quoted strings
        ('BASIC Realm="a \\"q\\" b"', [("basic", {"realm": 'a "q" b'})]),
        # token68, bare schemes, empty elements
        ("Negotiate YWJj==, Basic", [("negotiate", {"": "YWJj=="}), ("basic", {})]),
        (', ,Basic realm="x",, ', [("basic", {"realm": "x"})]),
        # a parameter named twice keeps the first value
        ('Basic realm="a", realm="b"', [("basic", {"realm": "a"})]),
        ("", []),
        ('"junk", Basic realm=x', [("basic", {"realm": "x"})]),
        # registry 2.8.2's own answer to a rejected token
        (
            'Bearer realm="http://127.0.0.1:1/token",service="ptc-registry",'
            'scope="repository:r:pull",error="invalid_token"',
            [
                (
                    "bearer",
                    {
                        "realm": "http://127.0.0.1:1/token",
                        "service": "ptc-registry",
                        "scope": "repository:r:pull",
                        "error": "invalid_token",
                    },
                )
            ],
        ),
    ],
)
def test_parse_challenges(header: str, expected: list[tuple[str, dict[str, str]]]) -> None:
    parsed = parse_challenges(header)
    assert parsed == expected
    assert all(isinstance(c, Challenge) for c in parsed)


def test_challenge_error() -> None:
    assert challenge_error('Bearer realm="r",error="invalid_token"').startswith(
        " (error=invalid_token: the registry rejected the token from r"
    )
    assert "does not grant repository:a:pull,push" in challenge_error(
        'Basic realm="b", Bearer realm="r",scope="repository:a:pull,push",'
        'error="insufficient_scope"'
    )
    assert challenge_error('Bearer realm="r",error="other"') == " (error=other)"
    assert challenge_error('Bearer realm="r"') == ""
    assert challenge_error('Basic realm="r",error="x"') == ""


# -- keys ---------------------------------------------------------------------


def test_lookup_keys_and_normalization() -> None:
    assert lookup_keys(HOST) == (HOST, f"https://{HOST}", f"http://{HOST}")
    for hub in ("docker.io", "index.docker.io", "registry-1.docker.io"):
        assert lookup_keys(hub)[0] == DOCKER_HUB_KEY == "https://index.docker.io/v1/"
    assert normalize_host("https://Registry.Example:5000/v1/") == "registry.example:5000"
    assert normalize_host(DOCKER_HUB_KEY) == "docker.io"


# -- credentials from files ---------------------------------------------------


class Env:
    """A home directory and an environment for a :class:`Keychain`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.home = root / "home"
        self.home.mkdir()
        self.bin = root / "bin"
        self.bin.mkdir()
        self.vars: dict[str, str] = {"HOME": str(self.home), "PATH": str(self.bin)}

    def write(self, relative: str, content: object) -> Path:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content if isinstance(content, str) else json.dumps(content))
        return path

    def helper(self, name: str, script: str) -> None:
        path = self.bin / f"docker-credential-{name}"
        path.write_text(
            f"#!{sys.executable}\nimport json, sys\nserver = sys.stdin.read()\n{script}"
        )
        path.chmod(0o755)

    def keychain(self) -> Keychain:
        return Keychain(self.vars)


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return Env(tmp_path)


def auths(key: str, user: str = "u", password: str = "p") -> dict:
    return {"auths": {key: {"auth": b64(f"{user}:{password}")}}}


@pytest.mark.parametrize(
    "key", [HOST, f"https://{HOST}", f"http://{HOST}", f"https://{HOST}/v1/", f"{HOST}/v2/"]
)
def test_docker_config_auth_field_and_key_forms(env: Env, key: str) -> None:
    path = env.write("home/.docker/config.json", auths(key, "user", "pa:ss"))
    creds = env.keychain().get(HOST)
    assert creds is not None
    assert (creds.username, creds.password) == ("user", "pa:ss")
    assert str(path) in creds.source and key in creds.source
    assert env.keychain().get("127.0.0.1:5001") is None


def test_docker_config_username_password_fields_and_docker_config_var(env: Env) -> None:
    env.write("home/.docker/config.json", auths(HOST, "from-home"))
    env.write("dc/config.json", {"auths": {HOST: {"username": "u2", "password": "p2"}}})
    env.vars["DOCKER_CONFIG"] = str(env.root / "dc")
    creds = env.keychain().get(HOST)
    assert creds is not None and (creds.username, creds.password) == ("u2", "p2")


def test_docker_hub_key(env: Env) -> None:
    env.write("home/.docker/config.json", auths(DOCKER_HUB_KEY, "hub"))
    for host in ("docker.io", "registry-1.docker.io", "index.docker.io"):
        creds = env.keychain().get(host)
        assert creds is not None and creds.username == "hub"


def test_precedence_registry_auth_file_then_containers_then_docker(env: Env) -> None:
    env.write("home/.docker/config.json", auths(HOST, "docker"))
    chain = env.keychain()
    assert chain.get(HOST).username == "docker"  # type: ignore[union-attr]
    env.write("home/.config/containers/auth.json", auths(HOST, "containers"))
    assert chain.get(HOST).username == "containers"  # type: ignore[union-attr]
    env.write("run/containers/auth.json", auths(HOST, "runtime"))
    env.vars["XDG_RUNTIME_DIR"] = str(env.root / "run")
    assert chain.get(HOST).username == "runtime"  # type: ignore[union-attr]
    env.vars["REGISTRY_AUTH_FILE"] = str(env.write("custom.json", auths(HOST, "custom")))
    assert chain.get(HOST).username == "custom"  # type: ignore[union-attr]
    # REGISTRY_AUTH_FILE replaces the runtime dir's file, not the later ones
    assert chain.auth_files() == [
        env.root / "custom.json",
        env.home / ".config/containers/auth.json",
        env.home / ".docker/config.json",
    ]
    # a file without an entry for the host is passed over
    env.write("custom.json", auths("other:1", "x"))
    assert chain.get(HOST).username == "containers"  # type: ignore[union-attr]


def test_nothing_found_says_where_it_looked(env: Env) -> None:
    env.write("home/.docker/config.json", auths("other:1"))
    env.vars["REGISTRY_AUTH_FILE"] = str(env.root / "missing.json")
    found = env.keychain().lookup(HOST)
    assert found.credentials is None
    assert found.searched == (
        f"{env.root / 'missing.json'} (no such file)",
        f"{env.home / '.config/containers/auth.json'} (no such file)",
        f"{env.home / '.docker/config.json'} (no entry for {HOST})",
    )


@pytest.mark.parametrize(
    ("content", "complaint"),
    [
        ("{not json", "is not valid JSON"),
        ("[]", "must hold a JSON object, not list"),
        ({"auths": []}, "has 'auths' that is not an object: []"),
        ({"auths": {HOST: "x"}}, f"auths entry '{HOST}' that is not a JSON object"),
        ({"auths": {HOST: {"auth": "%%%"}}}, f"auths['{HOST}'].auth that is not base64"),
        ({"auths": {HOST: {"auth": b64("nocolon")}}}, "without ':' (want USER:PASSWORD)"),
        ({"auths": {HOST: {"username": "u"}}}, "without both username and password"),
        ({"credHelpers": {HOST: 3}}, f"credHelpers entry '{HOST}' that is not a helper name"),
        ({"credsStore": ["x"]}, "has 'credsStore' that is not a string: [\"x\"]"),
    ],
)
def test_malformed_file_names_the_file_and_the_fault(
    env: Env, content: object, complaint: str
) -> None:
    path = env.write("home/.docker/config.json", content)
    with pytest.raises(AuthenticationError) as info:
        env.keychain().get(HOST)
    assert str(info.value).startswith(f"auth file {path} ")
    assert complaint in str(info.value)
    assert info.value.path == str(path)
    again = pickle.loads(pickle.dumps(info.value))
    assert again.path == str(path) and str(again) == str(info.value)


def test_empty_file_and_empty_entry_are_no_credentials(env: Env) -> None:
    env.write("home/.docker/config.json", "")
    assert env.keychain().get(HOST) is None
    env.write("home/.docker/config.json", {"auths": {HOST: {}}})
    assert env.keychain().get(HOST) is None


# -- credential helpers -------------------------------------------------------

ANSWER = """
if sys.argv[1:] != ["get"]:
    sys.exit(2)
with open(sys.argv[0] + ".log", "a") as log:
    log.write(server + "\\n")
if server in ("127.0.0.1:5000", "https://index.docker.io/v1/"):
    print(json.dumps({"ServerURL": server, "Username": "helped", "Secret": "s3"}))
else:
    print("credentials not found in native keychain")
    sys.exit(1)
"""


def helper_log(env: Env, name: str) -> list[str]:
    return (env.bin / f"docker-credential-{name}.log").read_text().splitlines()


def test_cred_helpers_per_registry_come_before_auths(env: Env) -> None:
    env.helper("ptctest", ANSWER)
    env.write(
        "home/.docker/config.json",
        {**auths(HOST, "inline"), "credHelpers": {HOST: "ptctest"}, "credsStore": "absent"},
    )
    creds = env.keychain().get(HOST)
    assert creds is not None and (creds.username, creds.password) == ("helped", "s3")
    assert creds.source.startswith("docker-credential-ptctest (credHelpers[")
    assert helper_log(env, "ptctest") == [HOST]


def test_creds_store_is_the_default_after_auths(env: Env) -> None:
    env.helper("ptctest", ANSWER)
    env.write(
        "home/.docker/config.json",
        {"auths": {"other:1": {"auth": b64("inline:x")}, HOST: {}}, "credsStore": "ptctest"},
    )
    chain = env.keychain()
    assert chain.get("other:1").username == "inline"  # type: ignore[union-attr]
    assert chain.get(HOST).username == "helped"  # type: ignore[union-attr]
    assert chain.get("docker.io").username == "helped"  # type: ignore[union-attr]
    found = chain.lookup("127.0.0.1:9")  # the helper answers "credentials not found"
    assert found.credentials is None
    assert found.searched[-1].endswith("no credentials for 127.0.0.1:9")
    assert helper_log(env, "ptctest") == [HOST, DOCKER_HUB_KEY, "127.0.0.1:9"]


def test_missing_helper_is_reported_not_fatal(env: Env) -> None:
    env.write("home/.docker/config.json", {"credsStore": "desktop"})
    found = env.keychain().lookup(HOST)
    assert found.credentials is None
    assert "docker-credential-desktop (credsStore in" in found.searched[-1]
    assert found.searched[-1].endswith("not found on PATH")


@pytest.mark.parametrize(
    ("script", "complaint"),
    [
        ("print('keychain locked'); sys.exit(3)", "exited with 3: keychain locked"),
        ("print('not json')", 'printed no {"Username", "Secret"} JSON'),
        ("print(json.dumps({'Username': 'u'}))", 'printed no {"Username", "Secret"} JSON'),
    ],
)
def test_failing_helper_raises(env: Env, script: str, complaint: str) -> None:
    env.helper("broken", script)
    env.write("home/.docker/config.json", {"credHelpers": {HOST: "broken"}})
    with pytest.raises(AuthenticationError) as info:
        env.keychain().get(HOST)
    assert "credential helper docker-credential-broken" in str(info.value)
    assert complaint in str(info.value) and f"(asked for {HOST})" in str(info.value)


def test_identity_tokens(env: Env) -> None:
    env.helper("tok", "print(json.dumps({'Username': '<token>', 'Secret': 'refresh-1'}))")
    env.write(
        "home/.docker/config.json",
        {"auths": {"a:1": {"identitytoken": "refresh-2"}}, "credHelpers": {HOST: "tok"}},
    )
    helped, inline = env.keychain().get(HOST), env.keychain().get("a:1")
    assert helped is not None and helped.identity_token == "refresh-1"
    assert inline is not None and inline.identity_token == "refresh-2"


def test_credentials_hide_secrets() -> None:
    creds = Credentials("user", "hunter2", source="here", identity_token="tok")
    assert "hunter2" not in repr(creds) and "tok" not in repr(creds)
    assert creds.basic_authorization == "Basic " + b64("user:hunter2")


# -- token cache ----------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("expires_in", "lifetime"), [(None, 55.0), (300.0, 295.0), (10.0, 55.0), (-120.0, 55.0)]
)
def test_token_cache_expiry(expires_in: float | None, lifetime: float) -> None:
    """``expires_in`` defaults to, and is at least, 60 s; used until 5 s before expiry."""
    clock = Clock()
    cache = TokenCache(clock=clock)
    cache.put("realm", "svc", "repository:a:pull", "T", expires_in)
    clock.now += lifetime - 0.01
    assert cache.get("realm", "svc", "repository:a:pull") == "T"
    clock.now += 0.02
    assert cache.get("realm", "svc", "repository:a:pull") is None


def test_token_cache_keys() -> None:
    cache = TokenCache(clock=Clock())
    cache.put("realm", "svc", "repository:a:pull", "A", 300)
    cache.put("realm", "svc", "repository:b:pull", "B", 300)
    assert cache.get("realm", "svc", "repository:a:pull") == "A"
    assert cache.get("realm", "svc", "repository:b:pull") == "B"
    assert cache.get("realm", "other", "repository:a:pull") is None
    assert cache.get("other", "svc", "repository:a:pull") is None
    assert cache.get("realm", "svc", "repository:a:pull,push") is None
    cache.discard("realm", "svc", "repository:a:pull")
    cache.discard("realm", "svc", "never-there")
    assert cache.get("realm", "svc", "repository:a:pull") is None
