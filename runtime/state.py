"""Where a container's host state lives.

Every backend keeps one directory per container, ``<state_root>/<id>``, with
an ``owner`` file naming the pid of the process that started it: anything
under the state root whose owner is dead is garbage (:mod:`.sweep`).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["default_state_root"]


def default_state_root() -> Path:
    """``/run/ptc`` for root, else ``$XDG_RUNTIME_DIR/ptc`` (``/tmp/ptc-<uid>`` without it)."""
    if os.geteuid() == 0:
        return Path("/run/ptc")
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    return Path(xdg) / "ptc" if xdg else Path(f"/tmp/ptc-{os.getuid()}")
