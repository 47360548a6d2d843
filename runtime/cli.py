"""``ptc-runtime``: the native engine behind an OCI runtime command line.

This first version implements ``spec`` (write a default ``config.json``, like
``runc spec``) and ``run [--bundle DIR] ID`` (run a bundle in the foreground:
the container's stdout and stderr are relayed, the exit code is the
container's, 128+N for signal N). The bundle's rootfs is the read-only lower
layer of an overlay whose writes go to the state dir, so a bundle can be run
many times unchanged. ``create``/``start``/``state``/``kill``/``delete`` and
runc's global flags come with the native engine issue.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from .native.engine import NativeRuntime
from .spec import from_config, to_config
from .types import ContainerSpec


def _spec(args: argparse.Namespace) -> int:
    path = Path(args.bundle) / "config.json"
    if path.exists():
        print(f"ptc-runtime: error: {path} exists; remove it first", file=sys.stderr)
        return 1
    config = to_config(ContainerSpec(args=("sh",), layers=()), container_id="ptc-runtime")
    config.pop("annotations", None)
    config["linux"].pop("cgroupsPath", None)
    path.write_text(json.dumps(config, indent=2) + "\n")
    return 0


def _relay(src: Path, offset: int, dst: int) -> int:
    with open(src, "rb") as f:
        f.seek(offset)
        data = f.read()
    if data:
        os.write(dst, data)
    return offset + len(data)


#: container ids as runc accepts them
_ID = re.compile(r"^[\w+.-]+$")


def _run(args: argparse.Namespace) -> int:
    if not _ID.match(args.container_id) or args.container_id in (".", ".."):
        print(f"ptc-runtime: error: invalid container id {args.container_id!r}: use letters, "
              "digits and _ + . -", file=sys.stderr)
        return 1
    bundle = os.path.abspath(args.bundle)
    try:
        config = json.loads((Path(bundle) / "config.json").read_text())
        spec = from_config(config, bundle=bundle)
        for layer in spec.layers:
            if not layer.is_dir():
                raise ValueError(f"root.path {layer} is not a directory")
    except (OSError, ValueError) as exc:
        print(f"ptc-runtime: error: bundle {bundle}: {exc}", file=sys.stderr)
        return 1
    runtime = NativeRuntime(state_root=Path(args.root) if args.root else None)
    try:
        container = runtime.start(spec, container_id=args.container_id)
    except Exception as exc:  # every start failure is reported the same way
        print(f"ptc-runtime: error: {exc}", file=sys.stderr)
        return 1
    out = err = 0
    try:
        while (status := container.poll()) is None:
            out = _relay(container.stdout_path, out, 1)
            err = _relay(container.stderr_path, err, 2)
            time.sleep(0.02)
        _relay(container.stdout_path, out, 1)
        _relay(container.stderr_path, err, 2)
        return status.exit_code
    finally:
        container.delete()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``ptc-runtime``; returns the exit code."""
    parser = argparse.ArgumentParser(prog="ptc-runtime", description=__doc__.split("\n")[0])
    parser.add_argument("--root", default=None, help="state root (default /run/ptc)")
    sub = parser.add_subparsers(dest="command", required=True)
    spec = sub.add_parser("spec", help="write a default config.json into the bundle")
    spec.add_argument("--bundle", "-b", default=".")
    run = sub.add_parser("run", help="run a bundle in the foreground")
    run.add_argument("--bundle", "-b", default=".")
    run.add_argument("container_id", metavar="ID")
    args = parser.parse_args(argv)
    return _spec(args) if args.command == "spec" else _run(args)


if __name__ == "__main__":
    sys.exit(main())
