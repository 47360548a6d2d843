#!/usr/bin/env python3
"""Image pull benchmark: cold pull and unpack from a local registry, and re-resolve.

1. Cold pull and unpack of a five-layer image (~100 MiB of files, gzip layers
   as umoci writes them) from a local ``docker-registry``, each run into fresh
   empty dirs:

   - ``ours``: ``pull(ref, Store(EMPTY))`` then ``store.snapshots(image)``, in
     this process (download, verify, fsync; then decompress, verify diffIDs,
     unpack every layer into its snapshot);
   - ``skopeo copy + umoci unpack``: ``skopeo copy --src-tls-verify=false
     docker://HOST/REPO:TAG oci:DIR:x`` then ``umoci unpack --image DIR:x
     BUNDLE``, two subprocesses timed together;
   - ``skopeo copy``: the copy alone, for reference.

   The tools take turns within each round (the order rotates), so they share
   the machine's load. Nothing is dropped from the page cache (the registry's
   blobs are served from memory after the first read); ``os.sync()`` runs
   after each run's cleanup, untimed, so no run pays for the writeback of
   another's dirty pages.

2. Re-resolve: ``pull(ref, store, policy="missing")`` of an image already in
   the store, ``--resolves`` times, with the registry stopped and a client
   whose httpx transport counts requests (asserted to stay at zero).

Prints Markdown tables (min, median, max in ms; our median divided by that of
``skopeo copy + umoci unpack``), each tool's phases, and the targets: cold pull
and unpack at most 0.5x ``skopeo copy + umoci unpack``; re-resolve under 5 ms
(median). ``--profile`` adds a cProfile breakdown of one more cold pull.
Everything is removed at the end: temp dirs (image layout, bundles with their
rootfs, stores), the registry process and its storage.

Usage: ``sudo python bench/pull.py [--runs 5] [--warmups 1] [--profile] [--dir DIR]``
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from pytest_containers.plugins.registry import REGISTRY_BINARY, RegistryServer

from pytest_containers.image.pull import pull
from pytest_containers.image.registry import RegistryClient
from pytest_containers.image.store import Store

MIB = 1 << 20
LAYERS = 5
SEED = 20240531
#: per layer: large random (incompressible) files, bytes
BIG_FILES = (6 * MIB, 4 * MIB, 3 * MIB)
#: per layer: small files (half random bytes, half text), spread over dirs
SMALL_FILES = 1200
SMALL_DIRS = 60
SMALL_MAX_BYTES = 12 * 1024
SYMLINKS = 100
REPOSITORY = "bench/pull"
TAG = "v1"
BASELINE = "skopeo copy + umoci unpack"
COLD_TARGET = 0.5
RESOLVE_TARGET_MS = 5.0


def run(*argv: str | Path) -> None:
    """Run ``argv``; exit with its stderr when it fails."""
    done = subprocess.run([str(a) for a in argv], stdin=subprocess.DEVNULL, capture_output=True)
    if done.returncode != 0:
        err = done.stderr.decode(errors="replace").strip()
        sys.exit(f"{argv[0]} exited {done.returncode}: {err[-500:]}")


def rmtree(path: Path) -> None:
    """Remove ``path`` (root can remove read-only dirs and device nodes)."""
    shutil.rmtree(path, ignore_errors=True)


# -- the image ---------------------------------------------------------------------


def fill_layer(rootfs: Path, index: int, rng: random.Random, vocabulary: list[str]) -> int:
    """Add layer ``index``'s files under ``rootfs/layerN`` (and delete a few of the
    previous layer's, so the layer carries whiteouts). Returns the bytes written."""
    top = rootfs / f"layer{index}"
    written = 0
    (top / "big").mkdir(parents=True)
    for n, size in enumerate(BIG_FILES):
        (top / "big" / f"blob{n}.bin").write_bytes(rng.randbytes(size))
        written += size
    dirs = []
    for d in range(SMALL_DIRS):
        path = top / "small" / f"d{d // 10:02d}" / f"e{d:03d}"
        path.mkdir(parents=True)
        dirs.append(path)
    for f in range(SMALL_FILES):
        size = rng.randrange(64, SMALL_MAX_BYTES)
        if f % 2:
            data = rng.randbytes(size)
        else:
            data = " ".join(rng.choices(vocabulary, k=size // 6 + 1)).encode()[:size]
        path = dirs[f % SMALL_DIRS] / f"f{f:05d}.{'bin' if f % 2 else 'txt'}"
        path.write_bytes(data)
        os.chmod(path, rng.choice((0o644, 0o600, 0o755)))
        written += size
    (top / "links").mkdir()
    for s in range(SYMLINKS):
        (top / "links" / f"l{s:03d}").symlink_to(f"../small/d00/e{s % 10:03d}")
    (top / "empty").mkdir()
    if index > 0:  # whiteouts of the layer below
        for victim in sorted((rootfs / f"layer{index - 1}" / "small" / "d00").rglob("*.txt"))[:20]:
            victim.unlink()
    return written


def build_layout(dest: Path, work: Path) -> tuple[int, int, int]:
    """umoci: a ``LAYERS``-layer image ``dest:bench``, one repack per layer.

    Returns (bytes of file content, files, bytes of the compressed layers)."""
    rng = random.Random(SEED)
    vocabulary = ["".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=rng.randrange(2, 10)))
                  for _ in range(5000)]  # fmt: skip
    image = f"{dest}:bench"
    run("umoci", "init", "--layout", dest)
    run("umoci", "new", "--image", image)
    bundle = work / "build-bundle"
    run("umoci", "unpack", "--image", image, bundle)
    content = 0
    for index in range(LAYERS):
        content += fill_layer(bundle / "rootfs", index, rng, vocabulary)
        run("umoci", "repack", "--refresh-bundle", "--image", image, bundle)
    run("umoci", "config", "--image", image, "--config.cmd", "sh")
    files = sum(len(f) for _, _, f in os.walk(bundle / "rootfs"))
    rmtree(bundle)
    index_doc = json.loads((dest / "index.json").read_text())
    manifest_digest = index_doc["manifests"][0]["digest"].split(":", 1)[1]
    manifest = json.loads((dest / "blobs" / "sha256" / manifest_digest).read_text())
    assert len(manifest["layers"]) == LAYERS, manifest["layers"]
    return content, files, sum(layer["size"] for layer in manifest["layers"])


# -- the contenders ----------------------------------------------------------------


class Counting(httpx.BaseTransport):
    """An httpx transport that counts the requests it is asked to send."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.requests = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


Phases = dict[str, float]


def ours(ref: str, target: Path) -> Phases:
    """Cold pull into an empty store at ``target``, then unpack every snapshot."""
    t0 = time.perf_counter()
    store = Store(target)
    image = pull(ref, store)
    t1 = time.perf_counter()
    snapshots = store.snapshots(image)
    t2 = time.perf_counter()
    assert len(snapshots) == LAYERS
    return {"pull()": t1 - t0, "snapshots()": t2 - t1}


def skopeo_copy(ref: str, target: Path) -> float:
    t0 = time.perf_counter()
    run("skopeo", "copy", "--src-tls-verify=false", f"docker://{ref}", f"oci:{target}/oci:x")
    return time.perf_counter() - t0


def skopeo_umoci(ref: str, target: Path) -> Phases:
    copy = skopeo_copy(ref, target)
    t0 = time.perf_counter()
    run("umoci", "unpack", "--image", f"{target}/oci:x", target / "bundle")
    return {"skopeo copy": copy, "umoci unpack": time.perf_counter() - t0}


def skopeo_only(ref: str, target: Path) -> Phases:
    return {"skopeo copy": skopeo_copy(ref, target)}


CONTENDERS: list[tuple[str, Callable[[str, Path], Phases], str]] = [
    ("ours: pull() + snapshots()", ours, "in-process; blobs fsynced, diffIDs verified"),
    (BASELINE, skopeo_umoci, "two subprocesses, timed together"),
    ("skopeo copy", skopeo_only, "reference: download only"),
]


def cold(ref: str, work: Path, runs: int, warmups: int) -> dict[str, list[Phases]]:
    """``warmups`` untimed rounds, then ``runs`` rounds; each contender once a round,
    in rotating order, each into fresh empty dirs (synced afterwards).

    The dirs are removed only at the end: on ext4, creating an inode soon after
    many were deleted makes the kernel skip each recently deleted one (its
    ``recently_deleted`` check reads the inode table), which would bill one
    contender for the files the one before it removed.
    """
    results: dict[str, list[Phases]] = {name: [] for name, _, _ in CONTENDERS}
    targets: list[Path] = []
    try:
        for round_ in range(warmups + runs):
            shift = round_ % len(CONTENDERS)
            for name, fn, _ in CONTENDERS[shift:] + CONTENDERS[:shift]:
                target = work / f"run-{round_}-{fn.__name__}"
                target.mkdir()
                targets.append(target)
                phases = fn(ref, target)
                os.sync()
                if round_ >= warmups:
                    results[name].append(phases)
    finally:
        for target in targets:
            rmtree(target)
    return results


def resolve(
    ref: str, store: Store, registry: RegistryServer, times: int
) -> tuple[list[float], int]:
    """Milliseconds of each ``pull(policy="missing")`` of an image already in ``store``,
    with the registry stopped; and the number of requests the client's transport saw."""
    transport = Counting()
    with RegistryClient(registry.host, transport=transport) as client:
        pull(ref, store, policy="always", client=client)  # the counter works...
        assert transport.requests > 0, "the counting transport saw no request"
        registry.stop()  # ...and from here on nothing answers anyway
        transport.requests = 0
        results = []
        for _ in range(times):
            t0 = time.perf_counter()
            pull(ref, store, policy="missing", client=client)
            results.append((time.perf_counter() - t0) * 1000)
    return results, transport.requests


def resolve_and_snapshots(ref: str, store: Store, times: int) -> list[float]:
    """Milliseconds of ``pull(policy="missing")`` + ``snapshots()``, all unpacked already."""
    results = []
    for _ in range(times):
        t0 = time.perf_counter()
        store.snapshots(pull(ref, store, policy="missing"))
        results.append((time.perf_counter() - t0) * 1000)
    return results


# -- profile -----------------------------------------------------------------------

_CATEGORIES: list[tuple[str, Callable[[str, str], bool]]] = [
    ("fsync", lambda f, fn: "posix.fsync" in fn),
    ("sha256", lambda f, fn: "_hashlib.HASH" in fn or "sha256" in fn),
    ("gzip decompress", lambda f, fn: "zlib.Decompress" in fn or f.endswith("gzip.py")),
    ("socket recv + HTTP parsing",
     lambda f, fn: "recv" in fn or any(p in f for p in ("httpx", "httpcore", "h11"))),
    ("file writes/reads", lambda f, fn: "_io." in fn),
    ("tar parsing", lambda f, fn: f.endswith("tarfile.py")),
    ("other syscalls (open, mkdir, chown, chmod, utime, rename, xattr, ...)",
     lambda f, fn: "posix." in fn or "built-in method" in fn),
    ("other Python (our layer applier, store, ...)", lambda f, fn: True),
]  # fmt: skip


def profile(ref: str, work: Path) -> str:
    """One cold pull + snapshots under cProfile; own time grouped by category."""
    target = work / "profile"
    profiler = cProfile.Profile()
    t0 = time.perf_counter()
    profiler.enable()
    try:
        phases = ours(ref, target)
    finally:
        profiler.disable()
        wall = time.perf_counter() - t0
        rmtree(target)
        os.sync()
    stats = pstats.Stats(profiler)
    totals: dict[str, float] = {name: 0.0 for name, _ in _CATEGORIES}
    top: list[tuple[float, str]] = []
    for (file, line, fn), (_, _, tottime, _, _) in stats.stats.items():  # type: ignore[attr-defined]
        for name, match in _CATEGORIES:
            if match(file, fn):
                totals[name] += tottime
                break
        top.append((tottime, f"{Path(file).name}:{line}({fn})" if file != "~" else fn))
    profiled = sum(totals.values())
    lines = [
        f"cProfile of one cold pull + snapshots: {wall:.2f} s wall under the profiler "
        f"(pull() {phases['pull()']:.2f} s, snapshots() {phases['snapshots()']:.2f} s)\n",
        "| where (own time) | s | share |",
        "|---|---:|---:|",
    ]
    for name, seconds in sorted(totals.items(), key=lambda kv: -kv[1]):
        lines.append(f"| {name} | {seconds:.2f} | {seconds / profiled:.0%} |")
    lines += ["", "Top functions by own time:", ""]
    lines += [f"- {seconds:.2f} s {where}" for seconds, where in sorted(top, reverse=True)[:12]]
    return "\n".join(lines)


# -- report ------------------------------------------------------------------------


def totals_ms(phases: list[Phases]) -> list[float]:
    return [sum(p.values()) * 1000 for p in phases]


def row(name: str, times: list[float], base: float | None, note: str) -> str:
    med = statistics.median(times)
    ratio = f"{med / base:.2f}" if base else "-"
    return f"| {name} | {min(times):.1f} | {med:.1f} | {max(times):.1f} | {ratio} | {note} |"


def report(cold_results: dict[str, list[Phases]], resolves: list[float],
           resolves_snap: list[float], requests: int) -> tuple[str, float, float]:  # fmt: skip
    base = statistics.median(totals_ms(cold_results[BASELINE]))
    header = [
        f"| what | min ms | median ms | max ms | median / {BASELINE} | notes |",
        "|---|---:|---:|---:|---:|---|",
    ]
    lines = ["Cold pull and unpack:", "", *header]
    for name, _, note in CONTENDERS:
        lines.append(row(name, totals_ms(cold_results[name]), base, note))
    lines += ["", "Phases (median ms):", ""]
    for name, _, _ in CONTENDERS:
        phases = cold_results[name]
        parts = [f"{k} {statistics.median(p[k] for p in phases) * 1000:.0f}" for k in phases[0]]
        lines.append(f"- {name}: " + ", ".join(parts))
    lines += [
        "",
        "Re-resolve of an image already in the store (registry stopped):",
        "",
        "| what | min ms | median ms | max ms | notes |",
        "|---|---:|---:|---:|---|",
    ]
    for name, times, note in (
        ('pull(ref, store, policy="missing")', resolves,
         f"{len(resolves)} calls; {requests} HTTP requests"),
        ("... + store.snapshots(image)", resolves_snap,
         f"{len(resolves_snap)} calls; all layers unpacked already"),
    ):  # fmt: skip
        lines.append(
            f"| {name} | {min(times):.3f} | {statistics.median(times):.3f} "
            f"| {max(times):.3f} | {note} |"
        )
    ours_med = statistics.median(totals_ms(cold_results[CONTENDERS[0][0]]))
    return "\n".join(lines), ours_med / base, statistics.median(resolves)


def _filesystem(path: Path) -> str:
    """``fstype`` of the mount holding ``path`` (``findmnt``), or ``?``."""
    done = subprocess.run(["findmnt", "-no", "FSTYPE,TARGET", "-T", str(path)],
                          capture_output=True, text=True)  # fmt: skip
    first = (done.stdout.splitlines() or ["?"])[0]
    return " on ".join(first.split())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--warmups", type=int, default=1)
    parser.add_argument("--resolves", type=int, default=200)
    parser.add_argument("--profile", action="store_true", help="cProfile one more cold pull")
    parser.add_argument(
        "--dir",
        type=Path,
        help="parent of the work dir (image layout, stores, bundles); default: $TMPDIR or /tmp",
    )
    parser.add_argument(
        "--fresh-ext4",
        metavar="GIB",
        type=int,
        help="put the work dir on a new ext4 of GIB GiB (a loop device, image file in --dir), "
        "made for this run and removed after it: no earlier deletes weigh on inode allocation",
    )
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error("needs root (our unpack and umoci unpack keep owners and make devices)")
    missing = [b for b in ("skopeo", "umoci") if shutil.which(b) is None]
    if missing or not Path(REGISTRY_BINARY).exists():
        parser.error(
            f"needs skopeo, umoci and {REGISTRY_BINARY}; missing: {missing or REGISTRY_BINARY}"
        )

    scratch = fresh_ext4(args.fresh_ext4, args.dir) if args.fresh_ext4 else None
    try:
        return bench(args, scratch.mountpoint if scratch else args.dir)
    finally:
        if scratch is not None:
            scratch.remove()


class FreshExt4:
    """A new ext4 on a loop device: ``mkfs.ext4`` on a sparse image file, mounted
    at ``mountpoint``; :meth:`remove` unmounts it and deletes both."""

    def __init__(self, image: Path, mountpoint: Path) -> None:
        self.image = image
        self.mountpoint = mountpoint

    def remove(self) -> None:
        subprocess.run(["umount", str(self.mountpoint)], check=False)
        self.mountpoint.rmdir()
        self.image.unlink()
        self.image.parent.rmdir()


def fresh_ext4(gib: int, parent: Path | None) -> FreshExt4:
    base = Path(tempfile.mkdtemp(prefix="ptc-bench-ext4-", dir=parent))
    image, mountpoint = base / "fs.img", base / "mnt"
    with open(image, "wb") as f:
        f.truncate(gib << 30)
    mountpoint.mkdir()
    scratch = FreshExt4(image, mountpoint)
    try:
        run("mkfs.ext4", "-q", "-F", image)
        run("mount", "-o", "loop", image, mountpoint)
    except BaseException:
        image.unlink()
        mountpoint.rmdir()
        base.rmdir()
        raise
    return scratch


def bench(args: argparse.Namespace, parent: Path | None) -> int:
    work = Path(tempfile.mkdtemp(prefix="ptc-bench-pull-", dir=parent))
    fs = _filesystem(work)
    registry = RegistryServer()
    try:
        t0 = time.perf_counter()
        content, files, compressed = build_layout(work / "layout", work)
        registry.start()
        ref = registry.push_oci(work / "layout", "bench", REPOSITORY, TAG)
        rmtree(work / "layout")
        print(
            f"Image {ref}: {LAYERS} gzip layers (umoci), {compressed / MIB:.1f} MiB compressed, "
            f"{content / MIB:.1f} MiB in {files} files (+ dirs, symlinks, whiteouts); "
            f"built and pushed in {time.perf_counter() - t0:.1f} s (not timed).",
            file=sys.stderr,
        )
        cold_results = cold(ref, work, args.runs, args.warmups)
        breakdown = profile(ref, work) if args.profile else ""
        store = Store(work / "resolve-store")
        store.snapshots(pull(ref, store))
        resolves, requests = resolve(ref, store, registry, args.resolves)
        resolves_snap = resolve_and_snapshots(ref, store, args.resolves)
    finally:
        registry.stop()
        rmtree(work)

    assert requests == 0, f"re-resolve made {requests} HTTP requests"
    text, cold_ratio, resolve_ms = report(cold_results, resolves, resolves_snap, requests)
    print(
        f"Pull from a local docker-registry (127.0.0.1, plain HTTP) of a {LAYERS}-layer image: "
        f"{compressed / MIB:.1f} MiB of gzip layers, {content / MIB:.1f} MiB in {files} files; "
        f"{args.runs} runs after {args.warmups} warm-up round(s); kernel {os.uname().release}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; targets in {fs}. "
        "Page cache not dropped.\n"
    )
    print(text)
    print()
    met = "met" if cold_ratio <= COLD_TARGET else "not met"
    print(f"- cold pull+unpack at most {COLD_TARGET}x {BASELINE}: {met} ({cold_ratio:.2f}x)")
    met = "met" if resolve_ms < RESOLVE_TARGET_MS else "not met"
    print(f"- re-resolve under {RESOLVE_TARGET_MS:.0f} ms: {met} (median {resolve_ms:.3f} ms, "
          f"{requests} HTTP requests)")  # fmt: skip
    if breakdown:
        print()
        print(breakdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
