"""The container process: checked in the parent, applied in the init, then ``execve``.

Implements runtime-spec ``config.md#process`` (``args``, ``env``, ``cwd``),
``#posix-process`` (``rlimits``), ``#linux-process`` (``capabilities``,
``noNewPrivileges``, ``oomScoreAdj``), ``#posix-platform-user`` (``uid``,
``gid``, ``umask``, ``additionalGids``) and, through :mod:`..linux.seccomp`,
``config-linux.md#seccomp``, in runc 1.1's order (``libcontainer/
standard_init_linux.go`` ``Init``, ``init_linux.go`` ``finalizeNamespace``,
``setupUser``, ``fixStdioPermissions``, ``setupRlimits``).

Three steps, for the engine to call:

1. :func:`prepare_process` (parent, before ``fork``): every field checked
   (:class:`~pytest_containers.exceptions.InvalidOptionError`, a ``ValueError``
   whose ``option`` names the field, e.g. ``process.rlimits[1].type``;
   :class:`~..linux.capabilities.UnknownCapabilityError` for
   ``process.capabilities.bounding[3]``), ``HOME`` looked up in the rootfs's
   ``/etc/passwd``, the seccomp filter compiled to BPF: a :class:`ProcessPlan`
   of ints, strings and tuples.
2. :func:`apply_process` (the container init, after ``pivot_root``, just before
   ``exec``): syscalls only, no import; it opens ``/proc/self/oom_score_adj`` and
   stats ``/dev/null``, nothing else.
3. :func:`exec_process`: ``execve`` with the container's ``PATH`` search.

Or, for docker's ``--init``, :func:`run_as_init`: PID 1 forks the process
(which does 2 and 3), forwards signals to it and reaps every zombie::

    init (PID 1, the engine's Python init)   blocks every catchable signal,
    │                                         sigwaitinfo loop: forward, reap
    │                                         keeps only CAP_KILL, no seccomp
    └── process (args)                        apply_process, exec_process

Memory: the Python init stays resident in the container's cgroup. Measured by
``tests/linux/test_process.py::test_init_memory_flat_per_reaped_child`` (Python
3.11, init forked from pytest, kernel 6.x, cgroup v1): VmRSS about 45 MiB, all
but about 2 MiB of it (Private_Dirty) shared copy-on-write with the caller; the
container's memory cgroup is charged 0.5 to 0.75 MiB more than for the same
shell without the init (pages the init touches after joining: its stack, the
objects of the loop); flat across 1000 reaped orphans (Private_Dirty +25 to
+55 KiB, VmRSS +0). What counts is what the init writes after joining the
cgroup, not its RSS (the copy-on-write pages stay charged to the caller's).

Errors in the init (:func:`apply_process`, :func:`exec_process`) are
:class:`~pytest_containers.exceptions.ContainerStartError` with ``step`` (e.g.
``"rlimits"``), ``field`` (e.g. ``"process.rlimits[0]"``) and ``errno``.
"""

from __future__ import annotations

import errno
import os
import resource
import signal
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from pytest_containers.exceptions import ContainerStartError, InvalidOptionError

from ..linux import syscalls as sc
from ..linux.capabilities import NAMES, CapabilitySets, last_cap
from ..linux.mounts import resolve_in_root
from ..linux.seccomp import SeccompProgram, compile_filter
from ..linux.seccomp import load as load_seccomp

__all__ = ["DEFAULT_PATH", "DEFAULT_UMASK", "FORWARDED_SIGNALS", "ProcessPlan", "apply_process",
           "describe", "exec_error_words", "exec_process", "home_directory", "prepare_process",
           "read_in_root", "resolve_user", "run_as_init", "user_from_files"]

#: ``PATH`` when ``process.env`` has none (docker's and runc's default)
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: ``umask`` when ``process.user.umask`` is not given (runc's and crun's default)
DEFAULT_UMASK = 0o022

_U64 = (1 << 64) - 1
_MAX_ID = (1 << 31) - 1  # runc's ``maxID``
_NGROUPS_MAX = 65536
#: files read from a rootfs are at most this long
_MAX_FILE_BYTES = 16 << 20

_RLIMITS = {f"RLIMIT_{n}": getattr(resource, f"RLIMIT_{n}") for n in (
    "AS", "CORE", "CPU", "DATA", "FSIZE", "LOCKS", "MEMLOCK", "MSGQUEUE", "NICE", "NOFILE",
    "NPROC", "RSS", "RTPRIO", "RTTIME", "SIGPENDING", "STACK") if hasattr(resource, f"RLIMIT_{n}")}
_CAP_KILL = NAMES.index("CAP_KILL")
_CAP_SYS_RESOURCE = NAMES.index("CAP_SYS_RESOURCE")

#: signals the init leaves to the kernel, as tini does: the synchronous ones (raised by
#: the init's own faults) and job control from a terminal
_NOT_FORWARDED = frozenset({
    signal.SIGKILL, signal.SIGSTOP, signal.SIGFPE, signal.SIGILL, signal.SIGSEGV,
    signal.SIGBUS, signal.SIGABRT, signal.SIGTRAP, signal.SIGSYS, signal.SIGTTIN,
    signal.SIGTTOU, signal.SIGCHLD,
})
#: what the init forwards to the process: every other signal (SIGTERM, SIGINT, SIGHUP,
#: SIGQUIT, SIGUSR1/2, SIGWINCH, SIGCONT, real-time signals...)
FORWARDED_SIGNALS = frozenset(signal.valid_signals()) - _NOT_FORWARDED
_INIT_WAITS = FORWARDED_SIGNALS | {signal.SIGCHLD}
#: handlers reset to the default before ``exec`` (Python ignores SIGPIPE and SIGXFSZ,
#: and catches SIGINT; an engine may ignore SIGINT)
_RESET_SIGNALS = tuple(sorted(s for s in signal.valid_signals()
                              if s not in (signal.SIGKILL, signal.SIGSTOP)))


@dataclass(frozen=True)
class ProcessPlan:
    """The process's settings as plain values, computed by :func:`prepare_process`.

    ``rlimits``: ``(RLIMIT_* number, soft, hard, field)`` with ``2**64-1`` (and any
    value from ``2**63``) as the negative ``rlim_t`` bit pattern Python passes on;
    ``field`` like ``"process.rlimits[0] (RLIMIT_NOFILE)"``. ``init_drop``: the
    capability numbers :func:`run_as_init` drops from its own bounding set (all but
    ``CAP_KILL``). ``umask`` is an int (``0o022`` when the config has none).
    """

    args: tuple[str, ...]
    env: dict[str, str]
    path: tuple[str, ...]
    cwd: str
    uid: int
    gid: int
    additional_gids: tuple[int, ...]
    umask: int
    rlimits: tuple[tuple[int, int, int, str], ...]
    oom_score_adj: int | None
    caps: CapabilitySets
    no_new_privs: bool
    seccomp: SeccompProgram | None
    init_drop: tuple[int, ...] = ()


# -- reading the rootfs ------------------------------------------------------------


def read_in_root(rootfs: str | os.PathLike[str], path: str) -> bytes | None:
    """The bytes of ``path`` inside ``rootfs``, resolved as if ``rootfs`` were ``/``
    (``openat2`` ``RESOLVE_IN_ROOT``: a symlink such as ``/etc/passwd ->
    /host/etc/passwd`` or ``../../etc/passwd`` stays in the rootfs; magic links are
    refused); ``None`` when it does not exist. On a kernel before 5.6 (ENOSYS) the
    path is resolved by :func:`~..linux.mounts.resolve_in_root` and opened with
    ``O_NOFOLLOW``. Raises ``OSError`` (ELOOP for a symlink loop, EINVAL for
    something other than a regular file: a FIFO is never read), ``ValueError`` for a
    file over 16 MiB."""
    root = os.fspath(rootfs)
    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY
    dir_fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        try:
            fd = sc.openat2(path.lstrip("/") or ".", flags,
                            sc.RESOLVE_IN_ROOT | sc.RESOLVE_NO_MAGICLINKS, dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                return None
            if exc.errno != errno.ENOSYS:
                raise
            try:
                fd = os.open(resolve_in_root(root, path), flags | os.O_NOFOLLOW)
            except (FileNotFoundError, NotADirectoryError):
                return None
    finally:
        os.close(dir_fd)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", f"{root}{path}")
        if st.st_size > _MAX_FILE_BYTES:
            raise ValueError(f"{root}{path} is over {_MAX_FILE_BYTES} bytes")
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _entries(text: str | None, min_fields: int) -> list[list[str]]:
    """The lines of an ``/etc/passwd`` or ``/etc/group`` text split on ``:``."""
    if text is None:
        return []
    out = []
    for line in text.splitlines():
        fields = line.strip().split(":")
        if len(fields) >= min_fields and fields[0] and fields[2].isdigit():
            out.append(fields)
    return out


def _numeric(value: str) -> int | None:
    return int(value) if value.isdigit() else None


def user_from_files(user: str, passwd: str | None, group: str | None, *,
                    source: str = "the rootfs") -> tuple[int, int, tuple[int, ...]]:
    """``(uid, gid, additional gids)`` for a docker ``--user`` string (``""``, ``"name"``,
    ``"uid"``, ``"name:group"``, ``"uid:gid"``, ``"name:gid"``, ``"uid:group"``) from
    the texts of ``/etc/passwd`` and ``/etc/group`` (``None``: no such file), as runc's
    ``user.GetExecUser`` does: a name or uid found in ``passwd`` gives its uid, gid and
    (without an explicit group) the gids of every ``group`` entry listing the name; a
    number not found is used as is; an explicit group replaces the gid.

    Raises :class:`~pytest_containers.exceptions.ContainerStartError` (fields
    ``user``, ``path``) naming the user or group and the file (``source`` says whose).
    """
    name, _, group_arg = str(user).partition(":")
    uid_arg, gid_arg = _numeric(name), _numeric(group_arg)
    uid, gid = 0, 0
    sgids: tuple[int, ...] = ()
    matched = ""
    for fields in _entries(passwd, 4):
        if (int(fields[2]) == (uid_arg or 0)) if (name == "" or uid_arg is not None) \
                else fields[0] == name:
            matched, uid = fields[0], int(fields[2])
            gid = int(fields[3]) if fields[3].isdigit() else 0
            break
    else:
        if name and uid_arg is None:
            missing = "no /etc/passwd" if passwd is None else "not in /etc/passwd"
            raise ContainerStartError(f"user {name!r} not found: {missing} in {source}",
                                      user=user, path="/etc/passwd")
        uid = uid_arg or 0
    if uid > _MAX_ID:
        raise ContainerStartError(f"user {name!r}: uid {uid} is out of range", user=user,
                                  path="/etc/passwd")
    groups = _entries(group, 3)
    if group_arg:
        for fields in groups:
            if (int(fields[2]) == gid_arg) if gid_arg is not None else fields[0] == group_arg:
                gid = int(fields[2])
                break
        else:
            if gid_arg is None:
                missing = "no /etc/group" if group is None else "not in /etc/group"
                raise ContainerStartError(
                    f"group {group_arg!r} of user {str(user)!r} not found: {missing} "
                    f"in {source}", user=user, path="/etc/group")
            gid = gid_arg
        if gid > _MAX_ID:
            raise ContainerStartError(f"group {group_arg!r}: gid {gid} is out of range",
                                      user=user, path="/etc/group")
    elif matched:
        sgids = tuple(int(f[2]) for f in groups
                      if len(f) > 3 and matched in f[3].split(","))
    return uid, gid, sgids


def _read_text(rootfs: str | os.PathLike[str], path: str, user: str) -> str | None:
    try:
        data = read_in_root(rootfs, path)
    except (OSError, ValueError) as exc:
        raise ContainerStartError(f"cannot read {path} in rootfs {os.fspath(rootfs)} "
                                  f"for user {user!r}: {exc}", user=user, path=path) from exc
    return None if data is None else data.decode("utf-8", errors="replace")


def resolve_user(rootfs: str | os.PathLike[str], user: str) -> tuple[int, int, tuple[int, ...]]:
    """``(uid, gid, additional gids)`` for the docker-style ``user`` (``"name[:group]"``,
    ``"uid[:gid]"``, ``""`` for root) from the rootfs's own ``/etc/passwd`` and
    ``/etc/group``, read with :func:`read_in_root` (no symlink leaves ``rootfs``).
    Semantics: :func:`user_from_files`. Raises ``ContainerStartError`` naming the user
    and the file for a name that is not there, or a file that cannot be read."""
    passwd = _read_text(rootfs, "/etc/passwd", user)
    group = _read_text(rootfs, "/etc/group", user) if ":" in str(user) or passwd else None
    return user_from_files(user, passwd, group, source=f"rootfs {os.fspath(rootfs)}")


def home_directory(rootfs: str | os.PathLike[str], uid: int) -> str:
    """``HOME`` for ``uid`` as runc sets it when ``process.env`` has none: the home
    column of the first ``/etc/passwd`` entry of ``uid`` in the rootfs, else ``/``."""
    try:
        data = read_in_root(rootfs, "/etc/passwd")
    except (OSError, ValueError):
        return "/"
    text = None if data is None else data.decode("utf-8", errors="replace")
    for fields in _entries(text, 6):
        if int(fields[2]) == uid and fields[5]:
            return fields[5]
    return "/"


# -- the parent: checks --------------------------------------------------------------


def _bad(field: str, value: Any, why: str) -> InvalidOptionError:
    return InvalidOptionError(f"{field}: {why} (got {value!r})", option=field, value=value)


def _int(value: Any, field: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _bad(field, value, f"must be an integer from {low} to {high}")
    return value


def _strings(value: Any, field: str, *, required: bool = False) -> list[str]:
    if value is None and not required:
        return []
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise _bad(field, value, "must be an array of strings")
    for i, item in enumerate(value):
        if not isinstance(item, str) or "\0" in item:
            raise _bad(f"{field}[{i}]", item, "must be a string without NUL")
    if required and not value:
        raise _bad(field, value, "must have at least one entry")
    return list(value)


def _env(value: Any) -> dict[str, str]:
    env: dict[str, str] = {}
    for i, entry in enumerate(_strings(value, "process.env")):
        key, sep, val = entry.partition("=")
        if not sep or not key:
            raise _bad(f"process.env[{i}]", entry, "must be KEY=value")
        env[key] = val  # a later entry wins, as with runc's os.Setenv
    return env


def _rlimit_value(value: int) -> int:
    """uint64 -> the ``rlim_t`` bit pattern Python's ``setrlimit`` takes (-1: infinity)."""
    return value - (1 << 64) if value >= 1 << 63 else value


def _effective_has(cap: int) -> bool:
    return bool(sc.capget()[0] >> cap & 1)


def _rlimits(value: Any) -> tuple[tuple[int, int, int, str], ...]:
    if value is None:
        return ()
    if not isinstance(value, Sequence) or isinstance(value, (str, bytes)):
        raise _bad("process.rlimits", value, "must be an array")
    seen: dict[str, int] = {}
    out = []
    privileged: bool | None = None
    for i, entry in enumerate(value):
        where = f"process.rlimits[{i}]"
        if not isinstance(entry, Mapping):
            raise _bad(where, entry, "must be an object")
        kind = entry.get("type")
        number = _RLIMITS.get(kind) if isinstance(kind, str) else None
        if number is None:
            raise _bad(f"{where}.type", kind, "unknown rlimit; one of " + ", ".join(_RLIMITS))
        if kind in seen:
            raise _bad(f"{where}.type", kind,
                       f"duplicates process.rlimits[{seen[kind]}] (runtime-spec: MUST error)")
        seen[str(kind)] = i
        soft = _int(entry.get("soft"), f"{where}.soft", 0, _U64)
        hard = _int(entry.get("hard"), f"{where}.hard", 0, _U64)
        if soft > hard:
            raise _bad(f"{where}.soft", soft, f"is above the hard limit {hard}")
        label = f"{where} ({kind})"
        current = resource.getrlimit(number)[1]
        current = _U64 if current == resource.RLIM_INFINITY else current
        if hard > current:
            if privileged is None:
                privileged = _effective_has(_CAP_SYS_RESOURCE)
            if not privileged:
                raise ContainerStartError(
                    f"{label}: raising the hard limit from {current} to {hard} needs "
                    "CAP_SYS_RESOURCE, which this process does not have",
                    step="rlimits", field=label, errno=errno.EPERM)
        out.append((number, _rlimit_value(soft), _rlimit_value(hard), label))
    return tuple(out)


def _capabilities(value: Any) -> CapabilitySets:
    if value is not None:
        if not isinstance(value, Mapping):
            raise _bad("process.capabilities", value, "must be an object")
        for kind in ("bounding", "effective", "permitted", "inheritable", "ambient"):
            if value.get(kind) is not None:
                _strings(value[kind], f"process.capabilities.{kind}")
    return CapabilitySets.from_config(value)


def prepare_process(process: Mapping[str, Any], rootfs: str | os.PathLike[str], *,
                    seccomp: Mapping[str, Any] | None = None) -> ProcessPlan:
    """Check config.json's ``process`` (and ``linux.seccomp`` as ``seccomp``) and turn
    it into a :class:`ProcessPlan`, in the parent before ``fork``.

    ``rootfs`` is the container's root as the caller sees it (the bundle's
    ``root.path``): ``HOME``, when ``process.env`` has none, is the home of
    ``process.user.uid`` in its ``/etc/passwd`` (runc's ``setupUser``), else ``/``.
    ``PATH`` defaults to :data:`DEFAULT_PATH`.

    Raises ``InvalidOptionError`` (a ``ValueError``; ``option`` is the field, e.g.
    ``process.rlimits[1].type``, ``process.user.uid``, ``process.cwd``,
    ``linux.seccomp.syscalls[0].action``), ``UnknownCapabilityError`` (a
    ``ValueError`` naming ``process.capabilities.bounding[3]``), and
    ``ContainerStartError`` (``step="rlimits"``) when a hard limit is above this
    process's own and it lacks ``CAP_SYS_RESOURCE`` (the kernel would refuse it).
    """
    if not isinstance(process, Mapping):
        raise _bad("process", process, "must be an object")
    args = _strings(process.get("args"), "process.args", required=True)
    env = _env(process.get("env"))
    cwd = process.get("cwd", "/")
    if not isinstance(cwd, str) or not cwd.startswith("/") or "\0" in cwd:
        raise _bad("process.cwd", cwd, "must be an absolute path")
    user = process.get("user") or {}
    if not isinstance(user, Mapping):
        raise _bad("process.user", user, "must be an object")
    uid = _int(user.get("uid", 0), "process.user.uid", 0, _MAX_ID)
    gid = _int(user.get("gid", 0), "process.user.gid", 0, _MAX_ID)
    umask = user.get("umask")
    umask = DEFAULT_UMASK if umask is None else _int(umask, "process.user.umask", 0, 0o7777)
    gids = user.get("additionalGids") or []
    if not isinstance(gids, Sequence) or isinstance(gids, (str, bytes)):
        raise _bad("process.user.additionalGids", gids, "must be an array of gids")
    if len(gids) > _NGROUPS_MAX:
        raise _bad("process.user.additionalGids", len(gids), f"at most {_NGROUPS_MAX} gids")
    additional = tuple(_int(g, f"process.user.additionalGids[{i}]", 0, _MAX_ID)
                       for i, g in enumerate(gids))
    nnp = process.get("noNewPrivileges", False)
    if not isinstance(nnp, bool):
        raise _bad("process.noNewPrivileges", nnp, "must be true or false")
    oom = process.get("oomScoreAdj")
    if oom is not None:
        oom = _int(oom, "process.oomScoreAdj", -1000, 1000)
    rlimits = _rlimits(process.get("rlimits"))
    caps = _capabilities(process.get("capabilities"))
    program = None if seccomp is None else compile_filter(seccomp)
    if "HOME" not in env:
        env["HOME"] = home_directory(rootfs, uid)
    return ProcessPlan(
        args=tuple(args), env=env, path=tuple(env.get("PATH", DEFAULT_PATH).split(":")),
        cwd=cwd, uid=uid, gid=gid, additional_gids=additional, umask=umask,
        rlimits=rlimits, oom_score_adj=oom, caps=caps, no_new_privs=nnp, seccomp=program,
        init_drop=tuple(n for n in range(last_cap() + 1) if n != _CAP_KILL),
    )


# -- the container side (after pivot_root, before exec) -------------------------------


def _failed(step: str, field: str, message: str, code: int) -> ContainerStartError:
    return ContainerStartError(f"{field}: {message}", step=step, field=field, errno=code)


def _set_rlimits(plan: ProcessPlan) -> None:
    for number, soft, hard, label in plan.rlimits:
        try:
            resource.setrlimit(number, (soft, hard))
        except ValueError as exc:  # Python's words for EPERM and EINVAL
            current = resource.getrlimit(number)[1]
            code = errno.EPERM if "raise" in str(exc) else errno.EINVAL
            raise _failed("rlimits", label, f"setrlimit refused: {exc} (hard limit now "
                          f"{current}; raising it needs CAP_SYS_RESOURCE)", code) from None
        except OSError as exc:
            raise _failed("rlimits", label, f"setrlimit: {exc.strerror}", exc.errno or 0) from None


def _set_oom_score_adj(value: int) -> None:
    fd = os.open("/proc/self/oom_score_adj", os.O_RDWR | os.O_CLOEXEC)
    try:
        os.write(fd, b"%d" % value)
    except OSError as exc:
        current = os.pread(fd, 16, 0).strip().decode()
        raise _failed("oomScoreAdj", "process.oomScoreAdj",
                      f"cannot set oom_score_adj to {value} (now {current}): {exc.strerror}; "
                      "lowering it needs CAP_SYS_RESOURCE", exc.errno or 0) from None
    finally:
        os.close(fd)


def _setgroups_allowed() -> bool:
    """Whether ``/proc/self/setgroups`` allows ``setgroups(2)``: ``deny`` in a user
    namespace whose gid map an unprivileged owner wrote (``user_namespaces(7)``)."""
    try:
        fd = os.open("/proc/self/setgroups", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return True  # no /proc: try, and report what the kernel says
    try:
        return os.read(fd, 16).strip() != b"deny"
    finally:
        os.close(fd)


def _fix_stdio_owner(uid: int) -> None:
    """runc's ``fixStdioPermissions``: stdio not owned by ``uid`` (and not
    ``/dev/null``) is chowned to it, so that the user can reopen
    ``/proc/self/fd/1``; EINVAL, EPERM and EROFS leave it as it is."""
    try:
        null = os.stat("/dev/null").st_rdev
    except OSError:
        null = -1
    for fd in (0, 1, 2):
        try:
            st = os.fstat(fd)
        except OSError:
            continue
        if st.st_uid == uid or (stat.S_ISCHR(st.st_mode) and st.st_rdev == null):
            continue
        try:
            os.fchown(fd, uid, -1)
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, errno.EPERM, errno.EROFS):
                raise


def _reset_signals() -> None:
    """Default handlers for every signal Python or the engine set, and an empty mask:
    ``execve`` keeps ignored signals ignored and the mask as it is."""
    for sig in _RESET_SIGNALS:
        handler = signal.getsignal(sig)
        if handler is not None and handler is not signal.SIG_DFL:
            signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, ())


def apply_process(plan: ProcessPlan) -> None:
    """Apply ``plan`` to the calling process, the container init after ``pivot_root``
    (``/proc`` mounted), just before :func:`exec_process`. In runc's order:

    rlimits; ``oom_score_adj``; every fd from 3 marked close-on-exec; without
    ``noNewPrivileges`` the seccomp filter now (it needs ``CAP_SYS_ADMIN``); ``chdir``
    (again after the user change if EACCES); bounding set dropped; ``PR_SET_KEEPCAPS``;
    stdio chowned to the user; ``setgroups(additionalGids)`` (not when there are none
    and the user namespace has ``setgroups`` denied, as rootless; runc's
    ``setupUser``), ``setresgid``,
    ``setresuid``; keepcaps cleared; ``capset`` and the ambient set; the parent-death
    signal set again (a uid change clears it); ``umask``; signal handlers reset;
    ``no_new_privs``; with it the seccomp filter last, so that as few syscalls as
    possible run under it.

    Raises ``ContainerStartError`` with ``step`` (``rlimits``, ``oomScoreAdj``,
    ``seccomp``, ``cwd``, ``capabilities``, ``user``, ``umask``, ``no_new_privs``),
    ``field`` and ``errno``: e.g. EPERM raising a hard rlimit, or EACCES lowering
    ``oom_score_adj``, without ``CAP_SYS_RESOURCE``.
    """
    _set_rlimits(plan)
    if plan.oom_score_adj is not None:
        _set_oom_score_adj(plan.oom_score_adj)
    step, field = "fds", "process"
    try:
        try:
            sc.close_range(3, 0xFFFFFFFF, sc.CLOSE_RANGE_CLOEXEC)
        except OSError as exc:
            if exc.errno not in (errno.ENOSYS, errno.EINVAL):
                raise
        if plan.seccomp is not None and not plan.no_new_privs:
            step, field = "seccomp", "linux.seccomp"
            load_seccomp(plan.seccomp)
        step, field = "cwd", "process.cwd"
        chdir_later = False
        try:
            os.chdir(plan.cwd)
        except PermissionError:
            chdir_later = True  # runc: the container's user may have access
        pdeathsig = sc.get_pdeathsig()
        step, field = "capabilities", "process.capabilities.bounding"
        plan.caps.drop_bounding()
        sc.set_keepcaps(True)
        step, field = "user", "process.user"
        _fix_stdio_owner(plan.uid)
        field = "process.user.additionalGids"
        if plan.additional_gids or _setgroups_allowed():
            os.setgroups(plan.additional_gids)
        field = "process.user.gid"
        os.setresgid(plan.gid, plan.gid, plan.gid)
        field = "process.user.uid"
        os.setresuid(plan.uid, plan.uid, plan.uid)
        if chdir_later:
            step, field = "cwd", "process.cwd"
            os.chdir(plan.cwd)
        step, field = "capabilities", "process.capabilities"
        sc.set_keepcaps(False)
        plan.caps.apply()
        if pdeathsig:
            sc.set_pdeathsig(pdeathsig)
        step, field = "umask", "process.user.umask"
        os.umask(plan.umask)
        _reset_signals()
        if plan.no_new_privs:
            step, field = "no_new_privs", "process.noNewPrivileges"
            sc.set_no_new_privs()
            if plan.seccomp is not None:
                step, field = "seccomp", "linux.seccomp"
                load_seccomp(plan.seccomp)
    except OSError as exc:
        raise _failed(step, field, f"{step} failed: {exc.strerror or exc}",
                      exc.errno or 0) from None


def exec_process(plan: ProcessPlan) -> NoReturn:
    """``execve`` ``plan.args`` with ``plan.env``: ``args[0]`` with a ``/`` as is, else
    searched on the container's ``PATH`` like ``execvpe`` (ENOENT, ENOTDIR go on to the
    next directory, EACCES is remembered). Raises ``ContainerStartError``
    (``step="exec"``, ``field="process.args[0]"``, ``errno`` ENOENT when not found,
    EACCES when not executable) in runc's words (:func:`exec_error_words`)."""
    file = plan.args[0]
    saved: OSError | None = None
    try:
        if "/" in file:
            os.execve(file, plan.args, plan.env)
        for directory in plan.path:
            try:
                os.execve((directory or ".") + "/" + file, plan.args, plan.env)
            except OSError as exc:
                if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ESTALE, errno.ENODEV):
                    continue
                if exc.errno == errno.EACCES:
                    saved = saved or exc
                    continue
                raise
    except OSError as exc:
        saved = exc
    if saved is None:
        saved = FileNotFoundError(errno.ENOENT, "not found in PATH")
    raise _failed("exec", "process.args[0]", exec_error_words(file, saved.errno or 0),
                  saved.errno or 0)


def exec_error_words(file: str, code: int) -> str:
    """runc's words for an ``execve`` of ``file`` (``process.args[0]``) that failed
    with ``code``: ``exec: "sh": executable file not found in $PATH`` (ENOENT, no
    ``/`` in it: the ``PATH`` search), ``exec: "/x": stat /x: no such file or
    directory`` (ENOENT with a ``/``), ``exec: "/x": permission denied`` (EACCES,
    EPERM), else the system's words for ``code``. podman maps "executable file not
    found" and "no such file or directory" to exit code 127, "permission denied"
    to 126."""
    if code in (errno.ENOENT, errno.ENOTDIR):
        detail = (f"stat {file}: no such file or directory" if "/" in file
                  else "executable file not found in $PATH")
    elif code in (errno.EACCES, errno.EPERM):
        detail = "permission denied"
    else:
        words = os.strerror(code)
        detail = words[:1].lower() + words[1:]
    return f'exec: "{file}": {detail}'


def describe(exc: BaseException) -> str:
    """An exception as one line for a person, without Python's class names: an
    ``OSError`` as ``"No such file or directory: '/x'"``, one of ours as its
    message, anything else as ``str(exc)`` (its class name only when that is
    empty)."""
    if isinstance(exc, OSError) and not getattr(exc, "fields", None) and exc.strerror:
        where = f": {exc.filename!r}" if exc.filename is not None else ""
        return f"{exc.strerror}{where}"
    return str(exc) or type(exc).__name__


# -- an init as PID 1 ------------------------------------------------------------------


def _report(error_fd: int, exc: BaseException) -> None:
    """``step\\0errno\\0message`` on ``error_fd`` (the engine's error pipe), or a line
    on stderr when there is none."""
    step = getattr(exc, "step", None) or "process"
    code = getattr(exc, "errno", None) or 0
    message = describe(exc)
    try:
        if error_fd >= 0:
            os.write(error_fd, f"{step}\0{code}\0{message}".encode(errors="replace"))
        else:
            os.write(2, f"ptc-init: {message}\n".encode(errors="replace"))
    except OSError:
        pass


def _exit_code(status: int) -> int:
    """A wait status as a shell shows it: the exit code, or 128+N for signal N."""
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def _supervise(child: int) -> int:
    """Forward every signal in :data:`FORWARDED_SIGNALS` to ``child``, reap every
    zombie on SIGCHLD, and return ``child``'s exit code once it is reaped."""
    while True:
        info = signal.sigwaitinfo(_INIT_WAITS)
        if info.si_signo != signal.SIGCHLD:
            try:
                os.kill(child, info.si_signo)
            except OSError:  # gone (a zombie not yet reaped is fine), or not ours
                pass
            continue
        status = None
        while True:
            try:
                pid, raw = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            if pid == child:
                status = raw
        if status is not None:
            return _exit_code(status)


def _keep_only_kill(plan: ProcessPlan) -> None:
    """The init's own privileges once its child is forked: bounding, effective and
    permitted sets down to ``CAP_KILL`` (to signal a child of another uid), no ambient
    or inheritable, ``no_new_privs``."""
    keep = 1 << _CAP_KILL
    try:
        sc.capbset_drop(*plan.init_drop)
        sc.capset(keep, keep, 0)
    except OSError:  # no CAP_SETPCAP or no CAP_KILL: keep nothing (always allowed)
        sc.capset(0, 0, 0)
    sc.ambient_clear_all()
    sc.set_no_new_privs()


def run_as_init(plan: ProcessPlan, *, error_fd: int = -1) -> NoReturn:
    """Run ``plan`` under a minimal init (docker's ``--init``, tini's behaviour): the
    caller, PID 1 of the container after ``pivot_root``, blocks the signals it waits
    for, forks the process (which resets its signals, :func:`apply_process`,
    :func:`exec_process`), drops its own capabilities to ``CAP_KILL``, then loops on
    ``sigwaitinfo``: every signal in :data:`FORWARDED_SIGNALS` goes to the process,
    SIGCHLD reaps every zombie (``waitpid(-1, WNOHANG)``: orphans of the pid namespace
    come to PID 1). Exits with the process's exit code, or 128+N when signal N killed
    it, as soon as the process is reaped; the kernel then kills what is left of the
    pid namespace.

    ``error_fd``: the engine's close-on-exec error pipe; the process reports a failure
    before ``exec`` on it as ``step\\0errno\\0message`` (then exits 127), the init
    closes its own copy, so the engine reads EOF once the process has exec'd. Without
    it (-1) failures go to stderr. Nothing is imported; memory stays flat per child.
    """
    code = 127
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # SIG_IGN would reap behind our back
        signal.pthread_sigmask(signal.SIG_BLOCK, _INIT_WAITS)
        sc.set_child_subreaper(True)  # orphans come to us even if we are not PID 1
        child = os.fork()
    except BaseException as exc:  # noqa: B036 - everything must reach the engine
        _report(error_fd, exc)
        os._exit(code)
    if child == 0:
        try:
            _reset_signals()
            apply_process(plan)
            exec_process(plan)
        except BaseException as exc:  # noqa: B036
            _report(error_fd, exc)
        os._exit(127)
    try:
        if error_fd >= 0:
            os.close(error_fd)
        _keep_only_kill(plan)
        code = _supervise(child)
    except BaseException as exc:  # noqa: B036
        _report(-1, exc)
    os._exit(code)
