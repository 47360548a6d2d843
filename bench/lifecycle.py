#!/usr/bin/env python3
"""Container lifecycle benchmark: create, start, wait and delete ``true`` in busybox.

Backends, each timed over ``--runs`` runs after ``--warmups`` warm-ups:

- ``native``: ``NativeRuntime().start(spec).wait(); .delete()`` in this process;
- ``runc run``: ``runc --root TMP run --bundle B ID`` of a prepared bundle (its
  overlay rootfs mounted once beforehand, not timed), as a subprocess;
- ``crun run``: the same with crun; on a hybrid cgroup host with a controller on
  cgroup2 (which crun 1.8.1 refuses) the loop runs in a private mount namespace
  with the cgroup2 mount unmounted (set up once, not timed);
- ``ptc-runtime run``: ``ptc-runtime --root TMP run --bundle B ID`` of the same
  bundle, as a subprocess (our engine behind the runc-compatible command line: a
  Python interpreter starts for every run);
- ``podman run``: ``podman --runtime runc run --rm --network none IMAGE true``; the
  image is pulled from an OCI layout beforehand (not timed);
- ``OciCliRuntime(runc)``: our runc backend in this process (overlay mount,
  bundle, create under the waiting process, start, wait, delete).

Every container gets a fresh network namespace with only ``lo`` (the default
of every backend here). The backends take turns: each round runs every backend
once, in an order that rotates from round to round, so that they share the
machine's load. Prints a Markdown table: min, median, max in ms and each
median's ratio to ``runc run``'s; a backend that cannot run here is listed with
the reason. Everything it made is removed at the end (bundles, mounts, ptc
state, cgroup dirs it created, the podman image it added).

Usage: ``sudo python bench/lifecycle.py [--runs 20] [--warmups 2]``
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from pytest_containers.runtime import ContainerSpec
from pytest_containers.runtime.linux import mounts
from pytest_containers.runtime.spec import to_config

PODMAN_ULIMITS = ("--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096")


class Unavailable(Exception):
    """The backend cannot run here; the message says why."""


def build_rootfs(dest: Path) -> Path:
    """``dest`` with ``bin/busybox``, its applet symlinks, ``etc/passwd``, ``tmp/`` and
    the mount points ``proc/``, ``sys/``, ``dev/`` that distribution images have (as
    the tests' busybox rootfs: without them every native container makes them in its
    own upper dir, and removes them)."""
    (dest / "bin").mkdir(parents=True)
    shutil.copy2("/bin/busybox", dest / "bin" / "busybox")
    out = subprocess.run(["/bin/busybox", "--list"], capture_output=True, text=True, check=True)
    for applet in out.stdout.split():
        if not (dest / "bin" / applet).exists():
            (dest / "bin" / applet).symlink_to("busybox")
    (dest / "etc").mkdir()
    (dest / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (dest / "tmp").mkdir(mode=0o1777)
    for name in ("proc", "sys", "dev"):
        (dest / name).mkdir(mode=0o755)
    return dest


def new_id() -> str:
    return f"ptc-bench-{uuid.uuid4().hex[:10]}"


def time_runs(run: Callable[[], None], runs: int, warmups: int) -> list[float]:
    """Milliseconds of each of ``runs`` calls of ``run`` after ``warmups`` untimed ones."""
    for _ in range(warmups):
        run()
    return [timed(run)() for _ in range(runs)]


def timed(run: Callable[[], None]) -> Callable[[], float]:
    """``run`` returning how long it took, in milliseconds."""
    def once() -> float:
        t0 = time.perf_counter()
        run()
        return (time.perf_counter() - t0) * 1000

    return once


#: a backend ready to run: ``run()`` makes one container and returns its milliseconds
Runner = tuple[Callable[[], float], str]


def check(done: subprocess.CompletedProcess, what: str) -> None:
    if done.returncode != 0:
        err = (done.stderr or b"").decode(errors="replace").strip()
        raise Unavailable(f"{what} exited {done.returncode}: {err[-300:]}")


class Bench:
    """Shared setup (rootfs, bundle) and the list of things to remove at the end."""

    def __init__(self, work: Path, runs: int, warmups: int) -> None:
        self.work = work
        self.runs = runs
        self.warmups = warmups
        self.rootfs = build_rootfs(work / "busybox")
        self.spec = ContainerSpec(args=("true",), layers=(self.rootfs,))
        self.mounted: list[Path] = []
        self.cleanups: list[Callable[[], None]] = []
        self.bundle = self._bundle()

    def _bundle(self) -> Path:
        """A prepared OCI bundle: config.json and an overlay rootfs (mounted now)."""
        bundle = self.work / "bundle"
        for name in ("rootfs", "upper", "work"):
            (bundle / name).mkdir(parents=True)
        config = to_config(self.spec, container_id="ptc-bench-bundle", rootfs="rootfs")
        (bundle / "config.json").write_text(json.dumps(config))
        mounts.mount_overlay(bundle / "rootfs", [self.rootfs], bundle / "upper", bundle / "work")
        self.mounted.append(bundle / "rootfs")
        return bundle

    # -- backends ----------------------------------------------------------------------

    def native(self) -> Runner:
        try:
            from pytest_containers.runtime.native.engine import NativeRuntime
        except ImportError as exc:
            raise Unavailable(f"native engine not importable: {exc}") from None
        runtime = NativeRuntime(state_root=self.work / "native")

        def run() -> None:
            container = runtime.start(self.spec, container_id=new_id())
            try:
                status = container.wait(timeout=30)
            finally:
                container.delete()
            if status.exit_code != 0:
                raise Unavailable(f"native: true exited {status.exit_code}")

        return timed(run), "in-process"

    def oci_run(self, binary: str) -> Runner:
        if shutil.which(binary) is None:
            raise Unavailable(f"{binary} not on PATH")
        root = self.work / f"{binary}-root"
        argv = [binary, "--root", str(root), "run", "--bundle", str(self.bundle), "ptc-bench-run"]
        if binary == "crun":
            from pytest_containers.plugins.runc import crun_problem

            if crun_problem():
                return self._crun_private_ns(argv)

        def run() -> None:
            check(subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True), binary)

        return timed(run), "subprocess, prepared bundle"

    def ptc_runtime(self) -> Runner:
        """``ptc-runtime run`` of the prepared bundle: the console script installed next
        to this interpreter (not a pyenv shim, whose bash costs ~100 ms more)."""
        beside = Path(sys.executable).parent / "ptc-runtime"
        binary = str(beside) if beside.exists() else shutil.which("ptc-runtime")
        if binary is None:
            raise Unavailable("ptc-runtime not installed (pip install -e .)")
        root = self.work / "ptc-runtime-root"
        argv = [binary, "--root", str(root), "run", "--bundle", str(self.bundle),
                "ptc-bench-ptcrt"]
        # byte-compiled first, as an installed package is: with PYTHONDONTWRITEBYTECODE
        # set (as in some CI images) every run would compile the sources, ~150 ms here
        import pytest_containers.runtime

        for package in (pytest_containers, pytest_containers.runtime):
            subprocess.run([sys.executable, "-m", "compileall", "-q",
                            str(Path(package.__file__).parent)], capture_output=True, check=True)

        def run() -> None:
            check(subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True),
                  "ptc-runtime")

        startup = time_runs(lambda: check(subprocess.run([binary, "--version"],
                                                         capture_output=True), "ptc-runtime"),
                            max(5, self.runs // 2), 1)
        return timed(run), (
            f"subprocess, prepared bundle; of which `ptc-runtime --version` (interpreter and "
            f"imports) {statistics.median(startup):.0f} ms")

    def _crun_private_ns(self, argv: list[str]) -> Runner:
        """Run ``argv`` inside ``unshare -m --propagation private`` with the cgroup2 mount
        unmounted there (the host's mounts are untouched): a process there runs and
        times it once per request (:func:`inner`)."""
        from pytest_containers.plugins.runc import _hybrid_v2_controllers

        unified, _ = _hybrid_v2_controllers() or (Path("/sys/fs/cgroup/unified"), [])
        inner_argv = [
            "unshare", "-m", "--propagation", "private", "--",
            sys.executable, __file__, "--inner", json.dumps({"argv": argv, "umount": str(unified)}),
        ]  # fmt: skip
        server = subprocess.Popen(inner_argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)

        def stop() -> None:
            if server.poll() is None:
                assert server.stdin is not None
                server.stdin.close()
                server.wait(30)
            for stream in (server.stdout, server.stderr):
                if stream is not None:
                    stream.close()

        self.cleanups.append(stop)

        def run() -> float:
            assert server.stdin is not None and server.stdout is not None
            try:
                server.stdin.write("run\n")
                server.stdin.flush()
            except BrokenPipeError:
                pass
            line = server.stdout.readline().strip()
            if not line or line.startswith("error"):
                stop()
                err = (server.stderr.read() if server.stderr else "") or line
                raise Unavailable(f"crun in a private mount namespace failed: {err[-300:]}")
            return float(line)

        return run, (
            f"subprocess, prepared bundle; in a private mount namespace without {unified} "
            "(crun refuses hybrid cgroups with a controller on cgroup2; namespace set up "
            "once, not timed)"
        )

    def podman(self) -> Runner:
        if shutil.which("podman") is None:
            raise Unavailable("podman not on PATH")
        try:
            from pytest_containers.plugins.oracle_images import build_busybox_layout

            layout = build_busybox_layout(self.work / "layout")
        except Exception as exc:  # noqa: BLE001 - reported as the reason
            raise Unavailable(f"cannot build the OCI layout (umoci): {exc}") from None
        before = set(_podman_images())
        done = subprocess.run(["podman", "pull", "-q", f"oci:{layout}:latest"], capture_output=True)
        check(done, "podman pull")
        image = done.stdout.decode().split()[-1]
        if image not in before:
            def remove_image() -> None:
                subprocess.run(["podman", "rmi", "-f", image], capture_output=True)

            self.cleanups.append(remove_image)
        # this host lacks CAP_SYS_RESOURCE: podman's raised default rlimits fail, so
        # ask for limits at or below the current ones
        argv = ["podman", "--runtime", "runc", "run", "--rm", "--network", "none",
                *PODMAN_ULIMITS, image, "true"]  # fmt: skip

        def run() -> None:
            check(subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True), "podman")

        return timed(run), (
            "podman --runtime runc run --rm --network none; " + " ".join(PODMAN_ULIMITS)
        )

    def ocicli(self) -> Runner:
        from pytest_containers.runtime.ocicli import OciCliRuntime

        runtime = OciCliRuntime("runc", state_root=self.work / "ptc")
        self.cleanups.append(runtime.close)

        def run() -> None:
            container = runtime.start(self.spec, container_id=new_id())
            try:
                status = container.wait(timeout=30)
            finally:
                container.delete()
            if status.exit_code != 0:
                raise Unavailable(f"OciCliRuntime: true exited {status.exit_code}")

        return timed(run), "in-process; create/start + waiter"

    def close(self) -> None:
        for cleanup in reversed(self.cleanups):
            try:
                cleanup()
            except Exception as exc:  # noqa: BLE001 - report and go on cleaning
                print(f"cleanup failed: {exc}", file=sys.stderr)
        for path in self.mounted:
            mounts.unmount(path)


def _podman_images() -> list[str]:
    done = subprocess.run(["podman", "images", "-q", "--no-trunc"], capture_output=True, text=True)
    return [line.split(":")[-1] for line in done.stdout.split()]


def _cgroup_dirs(names: tuple[str, ...]) -> set[Path]:
    root = Path("/sys/fs/cgroup")
    return {p for name in names for p in (*root.glob(name), *root.glob(f"*/{name}"))}


def _remove_cgroups(before: set[Path]) -> None:
    """Remove the cgroup dirs this run made: leaves ``ptc/ptc-bench-*`` (other ptc
    containers may be running), ``ptc`` when empty and new, and ``libpod_parent``
    with its children when it did not exist before. Deepest first."""
    doomed = list(_cgroup_dirs(("ptc/ptc-bench-*",)))
    for top in _cgroup_dirs(("ptc", "libpod_parent")) - before:
        if top.name == "libpod_parent":
            doomed += sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
        doomed.append(top)
    for path in doomed:
        try:
            os.rmdir(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            if path.name != "ptc" or exc.errno not in (errno.EBUSY, errno.ENOTEMPTY):
                print(f"left behind: {path}: {exc.strerror}", file=sys.stderr)


def inner(params: str) -> None:
    """``--inner``: in the private mount namespace, unmount cgroup2, then for each line
    ``run`` on stdin run argv once and print its milliseconds (``error ...`` when it
    failed); until EOF."""
    p = json.loads(params)
    subprocess.run(["umount", p["umount"]], check=True)
    argv = p["argv"]
    for _line in sys.stdin:
        t0 = time.perf_counter()
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True)
        elapsed = (time.perf_counter() - t0) * 1000
        if done.returncode != 0:
            print(f"error: {argv[0]} exited {done.returncode}: "
                  f"{done.stderr.decode(errors='replace')[-300:]}".replace("\n", " "), flush=True)
            return
        print(f"{elapsed:f}", flush=True)


def take_turns(ready: list[tuple[str, Runner]], runs: int, warmups: int
               ) -> tuple[dict[str, list[float]], dict[str, str]]:
    """Run every backend of ``ready`` ``warmups`` times (untimed), then ``runs`` rounds
    in which each runs once, the order rotating by one from round to round. Returns
    the milliseconds by name, and the error of each backend that failed on the way
    (dropped from the rounds after it)."""
    failed: dict[str, str] = {}
    times: dict[str, list[float]] = {name: [] for name, _ in ready}

    def attempt(name: str, run: Callable[[], float]) -> float | None:
        try:
            return run()
        except Unavailable as exc:
            failed[name] = str(exc)
        except Exception as exc:  # noqa: BLE001 - a backend failing is a result
            failed[name] = f"{type(exc).__name__}: {exc}"
        return None

    for name, (run, _) in ready:
        for _ in range(warmups):
            if name not in failed:
                attempt(name, run)
    for i in range(runs):
        k = i % len(ready) if ready else 0
        for name, (run, _) in ready[k:] + ready[:k]:
            if name not in failed and (ms := attempt(name, run)) is not None:
                times[name].append(ms)
    return times, failed


def table(results: list[tuple[str, list[float] | None, str]]) -> str:
    base = next((statistics.median(t) for n, t, _ in results if n == "runc run" and t), None)
    lines = [
        "| backend | min ms | median ms | max ms | median / runc run | notes |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for name, times, note in results:
        if not times:
            lines.append(f"| {name} | - | - | - | - | not run: {note} |")
            continue
        med = statistics.median(times)
        ratio = f"{med / base:.2f}" if base else "-"
        lines.append(
            f"| {name} | {min(times):.1f} | {med:.1f} | {max(times):.1f} | {ratio} | {note} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--warmups", type=int, default=2)
    parser.add_argument("--inner", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.inner:
        inner(args.inner)
        return 0
    if os.geteuid() != 0:
        parser.error("needs root (namespaces, cgroups, overlay mounts)")

    cgroups_before = _cgroup_dirs(("ptc", "libpod_parent"))
    work = Path(tempfile.mkdtemp(prefix="ptc-bench-"))
    bench = Bench(work, args.runs, args.warmups)
    backends: list[tuple[str, Callable[[], Runner]]] = [
        ("native", bench.native),
        ("runc run", lambda: bench.oci_run("runc")),
        ("crun run", lambda: bench.oci_run("crun")),
        ("ptc-runtime run", bench.ptc_runtime),
        ("podman run", bench.podman),
        ("OciCliRuntime(runc)", bench.ocicli),
    ]
    results: list[tuple[str, list[float] | None, str]] = []
    try:
        ready: list[tuple[str, Runner]] = []
        reasons: dict[str, str] = {}
        for name, fn in backends:
            try:
                ready.append((name, fn()))
            except Unavailable as exc:
                reasons[name] = str(exc)
            except Exception as exc:  # noqa: BLE001 - a backend failing is a result
                reasons[name] = f"{type(exc).__name__}: {exc}"
        times, failed = take_turns(ready, args.runs, args.warmups)
        notes = {name: note for name, (_, note) in ready}
        for name, _ in backends:
            if name in reasons or name in failed:
                results.append((name, None, reasons.get(name) or failed[name]))
            else:
                results.append((name, times[name], notes[name]))
    finally:
        bench.close()
        shutil.rmtree(work, ignore_errors=True)
        _remove_cgroups(cgroups_before)

    print(f"Lifecycle of `true` in busybox: create, start, wait, delete; "
          f"{args.runs} rounds (backends take turns) after {args.warmups} warm-ups; "
          f"kernel {os.uname().release}, {os.cpu_count()} CPUs.\n")  # fmt: skip
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
