"""``pytest-containers``: the docker-like command line for CI steps.

Implemented here: ``image pull [--pull always|missing|never] [--platform P] REF``,
``image ls``, ``image inspect REF`` (JSON; REF may be an image ID or digest,
``sha256:<hex>``), ``image tag SRC DST``, ``image rm REF...``, ``image prune
[--grace SECONDS | --all]``, ``image push [--chunk-size BYTES] REF [DST]``,
``image save REF -o FILE`` (``-o -``: to stdout, not a terminal) and ``image
load -i FILE [--tag REF]`` (OCI archives, as ``skopeo``'s ``oci-archive:``), and
``run [--memory SIZE] [--cpus N] [--pids-limit N] [--runtime NAME] [-e K=V]
[-w DIR] [-u USER] IMAGE [COMMAND...]``. ``run`` exits with the container's
exit code (128+N when killed by signal N) and prints a line on stderr when
the kernel OOM-killed a process of it. Our own failures (any of our errors,
any OS error: a store that is read-only, missing or full, an unwritable output
file) print one line ``pytest-containers: error: ...`` and exit 125, like
``docker run``'s own failures; a command that is not in the image exits 127,
one that cannot be executed 126 (docker's codes). A wait of more than a second
for a store lock another process holds is reported on stderr (``waiting for
the store lock FILE held by pid N (...)``). Ctrl-C and SIGTERM (also while
waiting for a lock) exit 130 and 143 without a traceback; ``run`` removes its
container first. A closed stdout (``... | head``) exits 141 (SIGPIPE), killing
the container of ``run``. Every ``run`` first sweeps containers whose owner
process is dead; the runtime side is imported for ``run`` and the commands
below only.

``run --init`` runs an init as PID 1 (docker's ``--init``: it forwards signals
and reaps zombies; native engine and ``ptc-runtime``). ``run -d`` (``--detach``)
starts the container under a monitor process of its own and prints its id
(:mod:`.detached`; ``--name NAME``, ``--rm`` to remove it when it exits); it
outlives the command, and these commands take it by name, id or id prefix:
``ps [-a] [-q]``, ``logs [-f]`` (its stdout and stderr to ours),
``top``, ``inspect`` (a JSON array of records), ``stop [-t SECONDS]`` (the
image's STOPSIGNAL, SIGKILL after 10 s), ``kill [-s SIGNAL]`` (default KILL),
``wait`` (prints the exit code: 128+N when killed by signal N), ``rm [-f]``
(the record and all that is left; ``-f`` kills a running one) and ``prune``
(every exited or dead one, and what any dead owner left). A container name
that is unknown is an error (125); a command on several containers does all it
can and exits 125 if one failed.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, BinaryIO, NoReturn

from .exceptions import (
    CommandNotFoundError,
    ContainerNotFoundError,
    ContainerRuntimeError,
    ContainersError,
    ImageError,
    InvalidOptionError,
)

if TYPE_CHECKING:  # the image side is imported by the commands that use it
    from .containers import ContainerHandle
    from .detached import DetachedContainers, DetachedState
    from .image.gc import PruneReport
    from .image.store import Store
    from .images import Images

EXIT_ERROR = 125
EXIT_NOT_EXECUTABLE = 126
EXIT_NOT_FOUND = 127
EXIT_SIGINT = 128 + signal.SIGINT
EXIT_SIGPIPE = 128 + signal.SIGPIPE
EXIT_SIGTERM = 128 + signal.SIGTERM


class _Terminated(KeyboardInterrupt):
    """Raised by the SIGTERM handler so that ``run`` tears down as for Ctrl-C."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise _Terminated()


def _non_negative_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds >= 0")
    return value


def _positive_bytes(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of bytes")
    return value


class _Parser(argparse.ArgumentParser):
    """A usage error is one line on stderr and exit 125, as docker's flag errors (not
    argparse's usage text and exit 2); ``--help`` still shows the usage."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="pytest-containers", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--store",
        default=None,
        metavar="DIR",
        help="image store directory (default: $XDG_CACHE_HOME/pytest-containers)",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    image = sub.add_parser("image", help="manage images").add_subparsers(
        dest="image_command", required=True
    )
    pull = image.add_parser("pull", help="pull an image from a registry")
    pull.add_argument("--platform", default=None, metavar="OS/ARCH[/VARIANT]",
                      help="platform to pick from a multi-platform image (default: this host)")
    pull.add_argument("--pull", choices=("always", "missing", "never"), default="always",
                      help="always ask the registry (default), only when the store lacks the"
                      " image (missing), or never")
    pull.add_argument("reference")
    image.add_parser("ls", help="list images in the store")
    image.add_parser("inspect", help="show a stored image (name, ID or digest) as JSON"
                     ).add_argument("reference")
    tag = image.add_parser("tag", help="give a stored image another name")
    tag.add_argument("source")
    tag.add_argument("target")
    rm = image.add_parser("rm", help="remove names (blobs stay until prune)")
    rm.add_argument("references", nargs="+", metavar="reference")
    prune = image.add_parser(
        "prune", help="remove blobs and snapshots no name reaches and no container uses"
    )
    ages = prune.add_mutually_exclusive_group()
    ages.add_argument("--grace", type=_non_negative_seconds, default=None,
                      metavar="SECONDS", help="keep unnamed blobs and snapshots younger than"
                      " this (default: the store's PRUNE_GRACE, 300: a pull or load may be"
                      " about to name them)")
    ages.add_argument("--all", action="store_true",
                      help="remove them whatever their age (--grace 0; only while no pull or"
                      " load runs on this store)")
    push = image.add_parser("push", help="push a stored image to a registry")
    push.add_argument("reference")
    push.add_argument("destination", nargs="?", default=None)
    push.add_argument("--chunk-size", type=_positive_bytes, default=None, metavar="BYTES",
                      help="upload in chunks")
    save = image.add_parser("save", help="write a stored image to an OCI archive")
    save.add_argument("reference")
    save.add_argument("--output", "-o", required=True, metavar="FILE",
                      help="the archive to write; - for stdout (not a terminal)")
    load = image.add_parser("load", help="load the images of an OCI archive")
    load.add_argument("--input", "-i", required=True, metavar="FILE")
    load.add_argument("--tag", "-t", default=None, metavar="REF", help="name its one image")

    run = sub.add_parser("run", help="run a command in a new container")
    run.add_argument("--memory", "-m", default=None, help="memory limit, e.g. 64m")
    run.add_argument("--cpus", type=float, default=None, help="CPU quota as a number of CPUs")
    run.add_argument("--pids-limit", type=int, default=None, help="maximum number of pids")
    run.add_argument("--runtime", default="native", help="backend name (default native)")
    run.add_argument("--env", "-e", action="append", default=[], metavar="KEY=VALUE")
    run.add_argument("--workdir", "-w", default=None)
    run.add_argument("--user", "-u", default=None)
    run.add_argument("--hostname", default=None)
    run.add_argument("--pull", choices=("always", "missing", "never"), default="missing")
    run.add_argument("--platform", default=None, metavar="OS/ARCH[/VARIANT]",
                     help="platform to pick from a multi-platform image (default: this host)")
    run.add_argument("--allow-foreign-platform", action="store_true",
                     help="start an image built for a platform this host cannot run natively")
    run.add_argument("--detach", "-d", action="store_true",
                     help="run in the background under a monitor process: print the"
                     " container id and return")
    run.add_argument("--name", default=None,
                     help="name of a detached container (unique among them)")
    run.add_argument("--rm", action="store_true",
                     help="remove a detached container when it exits (a foreground one"
                     " always is)")
    run.add_argument("--init", action="store_true",
                     help="run an init as PID 1 that forwards signals and reaps zombies"
                     " (native engine)")
    run.add_argument("image")
    run.add_argument("cmd", nargs=argparse.REMAINDER, metavar="COMMAND")
    _container_parsers(sub)
    return parser


def _container_parsers(sub: argparse._SubParsersAction) -> None:
    """``ps``, ``logs``, ``stop``, ``kill``, ``rm``, ``top``, ``wait``, ``inspect``,
    ``prune``: commands on detached containers (:mod:`.detached`)."""
    ps = sub.add_parser("ps", help="list detached containers (running ones; -a: all)")
    ps.add_argument("--all", "-a", action="store_true", help="also exited and dead ones")
    ps.add_argument("--quiet", "-q", action="store_true", help="only the ids")
    logs = sub.add_parser("logs", help="print a detached container's output")
    logs.add_argument("--follow", "-f", action="store_true",
                      help="keep printing until the container exits")
    logs.add_argument("container", metavar="NAME|ID")
    stop = sub.add_parser("stop", help="stop detached containers: STOPSIGNAL, then SIGKILL")
    stop.add_argument("--time", "-t", type=_non_negative_seconds, default=10.0,
                      metavar="SECONDS", help="seconds before SIGKILL (default %(default)g)")
    stop.add_argument("containers", nargs="+", metavar="NAME|ID")
    kill = sub.add_parser("kill", help="send a signal to detached containers' PID 1")
    kill.add_argument("--signal", "-s", default="KILL", help="name or number (default KILL)")
    kill.add_argument("containers", nargs="+", metavar="NAME|ID")
    rm = sub.add_parser("rm", help="remove detached containers and all they left")
    rm.add_argument("--force", "-f", action="store_true", help="kill a running one first")
    rm.add_argument("containers", nargs="+", metavar="NAME|ID")
    top = sub.add_parser("top", help="list the processes of a running detached container")
    top.add_argument("container", metavar="NAME|ID")
    wait = sub.add_parser("wait", help="wait for detached containers to exit; print exit codes")
    wait.add_argument("containers", nargs="+", metavar="NAME|ID")
    inspect = sub.add_parser("inspect", help="detached containers' records as a JSON array")
    inspect.add_argument("containers", nargs="+", metavar="NAME|ID")
    sub.add_parser("prune", help="remove exited and dead detached containers, and what"
                   " containers whose owner died left")


def _copy_new(src: BinaryIO, dst: BinaryIO) -> None:
    chunk = src.read()
    if chunk:
        dst.write(chunk)
        dst.flush()


def _follow(handle: ContainerHandle, out: BinaryIO, err: BinaryIO) -> int:
    """Relay the container's stdout and stderr while it runs; return its exit code.

    When our stdout or stderr is closed (``| head``), the container is killed, as
    SIGPIPE would end a process writing to that pipe, and 141 is returned."""
    paths = (handle.stdout_path, handle.stderr_path)
    with open(paths[0], "rb") as fo, open(paths[1], "rb") as fe:
        while True:
            status = handle.poll()
            try:
                _copy_new(fo, out)
                _copy_new(fe, err)
            except BrokenPipeError:
                handle.kill()
                _discard_stdout()
                return EXIT_SIGPIPE
            if status is not None:
                break
            time.sleep(0.02)
    return status.exit_code


def _run(args: argparse.Namespace, images: Images) -> int:
    env = {}
    for item in args.env:
        key, sep, value = item.partition("=")
        env[key] = value if sep else os.environ.get(key, "")
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    from ._pluginmanager import make_runtime  # the runtime side, for run only
    from .containers import Containers

    options = {"memory": args.memory, "cpus": args.cpus, "pids": args.pids_limit, "env": env,
               "workdir": args.workdir, "user": args.user, "hostname": args.hostname,
               "platform": args.platform, "init": args.init,
               "allow_foreign_platform": args.allow_foreign_platform}
    if args.detach:
        from .detached import DetachedContainers

        images.get(args.image, platform=args.platform)  # pulled here, in the foreground
        state = DetachedContainers().run(
            Containers(images, make_runtime(args.runtime)), args.image, cmd or None,
            name=args.name, auto_remove=args.rm, **options)
        print(state.id)
        return 0
    if args.name is not None:
        raise InvalidOptionError("--name is for a detached container (run -d): a container"
                                 " run in the foreground is removed when it exits",
                                 option="--name", value=args.name)
    factory = Containers(images, make_runtime(args.runtime))
    try:
        handle = factory.start(args.image, cmd or None, **options)  # type: ignore[arg-type]
        code = _follow(handle, sys.stdout.buffer, sys.stderr.buffer)
        status = handle.wait()
        if status.oom_killed:
            stats = handle.stats()
            print(
                f"pytest-containers: the kernel OOM-killed a process of container {handle.id}"
                f" ({stats.oom_kills} OOM kill(s), peak memory {stats.memory_peak_bytes} bytes,"
                f" limit {args.memory})",
                file=sys.stderr,
            )
        return code
    finally:
        factory.close()


def _image_ls(store: Store) -> int:
    """The names ``image ls`` lists are exactly those other commands resolve
    (:meth:`Store.images`); ``REGISTRY DIGEST`` is what ``REPO@<it>`` pulls (see
    :attr:`Image.registry_digest`)."""
    rows = [("REFERENCE", "DIGEST", "REGISTRY DIGEST", "SIZE")]
    for image in store.images():
        size = sum(layer.size for layer in image.manifest.layers)
        rows.append(
            (
                str(image.reference),
                image.digest[:19],
                image.registry_digest[:19],
                f"{size / 1e6:.1f}MB",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return 0


def _print_prune(report: PruneReport) -> None:
    for digest in report.blobs:
        print(f"deleted blob: {digest}")
    for chain_id in report.snapshots:
        print(f"deleted snapshot: {chain_id}")
    for path in report.temp:
        print(f"deleted temp: {path}")
    for chain_id in report.in_use:
        print(f"kept snapshot (in use by a container): {chain_id}")
    young_blobs, young_snapshots = len(report.young_blobs), len(report.young_snapshots)
    if young_blobs or young_snapshots:
        print(
            f"kept {young_blobs} blob(s) and {young_snapshots} snapshot(s)"
            f" ({report.young_bytes / 1e6:.1f}MB) that no name reaches but younger than the"
            f" grace period of {report.grace:g} s (a pull or load may be about to name them);"
            " --all removes them"
        )
    if report.temp_in_use:
        print(
            f"kept {len(report.temp_in_use)} temp file(s) being written (their lock is held"
            " by a running pull, load or unpack)"
        )
    if report.temp_young:
        print(
            f"kept {len(report.temp_young)} temp file(s) changed within the last"
            f" {report.stale_temp:g} s (a load may be using them)"
        )
    if report.locks:
        print(f"deleted lock files nobody held: {len(report.locks)}")
    print(f"Total reclaimed space: {report.freed_bytes / 1e6:.1f}MB")


def _image_command(args: argparse.Namespace, store: Store) -> int:
    """``image pull|ls|inspect|tag|rm|prune|push|save|load``; errors are raised."""
    from .image.store import PRUNE_GRACE
    from .images import Images

    command = args.image_command
    images = Images(store, policy=args.pull if command == "pull" else "missing")
    if command == "pull":
        image = images.pull(args.reference, platform=args.platform)
        print(f"{image.reference}: {image.digest}")
    elif command == "ls":
        return _image_ls(store)
    elif command == "inspect":
        print(json.dumps(images.inspect(args.reference), indent=2))
    elif command == "tag":
        image = images.tag(args.source, args.target)
        print(f"{image.reference}: {image.digest}")
    elif command == "rm":
        for reference in args.references:
            images.rm(reference)
            print(f"Untagged: {reference}")
    elif command == "prune":
        grace = 0.0 if args.all else PRUNE_GRACE if args.grace is None else args.grace
        _print_prune(images.prune(grace=grace))
    elif command == "push":
        result = images.push(args.reference, args.destination, chunk_bytes=args.chunk_size)
        print(f"{result.reference}: {result.digest}")
    elif command == "save":
        if args.output != "-":
            images.save(args.reference, args.output)
        elif sys.stdout.isatty():
            raise InvalidOptionError(
                "refusing to write an archive to a terminal: redirect stdout"
                " (-o - > FILE.tar, or | COMMAND) or give -o FILE",
                option="--output",
                value="-",
            )
        else:
            sys.stdout.flush()
            images.save(args.reference, sys.stdout.buffer)
    elif command == "load":
        for image in images.load(args.input, args.tag):
            print(f"Loaded image: {image.reference}")
    return 0


_CONTAINER_COMMANDS = ("ps", "logs", "stop", "kill", "rm", "top", "wait", "inspect", "prune")


def _ago(seconds: float) -> str:
    """``5 seconds``, ``3 minutes``, ``2 hours``, ``4 days`` (rounded down)."""
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            count = int(seconds // size)
            return f"{count} {unit}{'s' if count > 1 else ''}"
    count = max(0, int(seconds))
    return f"{count} second{'' if count == 1 else 's'}"


def _ps(states: Sequence[DetachedState], quiet: bool) -> int:
    if quiet:
        for state in states:
            print(state.id)
        return 0
    now = time.time()
    rows = [("CONTAINER ID", "NAME", "IMAGE", "COMMAND", "CREATED", "STATUS")]
    for state in states:
        command = " ".join(state.args)
        command = command if len(command) <= 30 else command[:29] + "…"
        status = state.live_status()
        if status == "running":
            shown = f"Up {_ago(now - (state.started_at or state.created_at))}"
        elif status == "exited":
            shown = (f"Exited ({state.exit_code}) "
                     f"{_ago(now - (state.finished_at or now))} ago")
        elif status == "dead":
            shown = "Dead (its monitor died)"
        else:
            shown = "Created"
        rows.append((state.id, state.name or "-", state.image, f'"{command}"',
                     f"{_ago(now - state.created_at)} ago", shown))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return 0


def _logs(detached: DetachedContainers, container: str, follow: bool) -> int:
    """Copy the container's stdout to ours and its stderr to our stderr; with
    ``follow`` until it is no longer running (then what it wrote last)."""
    state = detached.get(container)
    out, err = sys.stdout.buffer, sys.stderr.buffer
    with open(state.stdout, "rb") as fo, open(state.stderr, "rb") as fe:
        while True:
            try:
                running = follow and detached.get(state.id).live_status() in (
                    "running", "creating")
            except ContainerNotFoundError:  # --rm: removed once exited
                running = False
            _copy_new(fo, out)
            _copy_new(fe, err)
            if not running:
                return 0
            time.sleep(0.05)


def _top(detached: DetachedContainers, container: str) -> int:
    rows = [("USER", "PID", "PPID", "NSPID", "STAT", "COMMAND")]
    for p in detached.top(container):
        rows.append((p.user, str(p.pid), str(p.ppid), "-" if p.ns_pid is None else str(p.ns_pid),
                     p.state, p.command))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)) + "  " + row[-1])
    return 0


def _each(names: Sequence[str], action: Callable[[str], object]) -> int:
    """``action`` on every name in turn (docker's ``stop a b``); a failure is printed as
    an error line and the rest still done; 125 when any failed."""
    code = 0
    for name in names:
        try:
            action(name)
        except ContainersError as exc:
            _error(exc)
            code = EXIT_ERROR
    return code


def _container_command(args: argparse.Namespace) -> int:
    """``ps|logs|stop|kill|rm|top|wait|inspect|prune`` on detached containers."""
    from .containers import signal_number
    from .detached import DetachedContainers

    detached = DetachedContainers()
    command = args.command
    if command == "ps":
        return _ps(detached.ps(all=args.all), args.quiet)
    if command == "logs":
        return _logs(detached, args.container, args.follow)
    if command == "top":
        return _top(detached, args.container)
    if command == "inspect":
        found: list[dict[str, object]] = []
        code = _each(args.containers, lambda name: found.append(detached.inspect(name)))
        print(json.dumps(found, indent=2))
        return code
    if command == "prune":
        for container_id in detached.prune():
            print(f"deleted container: {container_id}")
        return 0

    def done(name: str, result: object) -> None:
        print(name, flush=True)

    if command == "stop":
        return _each(args.containers, lambda n: done(n, detached.stop(n, args.time)))
    if command == "kill":
        number = signal_number(args.signal)
        return _each(args.containers, lambda n: done(n, detached.kill(n, number)))
    if command == "rm":
        return _each(args.containers, lambda n: done(n, detached.remove(n, force=args.force)))
    if command == "wait":
        def wait(name: str) -> None:
            state = detached.wait(name)
            if state.exit_code is None:
                raise ContainerRuntimeError(
                    f"container {name!r} ({state.id}): its monitor died, the exit status is"
                    " lost", container_id=state.id)
            print(state.exit_code, flush=True)

        return _each(args.containers, wait)
    return EXIT_ERROR


def _one_line(exc: BaseException) -> str:
    """The message of ``exc`` on one line; an OS error (not one of ours) as
    ``<why>: <file>`` without its ``[Errno N]``."""
    text = str(exc)
    if isinstance(exc, OSError) and not isinstance(exc, ContainersError) and exc.strerror:
        text = exc.strerror
        if exc.filename is not None:
            text += f": {exc.filename}"
            if exc.filename2 is not None:
                text += f" -> {exc.filename2}"
    return " ".join(text.split()) or type(exc).__name__


def _error(exc: BaseException) -> None:
    print(f"pytest-containers: error: {_one_line(exc)}", file=sys.stderr)


class _StderrHandler(logging.Handler):
    """Our log records (a wait for a store lock) as ``pytest-containers: ...`` lines on
    whatever ``sys.stderr`` is when they are emitted."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            print(f"pytest-containers: {record.getMessage()}", file=sys.stderr, flush=True)
        except Exception:  # noqa: BLE001 - logging must not raise
            self.handleError(record)


def _dispatch(args: argparse.Namespace) -> int:
    if args.command in _CONTAINER_COMMANDS:  # no store needed
        return _container_command(args)
    from .image.store import Store
    from .images import Images, default_root

    store = Store(args.store if args.store is not None else default_root())
    if args.command == "image":
        try:
            return _image_command(args, store)
        except ValueError as exc:  # of ours, raised as a plain ValueError
            if isinstance(exc, ContainersError):
                raise
            _error(exc)
            return EXIT_ERROR
    if args.command == "run":
        from ._pluginmanager import runtime_names
        from .runtime.sweep import sweep

        if args.runtime not in runtime_names():
            print(
                f"pytest-containers: error: unknown runtime {args.runtime!r}; available: "
                f"{', '.join(runtime_names())}",
                file=sys.stderr,
            )
            return EXIT_ERROR
        sweep()
        return _run(args, Images(store, policy=args.pull))
    return EXIT_ERROR


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``pytest-containers``; returns the process exit code."""
    args = _parser().parse_args(argv)
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _on_sigterm)
    logger = logging.getLogger("pytest_containers")
    handler = _StderrHandler(logging.INFO)
    logger.addHandler(handler)
    try:
        return _dispatch(args)
    except CommandNotFoundError as exc:
        _error(exc)
        return EXIT_NOT_FOUND
    except ContainersError as exc:
        _error(exc)
        not_executable = getattr(exc, "errno", None) == errno.EACCES
        if not_executable and args.command == "run" and not isinstance(exc, ImageError):
            return EXIT_NOT_EXECUTABLE
        return EXIT_ERROR
    except BrokenPipeError:  # stdout closed (image save -o - | head)
        _discard_stdout()
        return EXIT_SIGPIPE
    except OSError as exc:
        _error(exc)
        return EXIT_ERROR
    except _Terminated:
        return EXIT_SIGTERM
    except KeyboardInterrupt:
        return EXIT_SIGINT
    finally:
        logger.removeHandler(handler)


def _discard_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's flush at exit does not
    fail again on a closed pipe."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


if __name__ == "__main__":
    sys.exit(main())
