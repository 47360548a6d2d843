"""Where a container's host state lives.

Every backend keeps one directory per container, ``<state_root>/<id>``, with
an ``owner`` file naming the pid of the process that started it: anything
under the state root whose owner is dead is garbage (:mod:`.sweep`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

__all__ = ["default_state_root", "user_runtime_dir", "write_json_atomically"]


def user_runtime_dir(*, environ: Mapping[str, str] | None = None, uid: int | None = None,
                     run_user: Path = Path("/run/user")) -> Path | None:
    """The runtime dir of a user that is not root: ``$XDG_RUNTIME_DIR`` when set (in
    ``environ``, default ``os.environ``), else ``/run/user/<uid>`` (under ``run_user``;
    ``uid`` defaults to the effective one) when it exists, as systemd-logind makes it
    (XDG Base Directory spec); ``None`` without either."""
    environ = os.environ if environ is None else environ
    xdg = environ.get("XDG_RUNTIME_DIR")
    if xdg:
        return Path(xdg)
    user_dir = run_user / str(os.geteuid() if uid is None else uid)
    return user_dir if user_dir.is_dir() else None


def default_state_root() -> Path:
    """``/run/ptc`` for root, else ``<user runtime dir>/ptc`` (:func:`user_runtime_dir`;
    ``/tmp/ptc-<uid>`` without one)."""
    if os.geteuid() == 0:
        return Path("/run/ptc")
    runtime_dir = user_runtime_dir()
    return runtime_dir / "ptc" if runtime_dir else Path(f"/tmp/ptc-{os.geteuid()}")


def write_json_atomically(path: str, value: object) -> None:
    """Write ``value`` as compact JSON to ``path`` (mode ``0600``) through
    ``path.tmp`` and ``rename(2)``: a reader sees the old file or the new one, never
    half of one."""
    tmp = f"{path}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, json.dumps(value, separators=(",", ":")).encode())
    finally:
        os.close(fd)
    os.rename(tmp, path)
