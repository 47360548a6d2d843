"""Image config -> container spec (umoci ``oci/config/convert``, image-spec ``config.md``).

Merges an image's ENTRYPOINT, CMD, Env, WorkingDir and User with what the
caller asks for, the way ``docker run`` does: a given command replaces CMD
and is appended to ENTRYPOINT; given env entries override the image's by key.
"""

from __future__ import annotations

import os
import shlex
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path

from .exceptions import ContainerStartError
from .runtime import ContainerSpec, Mount, Resources
from .runtime.types import NetworkMode

DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


#: image-spec conversion.md: where ``Config.StopSignal`` goes in the runtime config
STOP_SIGNAL_ANNOTATION = "org.opencontainers.image.stopSignal"


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


def _layer_text(layers: Sequence[Path], relpath: str) -> str | None:
    """The text of ``relpath`` in the merged view of ``layers`` (base first): the
    topmost layer's regular file, ``None`` when a higher layer deletes it (an
    overlay whiteout) or no layer has one. A symlink there is not followed
    (``None``): the file is the image's own or nothing."""
    for layer in reversed(layers):
        try:
            st = os.lstat(layer / relpath)
        except (FileNotFoundError, NotADirectoryError):
            continue
        if stat.S_ISREG(st.st_mode):
            return (layer / relpath).read_text(errors="replace")
        return None  # a whiteout, a symlink, a directory: nothing to read
    return None


def home_of(uid: int, layers: Sequence[Path]) -> str:
    """``HOME`` for ``uid`` as docker sets it: the home column of the image's
    ``/etc/passwd`` entry, else ``/root`` for uid 0 and ``/`` otherwise."""
    for line in (_layer_text(layers, "etc/passwd") or "").splitlines():
        parts = line.split(":")
        if len(parts) > 5 and parts[2] == str(uid) and parts[5]:
            return parts[5]
    return "/root" if uid == 0 else "/"


def resolve_user(
    user: str | int | None, layers: Sequence[Path]
) -> tuple[int, int, tuple[int, ...]]:
    """``(uid, gid, additional gids)`` for a docker ``--user``: ``""``, ``"1000"``,
    ``"1000:1000"``, ``"name"``, ``"name:group"``, read from the image's own
    ``/etc/passwd`` and ``/etc/group`` (the merged view of ``layers``) with runc's
    rules (:func:`~pytest_containers.runtime.native.process.user_from_files`): a
    name or uid found gives its gid and the groups listing it. Raises
    ``ContainerStartError`` naming the user and the file for an unknown name."""
    from .runtime.native.process import user_from_files

    if user is None or user == "":
        user = ""
    passwd = _layer_text(layers, "etc/passwd")
    group = _layer_text(layers, "etc/group")
    return user_from_files(str(user), passwd, group, source="the image")


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
    init: bool = False,
) -> ContainerSpec:
    """The spec to run an image whose config is ``image_config`` (an
    ``ImageConfig``: ``entrypoint``, ``cmd``, ``env``, ``working_dir``, ``user``)
    with ``layers`` (snapshot dirs, base first).

    ``HOME`` is set as docker sets it when neither the image nor ``env`` does.
    The image's ``StopSignal`` becomes the annotation :data:`STOP_SIGNAL_ANNOTATION`.
    ``init``: a minimal init as PID 1 (docker's ``--init``; :attr:`ContainerSpec.init`).
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
    uid, gid, groups = resolve_user(
        user if user is not None else getattr(image_config, "user", None), layers
    )
    merged_env = merge_env(list(getattr(image_config, "env", None) or []), env)
    stop_signal = getattr(image_config, "stop_signal", "")
    if not any(e.startswith("HOME=") for e in merged_env):
        merged_env += (f"HOME={home_of(uid, layers)}",)
    return ContainerSpec(
        args=tuple(args),
        layers=tuple(Path(p) for p in layers),
        env=merged_env,
        cwd=workdir or getattr(image_config, "working_dir", None) or "/",
        uid=uid,
        gid=gid,
        additional_gids=groups,
        hostname=hostname,
        resources=resources,
        mounts=tuple(mounts),
        network=network,
        read_only_rootfs=read_only,
        init=init,
        annotations=((STOP_SIGNAL_ANNOTATION, stop_signal),) if stop_signal else (),
    )
