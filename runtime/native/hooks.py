"""POSIX-platform hooks: check them in the parent, run them anywhere.

Implements runtime-spec ``config.md#posix-platform-hooks`` and the lifecycle
of ``runtime.md#lifecycle``: ``prestart`` (deprecated), ``createRuntime``,
``createContainer``, ``startContainer``, ``poststart``, ``poststop``; each
entry ``{path, args, env, timeout}``. A hook gets the container's State JSON
on its stdin; its stdout and stderr are captured (the end of them goes into
the error). Who runs which, and where:

=================  ==========================  ==========================================
hook               run by                      namespaces / root
=================  ==========================  ==========================================
prestart           the creating command        the runtime's, after the container's
createRuntime                                  namespaces exist, before ``pivot_root``
createContainer    the container init          the container's, before ``pivot_root``
startContainer     the container init          the container's, after ``pivot_root``,
                                               just before ``exec`` (after ``start``)
poststart          ``start`` (or ``run``)      the runtime's, once the process exec'd
poststop           ``delete``                  the runtime's
=================  ==========================  ==========================================

A failing (non-zero exit, killed, timed out, not executable) ``prestart``,
``createRuntime``, ``createContainer`` or ``startContainer`` hook fails the
operation, which tears the container down; ``poststart`` and ``poststop``
failures are logged as warnings and the lifecycle goes on (the spec's MUST).
The error names the hook (``hooks.<kind>[<index>]`` and its path), its exit
status or signal, and the end of its stderr and stdout, each quoted on one line.

:func:`run_hook` uses only ``os`` calls (``posix_spawn``, pipes, ``poll``), no
threads and no imports, so the container init can call it between ``fork``
and ``exec``. A ``timeout`` (seconds) SIGKILLs the hook when it expires.
"""

from __future__ import annotations

import os
import select
import signal
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pytest_containers.exceptions import ContainerRuntimeError, InvalidOptionError

__all__ = ["FATAL_KINDS", "HOOK_KINDS", "Hook", "HookError", "parse_hooks", "run_hook",
           "run_hooks"]

#: the hook lists of ``hooks``, in lifecycle order
HOOK_KINDS = ("prestart", "createRuntime", "createContainer", "startContainer", "poststart",
              "poststop")
#: kinds whose failure fails the operation (the others only warn)
FATAL_KINDS = frozenset({"prestart", "createRuntime", "createContainer", "startContainer"})
#: bytes of a hook's output kept for the error message
_KEEP_OUTPUT = 4096


class HookError(ContainerRuntimeError):
    """A hook failed. Fields: ``kind`` (``prestart``...), ``index`` (position in its
    list), ``path``, ``returncode`` (``None`` when it did not run or timed out),
    ``signal``, ``stdout`` and ``stderr`` (the end of each, decoded), ``output``
    (the end of both, stderr first), ``timed_out``. The message names the hook
    (``hooks.createRuntime[1] (/usr/bin/hook)``), how it failed (``exited with
    status 3``) and the end of its stderr and stdout, as runc's ``error running
    hook #1: exit status 3, stdout: ..., stderr: ...``."""


@dataclass(frozen=True)
class Hook:
    """One hook entry: ``path`` (absolute), ``args`` (``args[0]`` included; default
    ``[path]``), ``env`` (``KEY=value`` entries; default empty), ``timeout`` (seconds,
    ``None``: none), ``kind`` and ``index`` for messages."""

    kind: str
    index: int
    path: str
    args: tuple[str, ...]
    env: tuple[str, ...] = ()
    timeout: int | None = None

    @property
    def field(self) -> str:
        return f"hooks.{self.kind}[{self.index}]"


def _bad(field: str, value: Any, why: str) -> InvalidOptionError:
    return InvalidOptionError(f"{field}: {why} (got {value!r})", option=field, value=value)


def _strings(value: Any, field: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise _bad(field, value, "must be an array of strings")
    for i, item in enumerate(value):
        if not isinstance(item, str) or "\0" in item:
            raise _bad(f"{field}[{i}]", item, "must be a string without NUL")
    return tuple(value)


def parse_hooks(hooks: Any) -> dict[str, tuple[Hook, ...]]:
    """Check config.json's ``hooks`` and return the non-empty lists by kind.

    Raises ``InvalidOptionError`` (a ``ValueError``) naming the field
    (``hooks.prestart[0].path``...): not an object, a path that is not absolute,
    args/env that are not arrays of strings, a timeout that is not a positive
    integer. Unknown kinds are ignored (the spec's extensibility rule)."""
    if hooks is None:
        return {}
    if not isinstance(hooks, Mapping):
        raise _bad("hooks", hooks, "must be an object")
    out: dict[str, tuple[Hook, ...]] = {}
    for kind in HOOK_KINDS:
        entries = hooks.get(kind)
        if entries is None:
            continue
        if isinstance(entries, (str, bytes)) or not isinstance(entries, Sequence):
            raise _bad(f"hooks.{kind}", entries, "must be an array of hooks")
        parsed = []
        for i, entry in enumerate(entries):
            where = f"hooks.{kind}[{i}]"
            if not isinstance(entry, Mapping):
                raise _bad(where, entry, "must be an object")
            path = entry.get("path")
            if not isinstance(path, str) or not path.startswith("/"):
                raise _bad(f"{where}.path", path, "must be an absolute path")
            args = _strings(entry.get("args"), f"{where}.args") or (path,)
            env = _strings(entry.get("env"), f"{where}.env")
            timeout = entry.get("timeout")
            if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int)
                                        or timeout <= 0):
                raise _bad(f"{where}.timeout", timeout, "must be a positive number of seconds")
            parsed.append(Hook(kind, i, path, args, env, timeout))
        if parsed:
            out[kind] = tuple(parsed)
    return out


def _quote(data: bytes) -> str:
    """``data`` decoded and quoted on one line (newlines as ``\\n``)."""
    text = data.decode(errors="replace").strip()
    return '"' + text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"') + '"'


def _failed(hook: Hook, why: str, stdout: bytes = b"", stderr: bytes = b"",
            **fields: Any) -> HookError:
    message = f"{hook.field} ({hook.path}) {why}"
    if stderr.strip():
        message += f", stderr: {_quote(stderr)}"
    if stdout.strip():
        message += f", stdout: {_quote(stdout)}"
    out = stdout.decode(errors="replace").strip()
    err = stderr.decode(errors="replace").strip()
    return HookError(message, kind=hook.kind, index=hook.index, path=hook.path,
                     stdout=out, stderr=err, output="\n".join(t for t in (err, out) if t),
                     **fields)


def run_hook(hook: Hook, state: bytes) -> None:
    """Run ``hook`` with ``state`` (the State JSON) on its stdin, its stdout and stderr
    captured (each on its own pipe), and wait for it (``hook.timeout`` seconds at
    most; then SIGKILL).

    Raises :class:`HookError` when it cannot be started, exits non-zero, is killed
    by a signal or times out."""
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    try:
        actions = [(os.POSIX_SPAWN_DUP2, in_r, 0), (os.POSIX_SPAWN_DUP2, out_w, 1),
                   (os.POSIX_SPAWN_DUP2, err_w, 2)]
        try:
            env = dict(item.split("=", 1) for item in hook.env if "=" in item)
            pid = os.posix_spawn(hook.path, hook.args, env, file_actions=actions,
                                 setsigdef=(signal.SIGPIPE, signal.SIGINT, signal.SIGXFSZ))
        except OSError as exc:
            os.close(out_r)
            os.close(err_r)
            raise _failed(hook, f"cannot be run: {(exc.strerror or str(exc)).lower()}",
                          returncode=None, signal=None, timed_out=False,
                          errno=exc.errno) from None
    finally:
        os.close(in_r)
        os.close(out_w)
        os.close(err_w)
    try:
        status, outputs, timed_out = _feed_and_wait(pid, in_w, (out_r, err_r), state,
                                                    hook.timeout)
    finally:
        os.close(out_r)
        os.close(err_r)
    stdout, stderr = outputs[out_r], outputs[err_r]
    if timed_out:
        raise _failed(hook, f"timed out after {hook.timeout} s and was killed", stdout, stderr,
                      returncode=None, signal=signal.SIGKILL, timed_out=True)
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        raise _failed(hook, f"was killed by signal {sig}", stdout, stderr,
                      returncode=128 + sig, signal=sig, timed_out=False)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise _failed(hook, f"exited with status {code}", stdout, stderr, returncode=code,
                      signal=None, timed_out=False)


def _feed_and_wait(pid: int, in_w: int, readers: tuple[int, ...], state: bytes,
                   timeout: int | None) -> tuple[int, dict[int, bytes], bool]:
    """Write ``state`` to the hook's stdin (then close it) and collect what it writes
    on ``readers`` (its stdout and stderr pipes) until it exits (its pidfd turns
    readable: a background child still holding a pipe does not keep us waiting);
    returns ``(wait status, last bytes of each reader, timed out)``."""
    deadline = None if timeout is None else time.monotonic() + timeout
    pidfd = os.pidfd_open(pid)
    os.set_blocking(in_w, False)
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    for fd in readers:
        poller.register(fd, select.POLLIN)
    poller.register(in_w, select.POLLOUT)
    pending, exited = state, False
    outputs = {fd: b"" for fd in readers}
    try:
        while not exited:
            if not pending and in_w >= 0:
                poller.unregister(in_w)
                os.close(in_w)
                in_w = -1
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return 0, outputs, True
            for fd, _event in poller.poll(None if remaining is None
                                          else max(1, int(remaining * 1000))):
                if fd == pidfd:
                    exited = True
                elif fd == in_w:
                    try:
                        pending = pending[os.write(in_w, pending[:65536]):]
                    except BlockingIOError:
                        pass
                    except BrokenPipeError:
                        pending = b""  # it does not read its stdin
                elif fd in outputs:
                    chunk = os.read(fd, 65536)
                    outputs[fd] = (outputs[fd] + chunk)[-_KEEP_OUTPUT:]
                    if not chunk:
                        poller.unregister(fd)
        for fd in readers:  # what it wrote just before exiting
            while select.select([fd], [], [], 0)[0]:
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                outputs[fd] = (outputs[fd] + chunk)[-_KEEP_OUTPUT:]
        return os.waitpid(pid, 0)[1], outputs, False
    finally:
        os.close(pidfd)
        if in_w >= 0:
            os.close(in_w)


def run_hooks(hooks: Sequence[Hook], state: Mapping[str, Any] | bytes, *,
              warn: Any = None) -> None:
    """Run ``hooks`` in order with ``state`` on stdin (a dict is JSON-encoded).

    Fatal kinds (:data:`FATAL_KINDS`) raise :class:`HookError` at the first failure;
    for ``poststart``/``poststop`` each failure is passed to ``warn(message)`` (when
    given) and the next hook runs."""
    if not hooks:
        return
    if not isinstance(state, bytes):
        import json

        state = json.dumps(dict(state), separators=(",", ":")).encode()
    for hook in hooks:
        try:
            run_hook(hook, state)
        except HookError as exc:
            if hook.kind in FATAL_KINDS:
                raise
            if warn is not None:
                warn(str(exc))
