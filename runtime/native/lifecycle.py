"""The operations of ``ptc-runtime`` on containers that outlive one command.

Implements runtime-spec ``runtime.md`` (``#operations``: create, start, state,
kill, delete; ``#lifecycle`` with its hooks) the way runc 1.1's command line
does: ``create`` leaves the container "created" (namespaces, mounts, cgroup
ready; the init waits on ``<root>/<id>/exec.fifo``) and exits, ``start``
releases it, ``delete`` removes what ``create`` made. Each operation reads and
writes ``<root>/<id>/state.json`` (:mod:`.state`) and takes an ``flock`` of the
state dir, so two commands never act on one container at the same time.

Lifetime: a created init has no parent-death signal; once ``create`` exits it
is reparented to the nearest subreaper (conmon, a shell with
``PR_SET_CHILD_SUBREAPER``) or to init, which reaps it. A zombie nobody reaped
yet counts as ``stopped``. Nothing removes such a container but ``delete``
(as runc): the sweep (:mod:`~..sweep`) leaves state dirs without a live owner
alone when they hold a created container (no ``owner`` file), and sweeps only
what a killed ``create`` or foreground ``run`` left.

A ``create`` killed half-way (``kill -9``: in a hook, between the cgroup and
the state) leaves what ``delete`` and the sweep find and remove: ``owner`` comes
first, then ``state.json`` naming the cgroup as ours before it is made, then the
init's pid as soon as it is forked. Such a container is ``stopped`` (``creating``
with a dead owner); :func:`~.statedir.destroy` kills its init (it may wait on the
exec fifo), removes its cgroup, unmounts what is under its state dir, removes
that. A new ``create`` of its id is refused until then, naming ``delete
--force`` (runc: "container with given ID already exists"); an empty cgroup left
at ``linux.cgroupsPath`` is taken over (runc reuses one), a busy one refused.

Without a mount namespace in the config the init mounts its rootfs in our mount
namespace (as runc; :mod:`~..linux.hostmounts`): what was mounted at the rootfs is
recorded in the state dir before the fork, and the init's pid before it mounts
anything; ``delete``, a failed ``create`` or ``run``, and
:func:`~.statedir.destroy` take those mounts off again, and only those (runc
leaves them).

Errors are ``ContainerRuntimeError`` (``container_id``) with runc's wording
where tools match on it ("does not exist", "not running", "not stopped",
``exec: "CMD": executable file not found in $PATH``, ``permission denied``:
podman maps the last two to exit codes 127 and 126).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import select
import signal as _signal
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from pytest_containers.exceptions import (
    CommandNotFoundError,
    ContainerNotFoundError,
    ContainerRuntimeError,
    ContainerStartError,
    InvalidOptionError,
)

from ..linux import hostmounts
from ..linux.cgroups import CgroupV1, CgroupV2
from ..linux.cgroups.resources import option_error
from . import child, rootless
from .config import check_config, check_resources, namespaces_of, root_of
from .engine import START_TIMEOUT, Spawned, spawn, start_error
from .hooks import parse_hooks, run_hooks
from .pipes import LinePipe, read_all
from .plan import Prepared, prepare
from .process import exec_error_words, prepare_process
from .state import (
    EXEC_FIFO,
    ContainerState,
    Status,
    load_state,
    proc_start_time,
    process_alive,
)
from .statedir import (
    destroy,
    missing_parents,
    release_cgroup,
    remove_state_dir,
    saved_cgroup,
    take_over_cgroup,
    write_file,
)

__all__ = ["ContainerNotFoundError", "check_id", "create", "delete", "exec_process", "kill",
           "list_containers", "parse_signal", "pause", "ps", "resume", "run", "saved_state",
           "start", "state"]

#: container ids as runc accepts them (``^[\w+-\.]+$`` in Go, where ``\w`` is ASCII)
_ID = re.compile(r"^[\w+.-]+\Z", re.ASCII)
#: the longest id: one file name (the state dir, the cgroup directory)
_ID_MAX = 255
#: seconds ``delete --force`` waits for the killed init to be gone
KILL_TIMEOUT = 10.0


def check_id(container_id: str) -> None:
    """Raise ``ValueError`` unless ``container_id`` is a runc-style id: ASCII letters,
    digits, ``_ + . -`` (not ``.`` or ``..``), at most 255 characters."""
    if (not container_id or not _ID.match(container_id) or container_id in (".", "..")
            or len(container_id) > _ID_MAX):
        raise ValueError(f"invalid container id {container_id!r}: use ASCII letters, digits "
                         f"and _ + . - (at most {_ID_MAX})")


def parse_signal(text: str | int) -> int:
    """A signal number from ``TERM``, ``SIGTERM``, ``term`` or ``15``; ``0`` (no signal:
    :func:`kill` then only checks that the container runs, as ``kill(2)``);
    ``ValueError`` naming it otherwise."""
    value = str(text).strip()
    if value.isdigit():
        number = int(value)
        if 0 <= number < _signal.NSIG:
            return number
    else:
        name = value.upper()
        name = name if name.startswith("SIG") else "SIG" + name
        sig = getattr(_signal.Signals, name, None) if name.isidentifier() else None
        if isinstance(sig, _signal.Signals):
            return int(sig)
        rt = re.fullmatch(r"SIGRTMIN(?:\+(\d+))?|SIGRTMAX(?:-(\d+))?", name)
        if rt:
            number = (_signal.SIGRTMIN + int(rt.group(1) or 0)) if name.startswith("SIGRTMIN") \
                else (_signal.SIGRTMAX - int(rt.group(2) or 0))
            if _signal.SIGRTMIN <= number <= _signal.SIGRTMAX:
                return number
    raise ValueError(f"unknown signal {text!r}")


# -- the state dir ---------------------------------------------------------------------


def _state_dir(root: Path, container_id: str) -> Path:
    check_id(container_id)
    return root / container_id


@contextlib.contextmanager
def _locked(state_dir: Path, container_id: str) -> Iterator[None]:
    """``flock`` the state dir (waits for another command on the same container)."""
    try:
        fd = os.open(state_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        raise _not_found(container_id) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _not_found(container_id: str) -> ContainerNotFoundError:
    return ContainerNotFoundError(f"container {container_id!r} does not exist",
                                  container_id=container_id)


def _owner_alive(state_dir: Path) -> bool:
    """Whether the process named in ``state_dir/owner`` lives (see :func:`~..sweep.owner_alive`)."""
    from ..sweep import owner_alive

    return owner_alive(state_dir) is True


def _load(root: Path, container_id: str) -> tuple[Path, ContainerState]:
    state_dir = _state_dir(root, container_id)
    try:
        saved = load_state(state_dir)
    except ValueError as exc:
        raise ContainerRuntimeError(str(exc), container_id=container_id) from None
    if saved is None:
        raise _not_found(container_id)
    return state_dir, saved


def saved_state(root: Path, container_id: str) -> ContainerState:
    """The container's ``state.json`` as saved (its config included). Raises
    ``ContainerNotFoundError``."""
    return _load(root, container_id)[1]


def _cgroup(saved: ContainerState) -> CgroupV1 | CgroupV2 | rootless.NoCgroup:
    return saved_cgroup(saved)


def _pids(saved: ContainerState) -> list[int]:
    """The host pids of the container: those of its cgroup, or, for a rootless one
    without a cgroup, those of its init's pid namespace."""
    cgroup = _cgroup(saved)
    if isinstance(cgroup, rootless.NoCgroup):
        return rootless.pids_in_pid_namespace(saved.pid) if process_alive(
            saved.pid, saved.start_time) else []
    return cgroup.pids(recursive=True)


def _status(state_dir: Path, saved: ContainerState) -> Status:
    """The status now (:meth:`ContainerState.current_status`); a container still
    being created is ``creating`` while its creator lives, ``stopped`` once that
    died; a created or running one whose cgroup is frozen is ``paused`` (as runc:
    ``pause`` works on a created container, ``resume`` makes it created again)."""
    if saved.status == "creating":
        return "creating" if _owner_alive(state_dir) else "stopped"
    status = saved.current_status(state_dir)
    if status in ("created", "running") and saved.cgroup_path:
        try:
            if getattr(_cgroup(saved), "frozen", False):
                return "paused"
        except OSError:
            pass
    return status


def state(root: Path, container_id: str) -> dict[str, Any]:
    """The runtime-spec State JSON of the container (``runtime.md#state``), answered
    until ``delete``. Raises ``ContainerNotFoundError``."""
    state_dir, saved = _load(root, container_id)
    return saved.oci_state(_status(state_dir, saved))


def list_containers(root: Path) -> list[dict[str, Any]]:
    """The State JSON of every container under ``root`` (those with a ``state.json``),
    sorted by id."""
    out: list[dict[str, Any]] = []
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except (FileNotFoundError, NotADirectoryError):
        return out
    for entry in entries:
        try:
            saved = load_state(entry.path)
        except (ValueError, OSError):
            continue
        if saved is not None:
            out.append(saved.oci_state(_status(Path(entry.path), saved)))
    return out


# -- create / run ----------------------------------------------------------------------


def _read_config(bundle: str) -> dict[str, Any]:
    path = os.path.join(bundle, "config.json")
    try:
        with open(path, "rb") as f:
            config = json.loads(f.read())
    except FileNotFoundError:
        raise ContainerStartError(f"bundle {bundle}: no config.json", path=path,
                                  argv=[]) from None
    except (OSError, ValueError) as exc:
        raise ContainerStartError(f"bundle {bundle}: cannot read config.json: {exc}",
                                  path=path, argv=[]) from None
    check_config(config)
    check_resources(config)
    if (config.get("process") or {}).get("terminal"):
        raise InvalidOptionError("process.terminal: terminals are not supported by ptc-runtime "
                                 "yet: set it to false", option="process.terminal", value=True)
    return config


def _write_pid_file(path: str, pid: int) -> None:
    """Write ``pid`` (no newline, as runc) to ``path`` atomically."""
    path = os.path.abspath(path)
    tmp = os.path.join(os.path.dirname(path), "." + os.path.basename(path) + ".tmp")
    write_file(tmp, b"%d" % pid)
    os.rename(tmp, path)


def _hook_state(saved: ContainerState, status: Status, pid: int | None = None) -> bytes:
    data = saved.oci_state(status)
    data["pid"] = saved.pid if pid is None else pid
    return json.dumps(data, separators=(",", ":")).encode()


def _print_warning(message: str) -> None:
    os.write(2, f"ptc-runtime: warning: {message}\n".encode(errors="replace"))


#: where warnings (failed poststart/poststop hooks) go; ``ptc-runtime`` points it at
#: its log (``--log``) too
warn = _print_warning


def _warn(message: str) -> None:
    warn(message)


def _teardown(state_dir: Path, spawned: Spawned, prepared: Prepared | None) -> None:
    """Undo a failed create or run: kill and reap the init, kill what is in the cgroup,
    remove it if we made it, unmount what the init mounted in our namespace (no mount
    namespace: :func:`~..linux.hostmounts.undo`), remove the state dir (kept, with a
    warning, when a mount stays: ``delete --force`` and the sweep try again)."""
    if spawned.pid > 0:
        try:
            os.kill(spawned.pid, _signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            os.waitpid(spawned.pid, 0)
        except ChildProcessError:
            pass
    if spawned.pidfd >= 0:
        os.close(spawned.pidfd)
        spawned.pidfd = -1
    if prepared is not None:
        prepared.close()
        if spawned.cgroup_created:
            prepared.cgroup.kill_all()
            prepared.cgroup.remove()
    try:
        hostmounts.undo(state_dir)
    except (OSError, ValueError) as exc:
        _warn(f"cannot unmount the rootfs of the failed container in {state_dir}: {exc}")
        return
    remove_state_dir(state_dir)


def _make_state_dir(root: Path, container_id: str) -> Path:
    """mkdir ``<root>/<id>``; ``ContainerStartError`` when it exists (naming ``delete
    --force`` when a create that died left it)."""
    state_dir = _state_dir(root, container_id)
    try:
        os.mkdir(state_dir, 0o700)
    except FileNotFoundError:
        root.mkdir(parents=True, exist_ok=True, mode=0o711)
        os.mkdir(state_dir, 0o700)
    except FileExistsError:
        raise _exists(state_dir, container_id) from None
    return state_dir


def _exists(state_dir: Path, container_id: str) -> ContainerStartError:
    """The error for a ``create`` of an id in use: a container, or the leftovers of a
    ``create`` or ``run`` that died (its ``owner`` is dead, or it never wrote one)."""
    message = f"container with id {container_id!r} exists"
    try:
        saved = load_state(state_dir)
    except (ValueError, OSError):
        saved = None
    if (saved is None or saved.status == "creating") and not _owner_alive(state_dir):
        from ..sweep import owner_pid

        pid = owner_pid(state_dir)
        by = f" (pid {pid}, now dead)" if pid else ""
        message += (f": a create that died{by} left it half-made; remove it with "
                    f"'ptc-runtime delete --force {container_id}'")
    return ContainerStartError(message, container_id=container_id, argv=[])


def _exec_failure(container_id: str, args: Sequence[str], exc: BaseException,
                  doing: str) -> ContainerRuntimeError | None:
    """runc's words for an ``exec`` that failed (``step`` ``exec`` with an ``errno``,
    :func:`~.process.exec_error_words`), after ``doing`` (``cannot start container
    'c1'``): a ``CommandNotFoundError`` for ENOENT (``exec: "CMD": executable file
    not found in $PATH``), else a ``ContainerStartError`` (``step`` ``exec``,
    ``errno``; ``exec: "CMD": permission denied``). ``None`` when ``exc`` is not
    such a failure."""
    code = getattr(exc, "errno", None)
    if getattr(exc, "step", None) != "exec" or not code or not args:
        return None
    message = f"{doing}: {exec_error_words(args[0], code)}"
    if code in (errno.ENOENT, errno.ENOTDIR):
        return CommandNotFoundError(message, argv=list(args), container_id=container_id,
                                    step="exec")
    return ContainerStartError(message, argv=list(args), container_id=container_id,
                               step="exec", errno=code)


def _create_failure(container_id: str, config: Mapping[str, Any] | None,
                    exc: BaseException) -> BaseException | None:
    """What a failed create or run raises instead of ``exc``: runc's words for a
    command that cannot be executed (:func:`_exec_failure`), an
    ``InvalidOptionError`` naming the field for a limit the kernel refused
    (:func:`~..linux.cgroups.resources.option_error`); ``None``: ``exc`` as it is."""
    if not isinstance(exc, Exception):
        return None
    args = list(((config or {}).get("process") or {}).get("args") or [])
    found = _exec_failure(container_id, args, exc, f"cannot start container {container_id!r}")
    if found is not None:
        return found
    if getattr(exc, "step", None) == "cgroup":
        refused = option_error(exc)
        if refused is not None:
            return InvalidOptionError(f"cannot create container {container_id!r}: {refused}",
                                      **refused.fields)
    return None


def _launch(root: Path, container_id: str, bundle: str, *, detached: bool,
            preserve_fds: int = 0, no_pivot: bool = False
            ) -> tuple[Path, ContainerState, Spawned, Prepared]:
    """``create`` (``detached``: the init waits on the exec fifo, no parent-death
    signal) or the first half of a foreground ``run`` (the init execs at once and
    dies with us). On failure nothing is left.

    What a ``kill -9`` of this process leaves can be found and removed (module
    docstring): ``owner``, then ``state.json`` naming the cgroup as ours before it
    is made, then the init's pid as soon as it is forked (without a mount namespace:
    before it mounts anything, after the record of :func:`~..linux.hostmounts.record`).
    ``no_pivot``: ``--no-pivot`` (:func:`~.plan.prepare`)."""
    bundle = os.path.abspath(bundle)
    state_dir = _make_state_dir(root, container_id)
    lock = os.open(state_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    fcntl.flock(lock, fcntl.LOCK_EX)
    spawned = Spawned(pid=0)
    prepared: Prepared | None = None
    config: dict[str, Any] | None = None
    try:
        # before anything that could leak: whose death makes this dir garbage
        write_file(f"{state_dir}/owner", b"%d\n" % os.getpid())
        config = _read_config(bundle)
        rootfs = root_of(config, bundle)
        fifo = None
        if detached:
            fifo = f"{state_dir}/{EXEC_FIFO}"
            os.mkfifo(fifo, 0o600)
        prepared = prepare(config, container_id=container_id, state_dir=state_dir,
                           bundle=bundle, rootfs=rootfs, pdeathsig=not detached,
                           exec_fifo=fifo, preserve_fds=preserve_fds, no_pivot=no_pivot)
        if not prepared.plan.rootfs.own_mount_namespace:
            hostmounts.record(state_dir, rootfs)  # before the init can mount in ours
        parents = missing_parents(prepared.cgroup)
        take_over_cgroup(prepared.cgroup, container_id)
        saved = ContainerState(
            id=container_id, bundle=bundle, rootfs=rootfs, detached=detached,
            annotations=dict(config.get("annotations") or {}),
            cgroup_path=rootless.host_cgroup_path(prepared.cgroup),
            cgroup_created=not isinstance(prepared.cgroup, rootless.NoCgroup), config=config,
            cgroup_parents=parents)
        # before the cgroup exists: from now on delete and the sweep remove it
        saved.save(state_dir)
        current = [saved]

        def record_pid() -> None:
            if current[0].pid == spawned.pid:
                return  # recorded already (after_fork)
            found = proc_start_time(spawned.pid)
            current[0] = current[0].with_(pid=spawned.pid,
                                          start_time=found[1] if found else 0)
            current[0].save(state_dir)

        spawn(prepared, spawned, after_fork=record_pid, before_go=record_pid,
              hooks_state=lambda: _hook_state(current[0], "created"), close_in_child=(lock,))
        saved = current[0].with_(status="created" if detached else "running",
                                 fate_fd=spawned.fate_fd)
        saved.save(state_dir)
        if detached:
            os.unlink(f"{state_dir}/owner")  # from now on only delete removes it
        return state_dir, saved, spawned, prepared
    except BaseException as exc:
        _teardown(state_dir, spawned, prepared)
        better = _create_failure(container_id, config, exc)
        if better is not None:
            raise better from exc
        raise
    finally:
        os.close(lock)


def create(root: Path, container_id: str, bundle: str, *, pid_file: str | None = None,
           preserve_fds: int = 0, no_pivot: bool = False) -> ContainerState:
    """``create``: the container's namespaces, mounts and cgroup set up, ``prestart``,
    ``createRuntime`` and ``createContainer`` hooks run, the init waiting for
    ``start``; its stdio is ours (kept after we exit). ``pid_file`` gets the init's
    host pid. ``no_pivot``: runc's ``--no-pivot`` (``MS_MOVE`` of the rootfs onto
    ``/``, then ``chroot``; ignored without a mount namespace, where it is always
    ``chroot``). Raises ``ContainerStartError`` (``InvalidOptionError`` for a bad
    config field, ``CommandNotFoundError``, ``HookError``); nothing is left then."""
    state_dir, saved, spawned, _ = _launch(root, container_id, bundle, detached=True,
                                           preserve_fds=preserve_fds, no_pivot=no_pivot)
    if spawned.pidfd >= 0:
        os.close(spawned.pidfd)
    if pid_file:
        try:
            _write_pid_file(pid_file, saved.pid)
        except OSError as exc:
            delete(root, container_id, force=True)
            raise ContainerStartError(f"--pid-file {pid_file}: cannot write it: {exc.strerror}",
                                      container_id=container_id, argv=[], errno=exc.errno,
                                      path=pid_file) from None
    return saved


def start(root: Path, container_id: str) -> None:
    """``start``: release a created container's init; it runs ``startContainer`` hooks
    and execs the process, then ``poststart`` hooks run here (failures warned).

    Raises ``ContainerNotFoundError``, ``ContainerRuntimeError`` when the container is
    not created, ``ContainerStartError`` when the hooks or the ``exec`` failed (the
    container is then stopped)."""
    state_dir, saved = _load(root, container_id)
    with _locked(state_dir, container_id):
        saved = _load(root, container_id)[1]  # as another command may have left it
        status = _status(state_dir, saved)
        if status != "created":
            raise ContainerRuntimeError(
                f"cannot start container {container_id!r}: it is {status}, not created"
                + (" (resume it first)" if status == "paused" else ""),
                container_id=container_id, status=status)
        try:
            fate = os.open(f"/proc/{saved.pid}/fd/{saved.fate_fd}",
                           os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            raise ContainerRuntimeError(f"cannot start container {container_id!r}: its init "
                                        f"is gone ({exc.strerror})",
                                        container_id=container_id) from None
        try:
            if not process_alive(saved.pid, saved.start_time):  # the pid was reused
                raise ContainerRuntimeError(f"container {container_id!r} is not running",
                                            container_id=container_id)
            try:
                fifo = os.open(f"{state_dir}/{EXEC_FIFO}", os.O_WRONLY | os.O_NONBLOCK)
            except OSError as exc:
                raise ContainerRuntimeError(
                    f"cannot start container {container_id!r}: its init does not wait "
                    f"({exc.strerror})", container_id=container_id) from None
            try:
                os.write(fifo, b"1")
            finally:
                os.close(fifo)
            os.unlink(f"{state_dir}/{EXEC_FIFO}")
            saved = saved.with_(status="running")
            saved.save(state_dir)
            os.set_blocking(fate, True)
            error = read_all(fate, START_TIMEOUT)
        finally:
            os.close(fate)
        if error:
            args = list((saved.config.get("process") or {}).get("args") or ["?"])
            failed = start_error(container_id, args, error)
            raise (_exec_failure(container_id, args, failed,
                                 f"cannot start container {container_id!r}") or failed)
        run_hooks(_hooks_of(saved, "poststart"), _hook_state(saved, "running"), warn=_warn)


def _hooks_of(saved: ContainerState, kind: str) -> Sequence[Any]:
    return parse_hooks(saved.config.get("hooks")).get(kind, ())


class _Forward:
    """Forward the signals a foreground command gets to ``pid`` (runc run/exec)."""

    SIGNALS = (_signal.SIGHUP, _signal.SIGINT, _signal.SIGQUIT, _signal.SIGTERM,
               _signal.SIGUSR1, _signal.SIGUSR2, _signal.SIGWINCH, _signal.SIGCONT)

    def __init__(self, pidfd: int, pid: int) -> None:
        self.pidfd, self.pid = pidfd, pid
        self.saved = {s: _signal.signal(s, self._forward) for s in self.SIGNALS}

    def _forward(self, signum: int, frame: object) -> None:
        try:
            if self.pidfd >= 0:
                _signal.pidfd_send_signal(self.pidfd, signum)
            else:
                os.kill(self.pid, signum)
        except ProcessLookupError:
            pass

    def restore(self) -> None:
        for sig, handler in self.saved.items():
            _signal.signal(sig, handler)


def _exit_code(status: int) -> int:
    """A wait status as a shell shows it: the code, or 128+N for signal N."""
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.waitstatus_to_exitcode(status)


def run(root: Path, container_id: str, bundle: str, *, pid_file: str | None = None,
        detach: bool = False, preserve_fds: int = 0, keep: bool = False,
        no_pivot: bool = False) -> int:
    """``run``: create and start. Detached: returns 0 once started (the container
    stays until ``delete``). In the foreground: the container's stdio is ours, our
    signals are forwarded to it, we wait for it, then delete it (``keep``: leave it
    stopped, for ``delete``); returns its exit code (128+N when killed by signal
    N). ``no_pivot``: as :func:`create`'s."""
    if detach:
        create(root, container_id, bundle, pid_file=pid_file, preserve_fds=preserve_fds,
               no_pivot=no_pivot)
        try:
            start(root, container_id)
        except BaseException:
            delete(root, container_id, force=True)
            raise
        return 0
    state_dir, saved, spawned, prepared = _launch(root, container_id, bundle, detached=False,
                                                  preserve_fds=preserve_fds, no_pivot=no_pivot)
    forward = _Forward(spawned.pidfd, spawned.pid)
    try:
        if pid_file:
            _write_pid_file(pid_file, saved.pid)
        run_hooks(_hooks_of(saved, "poststart"), _hook_state(saved, "running"), warn=_warn)
        if spawned.pidfd >= 0:
            poller = select.poll()
            poller.register(spawned.pidfd, select.POLLIN)
            while not poller.poll():
                pass
        status = os.waitpid(spawned.pid, 0)[1]
    except BaseException:
        forward.restore()
        _teardown(state_dir, spawned, prepared)
        raise
    forward.restore()
    os.close(spawned.pidfd)
    spawned.pidfd = -1
    if keep:
        saved.with_(status="stopped", detached=True).save(state_dir)
        os.unlink(f"{state_dir}/owner")
    else:
        _remove(state_dir, saved, status="stopped")
    return _exit_code(status)


# -- kill / delete / pause ---------------------------------------------------------------


def kill(root: Path, container_id: str, sig: int = _signal.SIGTERM, *,
         all_processes: bool = False) -> None:
    """Send ``sig`` to the container's init (``all_processes``: to every process of its
    cgroup). ``sig`` 0 sends nothing: it only checks, as ``kill(2)``, that the init
    is there (runc's ``kill ID 0``). Raises ``ContainerRuntimeError`` ("container not
    running") when it is stopped, as runc; created and paused containers take
    signals (a frozen process gets a fatal one once thawed)."""
    state_dir, saved = _load(root, container_id)
    status = _status(state_dir, saved)
    if status in ("stopped", "creating"):
        raise ContainerRuntimeError(f"container {container_id!r} is not running "
                                    f"(status {status})", container_id=container_id,
                                    status=status)
    if all_processes:
        for pid in _pids(saved):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        return
    try:
        pidfd = os.pidfd_open(saved.pid)
    except ProcessLookupError:
        raise ContainerRuntimeError(f"container {container_id!r} is not running",
                                    container_id=container_id) from None
    try:
        if not process_alive(saved.pid, saved.start_time):
            raise ContainerRuntimeError(f"container {container_id!r} is not running",
                                        container_id=container_id)
        _signal.pidfd_send_signal(pidfd, sig)
    except ProcessLookupError:
        raise ContainerRuntimeError(f"container {container_id!r} is not running",
                                    container_id=container_id) from None
    finally:
        os.close(pidfd)


def _wait_gone(saved: ContainerState, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while process_alive(saved.pid, saved.start_time):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.002)
    return True


def _remove(state_dir: Path, saved: ContainerState, *, status: Status) -> None:
    """What ``delete`` does to a stopped container: the cgroup (ours: strays killed,
    removed with the parents we made), the mounts it made in our namespace (no mount
    namespace: :func:`~..linux.hostmounts.undo`), ``poststop`` hooks (failures
    warned), the state dir. A half-made one (``creating``, its creator dead) goes to
    :func:`~.statedir.destroy`, without hooks: it never was created."""
    if saved.status == "creating":
        destroy(state_dir, saved)
        return
    release_cgroup(saved)
    hostmounts.undo(state_dir)
    run_hooks(_hooks_of(saved, "poststop"), _hook_state(saved, status, pid=0), warn=_warn)
    remove_state_dir(state_dir)


def delete(root: Path, container_id: str, *, force: bool = False) -> None:
    """``delete``: remove a stopped container (``force``: kill it first, every process
    of its cgroup); its cgroup if ``create`` made it, ``poststop`` hooks, the state
    dir. What a ``create`` killed half-way left is stopped: removed whole
    (:func:`~.statedir.destroy`). Raises ``ContainerNotFoundError`` (not with
    ``force``: a missing container is deleted already, as runc says), and
    ``ContainerRuntimeError`` for a container that is not stopped without ``force``."""
    state_dir = _state_dir(root, container_id)
    if force and not state_dir.is_dir():
        return  # nothing to delete: done, as runc's delete --force says (podman relies on it)
    try:
        with _locked(state_dir, container_id):
            _delete_locked(state_dir, container_id, force=force)
    except ContainerNotFoundError:
        if not force:
            raise


def _delete_locked(state_dir: Path, container_id: str, *, force: bool) -> None:
    try:
        saved = load_state(state_dir)
    except ValueError:
        saved = None
    if saved is None:
        if state_dir.is_dir() and not _owner_alive(state_dir):
            # a create that died before its state.json: nothing was forked or made yet
            remove_state_dir(state_dir)
            return
        raise _not_found(container_id)
    status = _status(state_dir, saved)
    if status != "stopped":
        if not force:
            raise ContainerRuntimeError(
                f"cannot delete container {container_id!r} that is not stopped: {status}",
                container_id=container_id, status=status)
        if saved.cgroup_created:
            _cgroup(saved).kill_all()
        with contextlib.suppress(ProcessLookupError):
            if process_alive(saved.pid, saved.start_time):
                os.kill(saved.pid, _signal.SIGKILL)
        if not _wait_gone(saved, KILL_TIMEOUT):
            raise ContainerRuntimeError(f"container {container_id!r} did not die within "
                                        f"{KILL_TIMEOUT} s of SIGKILL",
                                        container_id=container_id)
    _remove(state_dir, saved, status="stopped")


def pause(root: Path, container_id: str) -> None:
    """Freeze every process of the container's cgroup: ``running`` or ``created`` ->
    ``paused`` (as runc, which pauses a created container too)."""
    state_dir, saved = _load(root, container_id)
    status = _status(state_dir, saved)
    if status not in ("running", "created"):
        raise ContainerRuntimeError(f"cannot pause container {container_id!r}: it is "
                                    f"{status}", container_id=container_id, status=status)
    _cgroup(saved).freeze()


def resume(root: Path, container_id: str) -> None:
    """Thaw the container's cgroup: ``paused`` -> ``running`` (or ``created``, when it
    was paused before ``start``)."""
    state_dir, saved = _load(root, container_id)
    status = _status(state_dir, saved)
    if status != "paused":
        raise ContainerRuntimeError(f"cannot resume container {container_id!r}: it is "
                                    f"{status}", container_id=container_id, status=status)
    _cgroup(saved).thaw()


def ps(root: Path, container_id: str) -> list[int]:
    """The host pids in the container's cgroup (rootless without one: in its pid
    namespace), sorted."""
    _, saved = _load(root, container_id)
    return sorted(_pids(saved))


# -- exec ---------------------------------------------------------------------------------


def exec_process(root: Path, container_id: str, process: Mapping[str, Any], *,
                 detach: bool = False, pid_file: str | None = None,
                 ignore_paused: bool = False) -> int:
    """``exec``: run ``process`` (a runtime-spec ``process`` object) in every namespace
    and the cgroup of the created or running container, with our stdio. A paused
    one is refused unless ``ignore_paused`` (runc's ``--ignore-paused``: the process
    is frozen as soon as it joins the cgroup).

    Detached: returns 0 once it is forked (it is reparented to our subreaper, or
    init). Else waits and returns its exit code (128+N for signal N), our signals
    forwarded to it. Raises ``ContainerRuntimeError`` (the container is stopped,
    a field of ``process`` is wrong), ``CommandNotFoundError`` (``exec: "CMD":
    executable file not found in $PATH``) and ``ContainerStartError`` with ``step``
    ``exec`` (``exec: "CMD": permission denied``) when the command cannot be run."""
    state_dir, saved = _load(root, container_id)
    status = _status(state_dir, saved)
    if status == "paused" and not ignore_paused:
        raise ContainerRuntimeError(f"cannot exec in container {container_id!r}: it is "
                                    "paused (resume it, or use --ignore-paused)",
                                    container_id=container_id, status=status)
    if status not in ("created", "running", "paused"):
        raise ContainerRuntimeError(f"cannot exec in container {container_id!r}: it is "
                                    f"{status}", container_id=container_id, status=status)
    linux = saved.config.get("linux") or {}
    try:
        plan = prepare_process(process, saved.rootfs, seccomp=linux.get("seccomp"))
    except ValueError as exc:
        raise ContainerStartError(f"exec in container {container_id!r}: {exc}",
                                  container_id=container_id, argv=[],
                                  field=getattr(exc, "option", None)) from None
    pidfd = os.pidfd_open(saved.pid)
    epipe_r, epipe_w = os.pipe()
    status_r, status_w = os.pipe()
    exec_plan = child.ExecPlan(
        target_pidfd=pidfd, target_pid=saved.pid,
        ns_flags=namespaces_of(saved.config).all_flags,
        cgroup_procs=tuple(str(p) for p in _cgroup(saved).procs_paths()),
        process=plan, detach=detach)
    parent = os.getpid()
    helper = os.fork()
    if helper == 0:
        try:
            os.close(epipe_r)
            os.close(status_r)
            child.run_exec_helper(exec_plan, epipe_w, status_w, parent)
        finally:
            os._exit(127)
    os.close(epipe_w)
    os.close(status_w)
    os.close(pidfd)
    pipe = LinePipe(status_r)
    forward = None
    try:
        error = read_all(epipe_r, START_TIMEOUT)
        if error:
            failed = start_error(container_id, plan.args, error)
            raise (_exec_failure(container_id, plan.args, failed,
                                 f"exec in container {container_id!r} failed") or failed)
        line = pipe.read_line(START_TIMEOUT)
        if not line or not line.startswith(b"P"):
            raise ContainerRuntimeError(f"exec in container {container_id!r}: the helper "
                                        "died", container_id=container_id)
        target = int(line[1:])
        if pid_file:
            _write_pid_file(pid_file, target)
        if detach:
            return 0
        forward = _Forward(-1, target)
        line = pipe.read_line(None)
        if not line or not line.startswith(b"S"):
            return 128 + _signal.SIGKILL
        return _exit_code(int(line[1:]))
    finally:
        if forward is not None:
            forward.restore()
        os.close(epipe_r)
        pipe.close()
        with contextlib.suppress(ChildProcessError):
            os.waitpid(helper, 0)
