"""Oracle images built by an independent tool (umoci), for cross-checking our image code.

:func:`build_busybox_layout` makes a one-layer OCI image layout from the
host's static ``/bin/busybox`` in about a second, with no network.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

BUSYBOX = Path("/bin/busybox")
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _run(*argv: str) -> str:
    """Run ``argv``; raise ``subprocess.CalledProcessError`` with its stderr on failure."""
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise subprocess.CalledProcessError(done.returncode, argv, done.stdout, done.stderr)
    return done.stdout


def build_busybox_layout(
    dest: Path,
    *,
    ref_name: str = "latest",
    architecture: str | None = None,
    busybox: Path = BUSYBOX,
) -> Path:
    """Build (or add to) the OCI image layout ``dest`` with a busybox image named ``ref_name``.

    Rootfs: ``/bin/busybox`` plus an absolute symlink ``/bin/<applet>`` ->
    ``/bin/busybox`` for each applet of ``busybox --list``, ``/etc/passwd``
    with root, ``/tmp`` (mode 1777). Config: ``Cmd ["sh"]``, ``Env
    PATH=...``; ``architecture`` (Go name, e.g. ``arm64``) overrides the
    config's, default umoci's (the host's). Returns ``dest``. Needs ``umoci``
    on ``PATH``; raises ``subprocess.CalledProcessError`` when it fails.
    """
    dest = Path(dest)
    image = f"{dest}:{ref_name}"
    if not (dest / "index.json").exists():
        _run("umoci", "init", "--layout", str(dest))
    _run("umoci", "new", "--image", image)
    with tempfile.TemporaryDirectory(prefix="ptc-umoci-") as work:
        bundle = Path(work) / "bundle"
        _run("umoci", "unpack", "--rootless", "--image", image, str(bundle))
        rootfs = bundle / "rootfs"
        for directory in ("bin", "etc", "root", "tmp"):
            (rootfs / directory).mkdir(exist_ok=True)
        os.chmod(rootfs / "tmp", 0o1777)
        shutil.copy2(busybox, rootfs / "bin" / "busybox")
        os.chmod(rootfs / "bin" / "busybox", 0o755)
        for applet in _run(str(busybox), "--list").split():
            if applet != "busybox" and "/" not in applet:
                (rootfs / "bin" / applet).symlink_to("/bin/busybox")
        (rootfs / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
        (rootfs / "etc" / "group").write_text("root:x:0:\n")
        _run("umoci", "repack", "--image", image, str(bundle))
    config = ["umoci", "config", "--image", image, "--config.cmd", "sh"]
    config += ["--config.env", f"PATH={DEFAULT_PATH}"]
    if architecture:
        config += ["--architecture", architecture]
    _run(*config)
    return dest
