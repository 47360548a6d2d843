"""``ptc-runtime``: the native engine as an OCI runtime command line, runc-compatible.

Subcommands (runtime-spec ``runtime.md`` operations, runc 1.1's flags)::

    create [--bundle DIR] [--pid-file F] [--console-socket S] [--no-pivot]
           [--no-new-keyring] [--preserve-fds N] ID
    start ID          state ID          delete [--force] ID
    kill [--all] ID [SIGNAL]             (TERM, SIGTERM or 15; default TERM)
    run [--bundle DIR] [--pid-file F] [--detach] [--keep] ID
    exec [--process F] [--detach] [--pid-file F] [--cwd DIR] [--env K=V]...
         [--user UID[:GID]] [--additional-gids G]... [--cap CAP]...
         [--no-new-privs] ID [CMD...]
    spec [--bundle DIR] [--rootless]     list [--format table|json] [-q]
    ps [--format table|json] ID [PS OPTIONS...]    pause ID          resume ID

Global flags, before the subcommand: ``--root DIR`` (state root, default
``/run/ptc`` for root; for any other user ``$XDG_RUNTIME_DIR/ptc``, else
``/run/user/<uid>/ptc``, made ``0700`` and sticky, else an error: the same root as
the in-process engine, so one sweep and one leak check see every ptc container and
an id is unique across both; ``list``/``state`` show the ``ptc-runtime`` ones,
those with a ``state.json``), ``--rootless true|false|auto`` (accepted: rootless
mode follows the effective uid),
``--log FILE`` and ``--log-format text|json`` (errors and warnings are appended
to FILE, as JSON lines ``{"level":"error","msg":...,"time":...}`` with json,
and always written to stderr), ``--debug`` (accepted), ``--systemd-cgroup``
(refused: cgroups are cgroupfs paths, ``linux.cgroupsPath`` like
``/ptc/<id>``).

Container ids are runc's: ASCII letters, digits, ``_ + . -``. ``kill ID 0``
checks that the container runs (as ``kill(2)``), ``pause``/``resume`` work on a
created container too (it is ``paused``, then ``created`` again), and ``ps``
passes its options to ``ps(1)`` (default ``-ef``) and keeps the lines of the
container's processes (runc's ``ps``; options without a ``PID`` column, such as
``-o args``, select them with ``-p`` instead).

Exit codes: 0; for ``run``/``exec`` in the foreground the container process's
own code, 128+N when signal N killed it; 127 when ``process.args[0]`` (or the
command of ``exec``) is not found and 126 when it cannot be executed
(``create``, ``run``, ``start``, ``exec``; the message in runc's words, ``exec:
"CMD": executable file not found in $PATH`` or ``exec: "CMD": permission
denied``, which podman matches too); 1 for any other error of ours (the message
names the container id or the config field, without Python's exception names).

Rootless (run by a user other than root, :mod:`.native.rootless`): the config needs
a user namespace (``spec --rootless`` writes runc's rootless config); maps beyond
the user's own id go through ``newuidmap``/``newgidmap``; on cgroup v1, or v2
without a delegated subtree, the container has no cgroup: limits are refused,
``pause`` too, and ``ps``/``kill --all`` act on the processes of its pid namespace.

Without a mount namespace in the config (runtime-tools ``linux_ns_itype``) the
rootfs is set up in ``ptc-runtime``'s own mount namespace and entered with
``chroot``, as runc does; ``delete`` (and a failed ``create``, ``delete --force``
after a killed one, the sweep) unmounts those mounts again. ``--no-pivot``: the
rootfs is moved onto ``/`` of the container's mount namespace and chrooted into
instead of ``pivot_root`` (runc's), the host's proc and sysfs taken away first.

Not supported yet: terminals (``--console-socket``, ``--tty``,
``process.terminal``), checkpoint/restore, ``update``.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

__version__ = "0.1.0"
#: runtime-spec version of the configs we write and the states we report
SPEC_VERSION = "1.0.2"

_log_file: str | None = None
_log_json = False
_OK = 0
#: exit codes of a command that cannot be run (docker's, podman's)
_NOT_FOUND, _CANNOT_INVOKE = 127, 126
#: what Python puts before a message: ``FileNotFoundError: ``, ``[Errno 2] ``
_PYTHON_WORDS = re.compile(r"\b[A-Z][A-Za-z]*(?:Error|Exception): |\[Errno \d+\] ")


def _log(level: str, message: str) -> None:
    """Write ``message`` to stderr and, with ``--log``, append it to the log file, with
    the time in RFC 3339, UTC (``2024-05-01T12:00:00Z``, as runc's logrus)."""
    os.write(2, f"ptc-runtime: {level}: {message}\n".encode(errors="replace"))
    if _log_file is None:
        return
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    if _log_json:
        line = json.dumps({"level": level, "msg": message, "time": now})
    else:
        line = f"time={json.dumps(now)} level={level} msg={json.dumps(message)}"
    try:
        with open(_log_file, "a", encoding="utf-8") as f:
            f.write(line + "\n")
    except OSError as exc:
        os.write(2, f"ptc-runtime: cannot write log {_log_file}: {exc.strerror}\n".encode())


class _Fail(Exception):
    """A usage error of ours, reported like any other error (exit code 1)."""


def _fail(message: str) -> NoReturn:
    raise _Fail(message)


def _root(args: argparse.Namespace) -> Path:
    if args.root:
        return Path(os.path.abspath(args.root))
    if os.geteuid() != 0:
        from .native import rootless

        return rootless.prepare_state_root(rootless.state_root())
    from .state import default_state_root

    return default_state_root()


# -- subcommands ----------------------------------------------------------------------


def _spec(args: argparse.Namespace) -> int:
    from .spec import to_config
    from .types import ContainerSpec

    path = Path(args.bundle) / "config.json"
    if path.exists():
        _fail(f"{path} exists; remove it first")
    config = to_config(ContainerSpec(args=("sh",), layers=()), container_id="ptc-runtime")
    config.pop("annotations", None)
    config["linux"].pop("cgroupsPath", None)
    if args.spec_rootless:
        from .native.rootless import to_rootless

        config = to_rootless(config)
    path.write_text(json.dumps(config, indent=2) + "\n")
    return _OK


def _no_terminal(args: argparse.Namespace) -> None:
    if getattr(args, "console_socket", None) or getattr(args, "tty", False):
        _fail("terminals are not supported yet (--console-socket/--tty): run the container "
              "without one (process.terminal false)")


def _create(args: argparse.Namespace) -> int:
    from .native import lifecycle

    _no_terminal(args)
    lifecycle.create(_root(args), args.container_id, args.bundle, pid_file=args.pid_file,
                     preserve_fds=args.preserve_fds, no_pivot=args.no_pivot)
    return _OK


def _run(args: argparse.Namespace) -> int:
    from .native import lifecycle

    _no_terminal(args)
    return lifecycle.run(_root(args), args.container_id, args.bundle, pid_file=args.pid_file,
                         detach=args.detach, preserve_fds=args.preserve_fds, keep=args.keep,
                         no_pivot=args.no_pivot)


def _start(args: argparse.Namespace) -> int:
    from .native import lifecycle

    lifecycle.start(_root(args), args.container_id)
    return _OK


def _state(args: argparse.Namespace) -> int:
    from .native import lifecycle

    sys.stdout.write(json.dumps(lifecycle.state(_root(args), args.container_id), indent=2)
                     + "\n")
    return _OK


def _kill(args: argparse.Namespace) -> int:
    from .native import lifecycle

    name = args.signal_option or args.signal or "TERM"
    try:
        sig = lifecycle.parse_signal(name)
    except ValueError as exc:
        _fail(str(exc))
    lifecycle.kill(_root(args), args.container_id, sig, all_processes=args.all)
    return _OK


def _delete(args: argparse.Namespace) -> int:
    from .native import lifecycle

    lifecycle.delete(_root(args), args.container_id, force=args.force)
    return _OK


def _pause(args: argparse.Namespace) -> int:
    from .native import lifecycle

    lifecycle.pause(_root(args), args.container_id)
    return _OK


def _resume(args: argparse.Namespace) -> int:
    from .native import lifecycle

    lifecycle.resume(_root(args), args.container_id)
    return _OK


def _owner_name(uid: int) -> str:
    try:
        import pwd

        return pwd.getpwuid(uid).pw_name
    except (KeyError, ImportError):
        return str(uid)


def _list(args: argparse.Namespace) -> int:
    from .native import lifecycle

    root = _root(args)
    states = lifecycle.list_containers(root)
    if args.quiet:
        sys.stdout.write("".join(s["id"] + "\n" for s in states))
        return _OK
    rows = []
    for s in states:
        try:
            owner = _owner_name(os.stat(root / s["id"]).st_uid)
        except OSError:
            owner = ""
        rows.append({**s, "owner": owner})
    if args.format == "json":
        sys.stdout.write(json.dumps(rows) + "\n")
        return _OK
    table = [("ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER")] + [
        (r["id"], str(r["pid"]), r["status"], r["bundle"], r["created"], r["owner"])
        for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(6)]
    for row in table:
        cells = (c.ljust(w) for c, w in zip(row, widths, strict=True))
        sys.stdout.write("   ".join(cells).rstrip() + "\n")
    return _OK


def _run_ps(options: Sequence[str]) -> list[str]:
    """The lines ``ps OPTIONS`` prints; ``_Fail`` with its stderr when it fails (``ps -p``
    of processes that are gone exits 1 after its header, without a word: not a
    failure)."""
    import subprocess

    try:
        proc = subprocess.run(["ps", *options], capture_output=True, text=True, check=False,
                              stdin=subprocess.DEVNULL)
    except OSError as exc:
        _fail(f"cannot run ps(1): {exc.strerror}")
    if proc.returncode != 0 and (proc.stderr.strip() or not proc.stdout):
        _fail(f"ps {' '.join(options)} failed: {proc.stderr.strip() or proc.returncode}")
    return proc.stdout.splitlines()


def _ps(args: argparse.Namespace) -> int:
    """runc's ``ps``: ``--format json`` prints the pids; else ``ps(1)`` with the
    options (default ``-ef``), its header and the lines whose ``PID`` column is a
    process of the container. Without a ``PID`` column (``-o args``) ``ps`` itself
    selects them (``-p PID,...``)."""
    from .native import lifecycle

    pids = lifecycle.ps(_root(args), args.container_id)
    if args.format == "json":
        sys.stdout.write(json.dumps(pids) + "\n")
        return _OK
    options = list(args.ps_options) or ["-ef"]
    if options[:1] == ["--"]:
        options = options[1:]
    lines = _run_ps(options)
    if not lines:
        return _OK
    try:
        column = lines[0].split().index("PID")
    except ValueError:
        column = -1
    if column < 0:
        if pids:
            lines = _run_ps([*options, "-p", ",".join(str(p) for p in pids)])
        sys.stdout.write("".join(line + "\n" for line in lines[:1 if not pids else None]))
        return _OK
    wanted = {str(p) for p in pids}
    out = [lines[0]]
    for line in lines[1:]:
        fields = line.split()
        if len(fields) > column and fields[column] in wanted:
            out.append(line)
    sys.stdout.write("".join(line + "\n" for line in out))
    return _OK


def _exec_process(args: argparse.Namespace) -> dict[str, Any]:
    """The ``process`` of an exec: ``--process F`` as is, else the container's own with
    the command line's changes (runc's ``getProcess``)."""
    from .native import lifecycle

    if args.process:
        try:
            with open(args.process, "rb") as f:
                process = json.loads(f.read())
        except OSError as exc:
            _fail(f"--process {args.process}: {exc.strerror}")
        except ValueError as exc:
            _fail(f"--process {args.process}: not JSON: {exc}")
        if not isinstance(process, dict):
            _fail(f"--process {args.process}: not a JSON object")
        if process.get("terminal"):
            _fail("process.terminal: terminals are not supported yet: set it to false")
        return process
    if not args.process_args:
        _fail("exec needs a command (or --process FILE)")
    saved = lifecycle.saved_state(_root(args), args.container_id)
    process = json.loads(json.dumps(saved.config.get("process") or {}))
    process["args"] = list(args.process_args)
    process["terminal"] = False
    if args.cwd:
        process["cwd"] = args.cwd
    if args.env:
        process["env"] = list(process.get("env") or []) + list(args.env)
    user = process.setdefault("user", {})
    if args.user:
        uid, _, gid = args.user.partition(":")
        try:
            user["uid"] = int(uid)
            if gid:
                user["gid"] = int(gid)
        except ValueError:
            _fail(f"--user {args.user!r}: give a numeric UID[:GID]")
    if args.additional_gids:
        try:
            user["additionalGids"] = [int(g) for g in args.additional_gids]
        except ValueError:
            _fail(f"--additional-gids {args.additional_gids!r}: give numeric gids")
    if args.no_new_privs:
        process["noNewPrivileges"] = True
    if args.cap:
        caps = process.setdefault("capabilities", {})
        for kind in ("bounding", "effective", "permitted"):
            caps[kind] = list(caps.get(kind) or []) + [c for c in args.cap
                                                       if c not in (caps.get(kind) or [])]
    return process


def _exec(args: argparse.Namespace) -> int:
    from .native import lifecycle

    _no_terminal(args)
    process = _exec_process(args)
    return lifecycle.exec_process(_root(args), args.container_id, process, detach=args.detach,
                                  pid_file=args.pid_file, ignore_paused=args.ignore_paused)


# -- the parser -----------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        _log("error", message)
        sys.exit(1)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ptc-runtime",
                     description="the ptc native engine as an OCI runtime (runc-compatible)")
    parser.add_argument("--root", default=None, help="state root (default /run/ptc for root)")
    parser.add_argument("--log", default=None, help="append errors and warnings to this file")
    parser.add_argument("--log-format", choices=("text", "json"), default="text")
    parser.add_argument("--debug", action="store_true", help="accepted; no extra output")
    parser.add_argument("--systemd-cgroup", action="store_true",
                        help="not supported (cgroupfs paths only)")
    parser.add_argument("--rootless", default="auto",
                        help="accepted: true, false or auto (rootless follows the uid)")
    parser.add_argument("--criu", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--version", "-v", action="store_true", help="print the version")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)
    p: argparse.ArgumentParser

    def command(name: str, help: str, with_id: bool = True) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = sub.add_parser(name, help=help)
        if with_id:
            p.add_argument("container_id", metavar="ID")
        return p

    for name, help in (("create", "create a container from a bundle; it waits for start"),
                       ("run", "create and start a container")):
        p = sub.add_parser(name, help=help)
        p.add_argument("--bundle", "-b", default=".")
        p.add_argument("--pid-file", default=None)
        p.add_argument("--console-socket", default=None)
        p.add_argument("--no-pivot", action="store_true",
                       help="move the rootfs onto / and chroot instead of pivot_root "
                       "(as runc's; without a mount namespace chroot is always used)")
        p.add_argument("--no-new-keyring", action="store_true",
                       help="accepted; no session keyring is made")
        p.add_argument("--preserve-fds", type=int, default=0)
        if name == "run":
            p.add_argument("--detach", "-d", action="store_true")
            p.add_argument("--keep", action="store_true",
                           help="keep the stopped container (delete removes it)")
        p.add_argument("container_id", metavar="ID")
    command("start", "start a created container")
    command("state", "print the state JSON of a container")
    p = command("kill", "send a signal to the container's init")
    p.add_argument("signal", nargs="?", default=None, metavar="SIGNAL")
    p.add_argument("--all", "-a", action="store_true", help="every process of the container")
    p.add_argument("--signal", "-s", dest="signal_option", default=None,
                   help=argparse.SUPPRESS)
    p = command("delete", "delete a stopped container (--force: any)")
    p.add_argument("--force", "-f", action="store_true")
    p = sub.add_parser("exec", help="run a process in a running container")
    p.add_argument("--process", "-p", default=None)
    p.add_argument("--detach", "-d", action="store_true")
    p.add_argument("--pid-file", default=None)
    p.add_argument("--cwd", default=None)
    p.add_argument("--env", "-e", action="append", default=[])
    p.add_argument("--user", "-u", default=None)
    p.add_argument("--additional-gids", "-g", action="append", default=[])
    p.add_argument("--cap", "-c", action="append", default=[])
    p.add_argument("--no-new-privs", action="store_true")
    p.add_argument("--tty", "-t", action="store_true")
    p.add_argument("--console-socket", default=None)
    p.add_argument("--preserve-fds", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--ignore-paused", action="store_true",
                   help="exec in a paused container: the process waits, frozen, for "
                        "resume (as runc)")
    p.add_argument("container_id", metavar="ID")
    p.add_argument("process_args", metavar="CMD", nargs=argparse.REMAINDER)
    p = sub.add_parser("spec", help="write a default config.json into the bundle")
    p.add_argument("--bundle", "-b", default=".")
    p.add_argument("--rootless", action="store_true", dest="spec_rootless",
                   help="a config for a user other than root (runc spec --rootless)")
    p = sub.add_parser("list", help="list the containers under the root")
    p.add_argument("--format", "-f", choices=("table", "json"), default="table")
    p.add_argument("--quiet", "-q", action="store_true")
    p = command("ps", "list the processes of a container (ps(1) options after the ID)")
    p.add_argument("--format", "-f", choices=("table", "json"), default="table")
    p.add_argument("ps_options", metavar="PS OPTIONS", nargs=argparse.REMAINDER)
    command("pause", "freeze every process of a container")
    command("resume", "thaw a paused container")
    return parser


_COMMANDS = {"create": _create, "run": _run, "start": _start, "state": _state, "kill": _kill,
             "delete": _delete, "exec": _exec, "spec": _spec, "list": _list, "ps": _ps,
             "pause": _pause, "resume": _resume}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``ptc-runtime``; returns the exit code."""
    global _log_file, _log_json
    args = _parser().parse_args(argv)
    _log_file, _log_json = args.log, args.log_format == "json"
    if args.version:
        sys.stdout.write(f"ptc-runtime version {__version__}\nspec: {SPEC_VERSION}\n")
        return _OK
    try:
        if args.systemd_cgroup:
            _fail("--systemd-cgroup is not supported: ptc-runtime manages cgroupfs paths "
                  "(linux.cgroupsPath like /ptc/<id>); use the cgroupfs cgroup manager "
                  "(podman --cgroup-manager cgroupfs, docker's native.cgroupdriver=cgroupfs)")
        if args.rootless not in ("true", "false", "auto"):
            _fail(f"--rootless {args.rootless}: true, false or auto (rootless mode follows "
                  "the effective uid: a user other than root is rootless)")
        if args.command is None:
            _fail("a command is needed: create, start, state, kill, delete, run, exec, spec, "
                  "list, ps, pause, resume")
        if args.command in ("create", "run", "start", "state", "kill", "delete", "exec",
                            "ps", "pause", "resume"):
            from .native.lifecycle import check_id

            check_id(args.container_id)
        from .native import lifecycle

        lifecycle.warn = lambda message: _log("warning", message)
        return _COMMANDS[args.command](args)
    except _Fail as exc:
        _log("error", _PYTHON_WORDS.sub("", str(exc)))
    except (OSError, ValueError, RuntimeError, LookupError) as exc:
        _log("error", _words(exc))
        return _exit_code(exc)
    except KeyboardInterrupt:
        _log("error", "interrupted")
        return 130
    except Exception as exc:  # a bug of ours: one line, the traceback with --debug
        if args.debug:
            import traceback

            traceback.print_exc()
        _log("error", f"internal error: {_words(exc)} (--debug shows where)")
    return 1


def _words(exc: BaseException) -> str:
    """The message of ``exc`` for a person: an ``OSError`` as the system says it (``No
    such file or directory: '/x'``), without Python's class names and ``[Errno N]``
    (also where a message from the container init carries them)."""
    from .native.process import describe

    return _PYTHON_WORDS.sub("", describe(exc))


def _exit_code(exc: BaseException) -> int:
    """127 for a command that is not there, 126 for one that cannot be executed (the
    ``exec`` step failed), else 1."""
    from pytest_containers.exceptions import CommandNotFoundError

    if isinstance(exc, CommandNotFoundError):
        return _NOT_FOUND
    if getattr(exc, "step", None) == "exec" and getattr(exc, "errno", None) not in (
            None, 0, errno.ENOENT):
        return _CANNOT_INVOKE
    return 1


if __name__ == "__main__":
    sys.exit(main())
