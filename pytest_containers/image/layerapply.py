"""Apply the entries of one layer tar to its snapshot directory, over its parents.

The path side of :func:`pytest_containers.image.unpack.unpack_layer`: the
snapshot ``root`` receives only this layer's changes, in the overlayfs
form (kernel ``Documentation/filesystems/overlayfs.rst``), while every name
is resolved in the *merged* view of ``root`` over ``parents`` (the lower
snapshots, nearest first), as ``umoci unpack`` resolves in its one rootfs.
Lookups follow overlay rules: a whiteout (0/0 character device) ends the
search, a non-directory above a directory hides it, an opaque directory
hides the layers below it. Lower snapshots are only read (``lstat``,
``readlink``, ``getxattr``, reading a file to copy it up), always through
components already known to be real directories in that snapshot.

Resolved directories are cached per layer (:attr:`LayerApplier.dirs`): the
state after each clean directory name (real components, the snapshots it is
visible in, the symlinks followed so far), reused while nothing this layer
does can change it. The cache is dropped when a directory of this snapshot
is removed or made opaque, and when anything is created or removed at a name
a cached resolution followed as a symlink; every cached directory is a real
directory of this snapshot, so other changes cannot reach it.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import tarfile
import warnings
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from typing import Literal

from pytest_containers.exceptions import ImageError, UnsafeLayerError
from pytest_containers.image.tarstream import TarStream

__all__ = ["LayerApplier", "clean_name", "device_skippable"]

_MAX_SYMLINKS = 255
_CHUNK = 1 << 20
_WH_PREFIX = ".wh."
_WH_META_PREFIX = ".wh..wh."
_WH_OPAQUE = ".wh..wh..opq"
_OPAQUE_XATTR = "trusted.overlay.opaque"
_XATTR_PREFIX = "SCHILY.xattr."

_Mode = Literal["create", "existing", "lookup"]
_Hit = tuple[str, os.stat_result]  # (snapshot root holding the name, its lstat)
# a resolved directory: (real components, visible of each ancestor, visible, symlinks followed)
_State = tuple[list[str], list[list[str]], list[str], int]


def clean_name(name: str) -> str:
    """``name`` as a clean relative path ('' is the root); ``..`` is clamped at the root."""
    parts: list[str] = []
    for part in name.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts:
                parts.pop()
        else:
            parts.append(part)
    return "/".join(parts)


def device_skippable(exc: OSError) -> bool:
    """Whether a failed ``mknod`` of a device entry is skipped (with a warning)
    rather than failing the layer: only for lack of privilege (EPERM, EACCES),
    as in a user namespace or without CAP_MKNOD."""
    return exc.errno in (errno.EPERM, errno.EACCES)


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _lstat(path: str) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None


def _opaque(path: str) -> bool:
    try:
        return os.getxattr(path, _OPAQUE_XATTR, follow_symlinks=False) == b"y"
    except OSError:
        return False


def _mtime_ns(member: tarfile.TarInfo, key: str = "mtime") -> int:
    """Exact nanoseconds from the PAX header if present, else the ustar seconds."""
    text = member.pax_headers.get(key)
    if text is not None:
        try:
            return int(Decimal(text) * 1_000_000_000)
        except InvalidOperation:
            pass
    return int(member.mtime) * 1_000_000_000


def _xattr_allowed(name: str, member: tarfile.TarInfo) -> bool:
    if name.startswith("user.") or name == "system.posix_acl_access":
        return member.isreg() or member.isdir()
    if name == "system.posix_acl_default":
        return member.isdir()
    return name == "security.capability" and member.isreg()


class LayerApplier:
    """Writes the members of one tar stream below ``root``, over ``parents``.

    ``parents``: the lower snapshots, base first (read only). ``label`` and
    ``digest`` name the layer in errors.
    """

    def __init__(self, root: str, label: str, digest: str | None, parents: Sequence[str]) -> None:
        self.root = root
        self.layers = [root, *(os.path.abspath(p) for p in reversed(parents))]  # nearest first
        self.label = label
        self.digest = digest
        self.dir_mtimes: dict[str, tuple[int, int]] = {}
        self.written: set[str] = set()  # paths made by this layer's own entries
        self.dirs: dict[str, _State] = {}  # clean directory name -> resolved, real in root
        self.followed: set[str] = set()  # paths in root of names followed as symlinks
        self.generation = 0  # bumped by each invalidate()

    def invalidate(self) -> None:
        """Forget every cached resolution (the merged view changed under them)."""
        self.dirs.clear()
        self.followed.clear()
        self.generation += 1

    def join(self, layer: str, parts: list[str], name: str | None = None) -> str:
        """``os.path.join(layer, *parts, name)``, for components without slashes."""
        path = "/".join([layer, *parts]) if parts else layer
        return path if name is None else f"{path}/{name}"

    def run(self, archive: TarStream) -> None:
        for member in archive:
            try:
                self.entry(archive, member)
            except OSError as exc:
                exc.add_note(f"layer {self.label}: entry {member.name!r}")
                raise
        for path in sorted(self.dir_mtimes, key=lambda p: p.count("/"), reverse=True):
            st = _lstat(path)
            if st is not None and stat.S_ISDIR(st.st_mode):
                os.utime(path, ns=self.dir_mtimes[path], follow_symlinks=False)

    def unsafe(self, entry: str, why: str, kind: type[ImageError] = UnsafeLayerError) -> ImageError:
        return kind(f"layer {self.label}: entry {entry!r} {why}", digest=self.digest, path=entry)

    def bad(self, entry: str, why: str) -> ImageError:
        return self.unsafe(entry, why, ImageError)

    # -- the merged view -------------------------------------------------------

    def lookup(
        self, visible: list[str], parts: list[str], name: str
    ) -> tuple[_Hit | None, list[str]]:
        """Overlay lookup of ``name`` in directory ``parts``, which is a real
        directory in each of ``visible`` (nearest first) and hidden below them.

        Returns ``(hit, [])`` for a non-directory (the topmost), ``(None,
        dirs)`` for a directory visible in ``dirs`` (nearest first), and
        ``(None, [])`` if missing or whited out.
        """
        dirs: list[str] = []
        sub = "/".join(parts)
        for layer in visible:
            path = f"{layer}/{sub}/{name}" if sub else f"{layer}/{name}"
            st = _lstat(path)
            if st is None:
                continue
            if _is_whiteout(st):
                break
            if stat.S_ISDIR(st.st_mode):
                dirs.append(layer)
                if _opaque(path):
                    break
                continue
            if dirs:
                break  # a non-directory below a directory is hidden
            return (layer, st), []
        return None, dirs

    def resolve(self, rel: str, entry: str, mode: _Mode) -> tuple[list[str], list[str]] | None:
        """Resolve directory ``rel`` in the merged view, symlinks followed inside the root.

        Returns ``(parts, visible)``: real-directory components below the
        root and the snapshots where that directory is visible. With
        ``create`` and ``existing``, each component is made a directory of
        this snapshot (a lower one's copied with its metadata); ``create``
        also makes missing ones (0755; over a whiteout of this layer: opaque)
        and raises ImageError for a non-directory, the others return None.
        """
        cached = self.dirs.get(rel)
        if cached is not None:
            return cached[0], cached[2]
        names = rel.split("/") if rel else []
        clean = "" not in names and "." not in names and ".." not in names
        done = 0  # names of rel resolved so far
        if clean:
            for done in range(len(names) - 1, 0, -1):
                cached = self.dirs.get("/".join(names[:done]))
                if cached is not None:
                    break
            else:
                done = 0
        if cached is not None:
            parts, stack, visible, links = list(cached[0]), list(cached[1]), cached[2], cached[3]
        else:
            parts, stack, visible, links = [], [], self.layers, 0
        todo = names[done:]
        todo.reverse()
        pending = len(todo)  # names of rel still in todo
        store = clean and mode != "lookup"
        generation = self.generation
        while todo:
            part = todo.pop()
            if len(todo) < pending:
                pending = len(todo)
            if part in ("", "."):
                pass
            elif part == "..":
                if parts:
                    parts.pop()
                    visible = stack.pop()
            else:
                hit, dirs = self.lookup(visible, parts, part)
                if hit is not None and stat.S_ISLNK(hit[1].st_mode):
                    links += 1
                    if links > _MAX_SYMLINKS:
                        raise self.unsafe(entry, "resolves through too many symlinks")
                    self.followed.add(self.join(self.root, parts, part))
                    target = os.readlink(self.join(hit[0], parts, part))
                    if target.startswith("/"):
                        parts, stack, visible = [], [], self.layers
                    todo.extend(reversed(target.split("/")))
                    continue
                if hit is not None:
                    if mode == "create":
                        where = os.path.join(*parts, part)
                        raise self.bad(entry, f"has a parent that is not a directory: {where!r}")
                    return None
                if not dirs:
                    if mode != "create":
                        return None
                    path = self.join(self.root, parts, part)
                    self.make_dir(path, _lstat(path))
                    dirs = [self.root]
                elif dirs[0] != self.root and mode != "lookup":
                    self.materialize(parts, part, dirs[0])
                    dirs = [self.root, *dirs]
                stack.append(visible)
                parts.append(part)
                visible = dirs
            if store and len(todo) == pending and self.generation == generation:
                # names[: len(names) - pending] resolved, and nothing invalidated since
                key = "/".join(names[: len(names) - pending])
                self.dirs[key] = (list(parts), list(stack), visible, links)
        return parts, visible

    def resolve_dir(self, rel: str, entry: str) -> str:
        """Absolute path in this snapshot of directory ``rel``, made if missing."""
        found = self.resolve(rel, entry, "create")
        assert found is not None
        return self.join(self.root, found[0])

    def materialize(self, parts: list[str], name: str, lower: str) -> None:
        """Make lower directory ``parts/name`` of ``lower`` a directory of this
        snapshot with the same owner, mode and times (containerd ``mkparent``),
        so the overlay keeps showing the lower metadata."""
        path = self.join(self.root, parts, name)
        st = os.lstat(self.join(lower, parts, name))
        old = _lstat(path)
        if old is not None:
            self.remove(path, old)
        os.mkdir(path, 0o700)
        os.chown(path, st.st_uid, st.st_gid, follow_symlinks=False)
        os.chmod(path, stat.S_IMODE(st.st_mode))
        self.dir_mtimes[path] = (st.st_atime_ns, st.st_mtime_ns)

    def make_dir(self, path: str, st: os.stat_result | None, chmod: bool = True) -> None:
        """mkdir ``path`` (mode 0755, or as ``metadata`` sets it next if not
        ``chmod``) in place of ``st``; opaque if that was a whiteout."""
        if st is not None:
            self.remove(path, st)
        os.mkdir(path, 0o755)
        if chmod:
            os.chmod(path, 0o755)  # not subject to the umask
        if st is not None and _is_whiteout(st):
            self.invalidate()
            os.setxattr(path, _OPAQUE_XATTR, b"y", follow_symlinks=False)

    def remove(self, path: str, st: os.stat_result) -> None:
        """Remove ``path`` (no symlink below the root), forgetting its directory mtimes."""
        self.written.discard(path)
        if not stat.S_ISDIR(st.st_mode):
            if path in self.followed:
                self.invalidate()
            os.unlink(path)
            return
        self.invalidate()
        shutil.rmtree(path)
        below = path + "/"
        for gone in [p for p in self.dir_mtimes if p.startswith(below)]:
            del self.dir_mtimes[gone]  # else the path could later lead through a symlink
        self.dir_mtimes.pop(path, None)
        self.written.difference_update([p for p in self.written if p.startswith(below)])

    # -- entries ----------------------------------------------------------------

    def entry(self, archive: TarStream, member: tarfile.TarInfo) -> None:
        name = clean_name(member.name)
        parent, _, base = name.rpartition("/")
        if not name:
            if not member.isdir():
                raise self.unsafe(member.name, "would replace the root directory")
            self.metadata(self.root, member)
            return
        if base == _WH_OPAQUE:
            self.opaque(member.name, parent)
            return
        if base.startswith(_WH_META_PREFIX):
            return  # reserved (AUFS hardlink bookkeeping and the like)
        if base.startswith(_WH_PREFIX):
            self.whiteout(member.name, parent, base[len(_WH_PREFIX) :])
            return
        target = self.link_target(member) if member.islnk() else None
        path = f"{self.resolve_dir(parent, member.name)}/{base}"
        st = _lstat(path)
        if path in self.followed:
            self.invalidate()  # replaced (or hidden in the lower layer) below
        if member.isdir():
            if st is None or not stat.S_ISDIR(st.st_mode):
                self.make_dir(path, st, chmod=False)
            self.written.add(path)
            self.metadata(path, member)
            return
        if target == path:
            return  # a hardlink to itself
        if st is not None:
            self.remove(path, st)
        if member.isreg():
            self.write_file(archive, member, path)
            self.written.add(path)
            return
        elif member.islnk():
            os.link(target, path, follow_symlinks=False)  # type: ignore[arg-type]
            self.written.add(path)
            return  # shares the target's inode and metadata
        elif member.issym():
            os.symlink(member.linkname, path)
        elif member.ischr() or member.isblk():
            kind = stat.S_IFCHR if member.ischr() else stat.S_IFBLK
            try:
                os.mknod(path, kind | 0o600, os.makedev(member.devmajor, member.devminor))
            except OSError as exc:
                if not device_skippable(exc):
                    raise
                self.skip_device(member, exc)
                return
        elif member.isfifo():
            os.mknod(path, stat.S_IFIFO | 0o600)
        else:
            raise self.bad(member.name, f"has unsupported tar type {member.type!r}")
        self.written.add(path)
        self.metadata(path, member)

    def skip_device(self, member: tarfile.TarInfo, exc: OSError) -> None:
        warnings.warn(
            f"layer {self.label}: device entry {member.name!r} skipped: {exc.strerror}",
            RuntimeWarning,
            stacklevel=2,
        )

    def opaque(self, entry: str, parent: str) -> None:
        """Opaque marker: hide the lower layers' ``parent`` (a no-op if it is not
        a directory in the merged view, as umoci); this layer's own entries in it
        stay wherever the marker is, everything else this layer put there goes."""
        found = self.resolve(parent, entry, "existing")
        if found is None:
            return
        path = self.join(self.root, found[0])
        self.invalidate()
        keep = {a for p in self.written for a in _ancestors(p)} | self.written
        self.prune(path, keep)
        os.setxattr(path, _OPAQUE_XATTR, b"y", follow_symlinks=False)

    def prune(self, directory: str, keep: set[str]) -> None:
        for item in os.scandir(directory):
            st = item.stat(follow_symlinks=False)
            if item.path in keep:
                if stat.S_ISDIR(st.st_mode):
                    self.prune(item.path, keep)
            else:
                self.remove(item.path, st)

    def whiteout(self, entry: str, parent: str, name: str) -> None:
        if name in ("", ".", ".."):
            raise self.unsafe(entry, "is a whiteout of an invalid name")
        found = self.resolve(parent, entry, "existing")
        if found is None:
            return  # no directory there: nothing to delete (umoci)
        path = self.join(self.root, found[0], name)
        st = _lstat(path)
        if st is None:
            if path in self.followed:
                self.invalidate()
            os.mknod(path, stat.S_IFCHR, os.makedev(0, 0))
        elif stat.S_ISDIR(st.st_mode):  # unpacked by this layer: keep it, hide the lower
            self.invalidate()
            os.setxattr(path, _OPAQUE_XATTR, b"y", follow_symlinks=False)
        # a non-directory of this layer already hides the lower one

    def link_target(self, member: tarfile.TarInfo) -> str:
        """The path in this snapshot to hardlink to, copied up from a parent if needed."""
        rel = clean_name(member.linkname)
        if not rel:
            raise self.unsafe(member.name, "hardlinks the root directory")
        parent, _, base = rel.rpartition("/")
        found = self.resolve(parent, member.name, "lookup")
        hit, dirs = self.lookup(found[1], found[0], base) if found else (None, [])
        if dirs:
            raise self.unsafe(member.name, f"hardlinks a directory {member.linkname!r}")
        if hit is None or found is None:
            raise self.bad(member.name, f"hardlinks a missing file {member.linkname!r}")
        if hit[0] == self.root:
            return self.join(self.root, found[0], base)
        made = self.resolve(parent, member.name, "existing")
        assert made is not None and made[0] == found[0]
        path = self.join(self.root, found[0], base)
        if path in self.followed:
            self.invalidate()
        self.copy_up(self.join(hit[0], found[0], base), path, hit[1])
        return path

    def copy_up(self, src: str, dest: str, st: os.stat_result) -> None:
        """Copy the lower non-directory ``src`` to ``dest`` with its metadata."""
        if stat.S_ISREG(st.st_mode):
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            with (
                open(os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC), "rb") as inp,
                open(os.open(dest, flags, 0o600), "wb") as out,
            ):
                shutil.copyfileobj(inp, out, _CHUNK)
        elif stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(src), dest)
        else:
            os.mknod(dest, st.st_mode, st.st_rdev)
        os.chown(dest, st.st_uid, st.st_gid, follow_symlinks=False)
        if not stat.S_ISLNK(st.st_mode):
            os.chmod(dest, stat.S_IMODE(st.st_mode))
            for name in os.listxattr(src, follow_symlinks=False):
                if not name.startswith("trusted."):
                    value = os.getxattr(src, name, follow_symlinks=False)
                    os.setxattr(dest, name, value, follow_symlinks=False)
        os.utime(dest, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)

    def write_file(self, archive: TarStream, member: tarfile.TarInfo, path: str) -> None:
        """Create ``path`` with the data of ``member``, then its metadata, through one fd."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(path, flags, 0o600)
        try:
            archive.copy_to(member, fd)
            self.metadata(path, member, fd)
        finally:
            os.close(fd)

    def metadata(self, path: str, member: tarfile.TarInfo, fd: int | None = None) -> None:
        """Owner, mode, xattrs, then times (directories: deferred to the end);
        through ``fd`` (open on ``path``) if given."""
        ref: str | int = path if fd is None else fd
        os.chown(ref, member.uid, member.gid, follow_symlinks=fd is not None)
        if not member.issym():
            os.chmod(ref, member.mode & 0o7777)  # after chown, which clears setuid
        for key, value in member.pax_headers.items():
            name = key.removeprefix(_XATTR_PREFIX)
            if name != key and _xattr_allowed(name, member):
                raw = value.encode("utf-8", "surrogateescape")  # tarfile's decoding, undone
                try:
                    os.setxattr(ref, name, raw, follow_symlinks=fd is not None)
                except OSError as exc:
                    if exc.errno == errno.EPERM and name.startswith("security."):
                        warnings.warn(
                            f"layer {self.label}: xattr {name} of {member.name!r} "
                            "skipped: not privileged",
                            RuntimeWarning,
                            stacklevel=2,
                        )
                    elif exc.errno != errno.ENOTSUP:
                        raise
        mtime = _mtime_ns(member)
        atime = _mtime_ns(member, "atime") if "atime" in member.pax_headers else mtime
        if member.isdir():
            self.dir_mtimes[path] = (atime, mtime)
        elif fd is not None:
            os.utime(fd, ns=(atime, mtime))
        else:
            os.utime(path, ns=(atime, mtime), follow_symlinks=False)


def _ancestors(path: str) -> list[str]:
    result: list[str] = []
    while True:
        path = os.path.dirname(path)
        if path in ("/", ""):
            return result
        result.append(path)
