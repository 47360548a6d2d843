"""Image config -> container spec (umoci ``oci/config/convert``, image-spec ``config.md``).

Merges an image's ENTRYPOINT, CMD, Env, WorkingDir and User with what the
caller asks for, the way ``docker run`` does: a given command replaces CMD
and is appended to ENTRYPOINT; given env entries override the image's by key.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path

from .exceptions import ContainerStartError
from .runtime import ContainerSpec, Mount, Resources
from .runtime.types import NetworkMode

DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def command_args(command: str | Sequence[str] | None) -> list[str] | None:
    """``None``, a list of args, or a string split like a shell would (``shlex``)."""
    if command is None:
        return None
    if isinstance(command, str):
        return shlex.split(command)
    return [str(a) for a in command]


def merge_env(image_env: Sequence[str], env: Mapping[str, str] | None) -> tuple[str, ...]:
    """Image ``Env`` (``KEY=value`` strings) overridden by ``env``; PATH defaulted."""
    merged: dict[str, str] = {}
    for entry in image_env:
        key, _, value = entry.partition("=")
        merged[key] = value
    for key, value in (env or {}).items():
        merged[str(key)] = str(value)
    if "PATH" not in merged:
        merged["PATH"] = DEFAULT_PATH.partition("=")[2]
    return tuple(f"{k}={v}" for k, v in merged.items())


def _lookup(layers: Sequence[Path], relpath: str, name: str, field: int) -> int | None:
    """Find ``name`` in the topmost layer's ``/etc/passwd`` or ``/etc/group``
    (the snapshot that last wrote the file), return its id column."""
    for layer in reversed(layers):
        path = layer / relpath
        if path.is_symlink() or not path.is_file():
            continue
        for line in path.read_text(errors="replace").splitlines():
            parts = line.split(":")
            if len(parts) > field and parts[0] == name and parts[field].isdigit():
                return int(parts[field])
        return None
    return None


def home_of(uid: int, layers: Sequence[Path]) -> str:
    """``HOME`` for ``uid`` as docker sets it: the home column of the image's
    ``/etc/passwd`` entry, else ``/root`` for uid 0 and ``/`` otherwise."""
    for layer in reversed(layers):
        path = layer / "etc/passwd"
        if path.is_symlink() or not path.is_file():
            continue
        for line in path.read_text(errors="replace").splitlines():
            parts = line.split(":")
            if len(parts) > 5 and parts[2] == str(uid) and parts[5]:
                return parts[5]
        break
    return "/root" if uid == 0 else "/"


def resolve_user(user: str | int | None, layers: Sequence[Path]) -> tuple[int, int]:
    """``uid``/``gid`` for a docker ``--user``: ``""``, ``"1000"``, ``"1000:1000"``,
    ``"name"``, ``"name:group"``. Names are read from the image's own
    ``/etc/passwd`` and ``/etc/group``. Raises ``ContainerStartError`` for an unknown name."""
    if user is None or user == "":
        return 0, 0
    if isinstance(user, int):
        return user, user if user == 0 else 0
    name, _, group = str(user).partition(":")
    if name.isdigit():
        uid = int(name)
        gid = None
    else:
        uid_found = _lookup(layers, "etc/passwd", name, 2)
        if uid_found is None:
            raise ContainerStartError(
                f"user {name!r} not found in the image's /etc/passwd", user=user
            )
        uid = uid_found
        gid = _lookup(layers, "etc/passwd", name, 3)
    if group:
        if group.isdigit():
            gid = int(group)
        else:
            gid = _lookup(layers, "etc/group", group, 2)
            if gid is None:
                raise ContainerStartError(
                    f"group {group!r} not found in the image's /etc/group", user=user
                )
    return uid, gid if gid is not None else 0


def container_spec(
    *,
    layers: Sequence[Path],
    image_config: object,
    command: str | Sequence[str] | None = None,
    entrypoint: str | Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
    workdir: str | None = None,
    user: str | int | None = None,
    hostname: str,
    resources: Resources,
    mounts: Sequence[Mount] = (),
    network: NetworkMode = "none",
    read_only: bool = False,
) -> ContainerSpec:
    """The spec to run an image whose config is ``image_config`` (an
    ``ImageConfig``: ``entrypoint``, ``cmd``, ``env``, ``working_dir``, ``user``)
    with ``layers`` (snapshot dirs, base first).

    ``HOME`` is set as docker sets it when neither the image nor ``env`` does.
    Raises ``ContainerStartError`` when neither the image nor the caller gives a command.
    """
    cfg_entry = list(getattr(image_config, "entrypoint", None) or [])
    cfg_cmd = list(getattr(image_config, "cmd", None) or [])
    entry = command_args(entrypoint) if entrypoint is not None else cfg_entry
    cmd = command_args(command)
    if cmd is None:
        cmd = cfg_cmd if entrypoint is None else []
    args = list(entry or []) + list(cmd)
    if not args:
        raise ContainerStartError(
            "no command given and the image has no ENTRYPOINT or CMD", argv=[]
        )
    uid, gid = resolve_user(
        user if user is not None else getattr(image_config, "user", None), layers
    )
    merged_env = merge_env(list(getattr(image_config, "env", None) or []), env)
    if not any(e.startswith("HOME=") for e in merged_env):
        merged_env += (f"HOME={home_of(uid, layers)}",)
    return ContainerSpec(
        args=tuple(args),
        layers=tuple(Path(p) for p in layers),
        env=merged_env,
        cwd=workdir or getattr(image_config, "working_dir", None) or "/",
        uid=uid,
        gid=gid,
        hostname=hostname,
        resources=resources,
        mounts=tuple(mounts),
        network=network,
        read_only_rootfs=read_only,
    )
