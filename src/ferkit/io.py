"""Atomic file writes: a reader (or a resumed run) sees the old file or the new one, never half a file."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_UMASK = os.umask(0)
os.umask(_UMASK)


class _Recorder:
    """A file wrapper that remembers the OSError a write raised: some writers report a full disk or a
    file-size limit as another type (``torch.save``: RuntimeError); the disk's reason is the clear one."""

    def __init__(self, f: Any) -> None:
        self._f = f
        self.error: OSError | None = None

    def write(self, data: Any) -> Any:
        try:
            return self._f.write(data)
        except OSError as e:
            self.error = e
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)


def write_error(path: str | Path, e: OSError) -> OSError:
    """``e`` as an OSError whose message names the file that could not be written (the CLI prints it)."""
    return OSError(e.errno, f"cannot write {path}: {e.strerror or e}")


def _destination(path: str | Path) -> tuple[Path, bool]:
    """Where to write, and whether atomically: a link is followed (the link stays), and a device, FIFO or
    socket (``-o /dev/null``, ``/dev/stdout``) is written in place, since renaming over it replaces it."""
    p = Path(path)
    if p.is_symlink():
        p = p.resolve()
    return p, not (p.exists() and not p.is_file() and not p.is_dir())


def _write_in_place(path: Path, write: Any, mode: str) -> Path:
    try:
        with open(path, mode) as f:
            write(f)
    except OSError as e:
        raise write_error(path, e) from None
    return path


def atomic_write(path: str | Path, write: Any, mode: str = "wb") -> Path:
    """Write through ``write(file)`` to a temporary file in the same folder, fsync, rename over ``path``.

    A reader (or a resumed run) sees the old file or the new one, never half a file. Any failure of the file
    system (full disk, file-size limit, a folder that is a file, no permission) is an OSError naming ``path``,
    and the temporary file is removed.
    """
    path, atomic = _destination(path)
    if not atomic:
        return _write_in_place(path, write, mode)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give them the usual permissions
        with os.fdopen(fd, mode) as f:
            rec = _Recorder(f)
            try:
                write(rec)
            except OSError:
                raise
            except Exception:
                if rec.error is not None:
                    raise rec.error from None
                raise
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise write_error(path, e) from None
    except BaseException:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise
    return path


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", **kwargs: Any) -> Iterator[Any]:
    """A file to stream into that appears at ``path`` only when the block ends without an exception.

    For output written bit by bit (``predict -o``): on any failure the temporary file is removed and the old
    ``path`` (if any) is left as it was. Failures of the file system itself are OSErrors naming ``path``.
    """
    path, atomic = _destination(path)
    if not atomic:
        try:
            special = open(path, mode, **kwargs)  # noqa: SIM115 - closed by the with below
        except OSError as e:
            raise write_error(path, e) from None
        with special:
            yield special
        return
    try:
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise write_error(path, e) from None

    def discard(f: Any) -> None:
        with contextlib.suppress(OSError):
            f.close()
        Path(tmp).unlink(missing_ok=True)

    try:
        os.fchmod(fd, 0o666 & ~_UMASK)
        f = os.fdopen(fd, mode, **kwargs)
    except OSError as e:
        os.close(fd)
        Path(tmp).unlink(missing_ok=True)
        raise write_error(path, e) from None
    rec = _Recorder(f)
    try:
        yield rec
    except BaseException as e:
        discard(f)
        if rec.error is not None and (e is rec.error or e.__context__ is rec.error):
            raise write_error(path, rec.error) from None
        raise
    try:
        f.flush()
        os.fsync(f.fileno())
        f.close()
        os.replace(tmp, path)
    except OSError as e:
        discard(f)
        raise write_error(path, e) from None


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text), mode="w")


def atomic_write_bytes(data: bytes, path: str | Path) -> Path:
    return atomic_write(path, lambda f: f.write(data))
