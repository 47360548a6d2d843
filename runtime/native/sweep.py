"""Moved to :mod:`pytest_containers.runtime.sweep` (it sweeps every backend's
containers now); this name stays for older imports and references."""

from __future__ import annotations

from ..sweep import owner_alive, sweep

__all__ = ["owner_alive", "sweep"]
