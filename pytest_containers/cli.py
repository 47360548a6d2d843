"""``pytest-containers``: the docker-like command line for CI steps.

Implemented here: ``image pull REF``, ``image ls``, ``image inspect REF``
(JSON), ``image tag SRC DST``, ``image rm REF...``, ``image prune``,
``image push [--chunk-size BYTES] REF [DST]``, ``image save REF -o FILE``
and ``image load -i FILE [--tag REF]`` (OCI archives, as ``skopeo``'s
``oci-archive:``), and
``run [--memory SIZE] [--cpus N] [--pids-limit N] [--runtime NAME] [-e K=V]
[-w DIR] [-u USER] IMAGE [COMMAND...]``. ``run`` exits with the container's
exit code (128+N when killed by signal N) and prints a line on stderr when
the kernel OOM-killed a process of it. Errors print ``pytest-containers:
error: ...`` and exit 125, like ``docker run``'s own failures; a command that
is not in the image exits 127, one that cannot be executed 126 (docker's
codes). Ctrl-C and SIGTERM remove the container and exit 130 and 143; a
closed stdout (``... | head``) kills the container and exits 141 (SIGPIPE).
Every ``run`` first sweeps containers whose owner process is dead.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

from ._pluginmanager import make_runtime, runtime_names
from .containers import ContainerHandle, Containers
from .exceptions import CommandNotFoundError, ContainersError
from .image.store import Store
from .images import Images, default_root
from .runtime.sweep import sweep

EXIT_ERROR = 125
EXIT_NOT_EXECUTABLE = 126
EXIT_NOT_FOUND = 127
EXIT_SIGPIPE = 128 + signal.SIGPIPE
EXIT_SIGTERM = 128 + signal.SIGTERM


class _Terminated(KeyboardInterrupt):
    """Raised by the SIGTERM handler so that ``run`` tears down as for Ctrl-C."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise _Terminated()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pytest-containers", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--store",
        type=Path,
        default=None,
        help="image store directory (default: %(default)s -> XDG cache)",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    image = sub.add_parser("image", help="manage images").add_subparsers(
        dest="image_command", required=True
    )
    pull = image.add_parser("pull", help="pull an image from a registry")
    pull.add_argument("--platform", default=None, metavar="OS/ARCH[/VARIANT]",
                      help="platform to pick from a multi-platform image (default: this host)")
    pull.add_argument("reference")
    image.add_parser("ls", help="list images in the store")
    image.add_parser("inspect", help="show a stored image as JSON").add_argument("reference")
    tag = image.add_parser("tag", help="give a stored image another name")
    tag.add_argument("source")
    tag.add_argument("target")
    rm = image.add_parser("rm", help="remove names (blobs stay until prune)")
    rm.add_argument("references", nargs="+", metavar="reference")
    image.add_parser(
        "prune", help="remove blobs and snapshots no name reaches and no container uses"
    )
    push = image.add_parser("push", help="push a stored image to a registry")
    push.add_argument("reference")
    push.add_argument("destination", nargs="?", default=None)
    push.add_argument(
        "--chunk-size", type=int, default=None, metavar="BYTES", help="upload in chunks"
    )
    save = image.add_parser("save", help="write a stored image to an OCI archive")
    save.add_argument("reference")
    save.add_argument("--output", "-o", required=True, type=Path, metavar="FILE")
    load = image.add_parser("load", help="load the images of an OCI archive")
    load.add_argument("--input", "-i", required=True, type=Path, metavar="FILE")
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
    run.add_argument("image")
    run.add_argument("cmd", nargs=argparse.REMAINDER, metavar="COMMAND")
    return parser


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
                # keep the interpreter's own flush at exit from failing again
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
                os.close(devnull)
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
    factory = Containers(images, make_runtime(args.runtime))
    try:
        handle = factory.start(
            args.image,
            cmd or None,
            memory=args.memory,
            cpus=args.cpus,
            pids=args.pids_limit,
            env=env,
            workdir=args.workdir,
            user=args.user,
            hostname=args.hostname,
            platform=args.platform,
            allow_foreign_platform=args.allow_foreign_platform,
        )
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
    rows = [("REFERENCE", "DIGEST", "SIZE")]
    for image in store.images():
        size = sum(layer.size for layer in image.manifest.layers)
        rows.append((str(image.reference), image.digest[:19], f"{size / 1e6:.1f}MB"))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return 0


def _image_command(args: argparse.Namespace, store: Store) -> int:
    """``image inspect|tag|rm|prune|push|save|load``; errors are raised."""
    images, command = Images(store), args.image_command
    if command == "inspect":
        print(json.dumps(images.inspect(args.reference), indent=2))
    elif command == "tag":
        image = images.tag(args.source, args.target)
        print(f"{image.reference}: {image.digest}")
    elif command == "rm":
        for reference in args.references:
            images.rm(reference)
            print(f"Untagged: {reference}")
    elif command == "prune":
        report = images.prune()
        for digest in report.blobs:
            print(f"deleted blob: {digest}")
        for chain_id in report.snapshots:
            print(f"deleted snapshot: {chain_id}")
        for path in report.temp:
            print(f"deleted temp: {path}")
        for chain_id in report.in_use:
            print(f"kept snapshot (in use by a container): {chain_id}")
        if report.locks:
            print(f"deleted lock files nobody held: {len(report.locks)}")
        print(f"Total reclaimed space: {report.freed_bytes / 1e6:.1f}MB")
    elif command == "push":
        result = images.push(args.reference, args.destination, chunk_bytes=args.chunk_size)
        print(f"{result.reference}: {result.digest}")
    elif command == "save":
        images.save(args.reference, args.output)
    elif command == "load":
        for image in images.load(args.input, args.tag):
            print(f"Loaded image: {image.reference}")
    return 0


def _error(exc: BaseException) -> None:
    print(f"pytest-containers: error: {exc}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``pytest-containers``; returns the process exit code."""
    args = _parser().parse_args(argv)
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        store = Store(args.store or default_root())
    except ValueError as exc:
        _error(exc)
        return EXIT_ERROR
    try:
        if args.command == "image" and args.image_command == "pull":
            image = Images(store, policy="always").pull(args.reference,
                                                        platform=args.platform)
            print(f"{image.reference}: {image.digest}")
            return 0
        if args.command == "image" and args.image_command == "ls":
            return _image_ls(store)
        if args.command == "image":
            try:
                return _image_command(args, store)
            except (OSError, ValueError) as exc:  # the archive file; --chunk-size
                if isinstance(exc, ContainersError):
                    raise
                _error(exc)
                return EXIT_ERROR
        if args.command == "run":
            if args.runtime not in runtime_names():
                print(
                    f"pytest-containers: error: unknown runtime {args.runtime!r}; available: "
                    f"{', '.join(runtime_names())}",
                    file=sys.stderr,
                )
                return EXIT_ERROR
            sweep()
            return _run(args, Images(store, policy=args.pull))
    except CommandNotFoundError as exc:
        _error(exc)
        return EXIT_NOT_FOUND
    except ContainersError as exc:
        _error(exc)
        if getattr(exc, "errno", None) == errno.EACCES:
            return EXIT_NOT_EXECUTABLE
        return EXIT_ERROR
    except _Terminated:
        return EXIT_SIGTERM
    except KeyboardInterrupt:
        return 130
    return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
