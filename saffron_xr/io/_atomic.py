"""Atomic writes: a file or a folder store appears under its final name complete, or not at all.

Every writer of the package (netCDF, Zarr, L3 FITS, PNG quick-looks, the batch index) goes
through :func:`write_atomically` or :func:`write_store_atomically`: the content is written to a
hidden temporary name next to the destination, synced, then renamed into place, so an
interrupted run (a crash, Ctrl-C, a killed worker) never leaves a partial file under the final
name, and a finished output is never lost.
"""

from __future__ import annotations

import errno
import os
import uuid
from collections.abc import Callable
from pathlib import Path

__all__ = [
    "PART_SUFFIX",
    "check_destination",
    "part_path",
    "write_atomically",
    "write_store_atomically",
]

PART_SUFFIX = ".part"


def part_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}{PART_SUFFIX}")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def check_destination(path, overwrite: bool) -> Path:
    """The output path, after checking its folder exists and ``overwrite`` allows it."""
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"{path}: the output folder {path.parent} does not exist")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path}: exists and overwrite=False")
    return path


def _fsync_tree(path: Path) -> None:
    """fsync every file and folder of a Zarr store (children before parents)."""
    for root, _dirs, names in os.walk(path, topdown=False):
        for name in names:
            _fsync(Path(root) / name)
        _fsync(Path(root))


def write_store_atomically(path: Path, write: Callable[[Path], object]) -> Path:
    """Like :func:`write_atomically` for a store that is a folder (Zarr).

    A folder cannot be renamed over a non-empty one: an existing store is first renamed to a
    hidden ``.old`` name, the new one renamed into place, then the old one removed.
    """
    import shutil

    part = part_path(path)
    try:
        write(part)
        _fsync_tree(part)
        if path.exists():
            old = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.old")
            os.replace(path, old)
            try:
                os.replace(part, path)
            except BaseException:
                os.replace(old, path)
                raise
            if old.is_dir():
                shutil.rmtree(old, ignore_errors=True)
            else:
                old.unlink()
        else:
            os.replace(part, path)
    except BaseException:
        if part.is_dir():
            shutil.rmtree(part, ignore_errors=True)
        else:
            part.unlink(missing_ok=True)
        raise
    return path


def write_atomically(path: Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(part)`` on a hidden temporary file next to ``path``, then rename it.

    The temporary file is synced before the rename and removed on any error (including
    KeyboardInterrupt), so no partial file ever stands under the final name.
    """
    part = part_path(path)
    try:
        write(part)
        _fsync(part)
        os.replace(part, path)
    except BaseException as exc:
        reason = _write_error(path, part, exc) if isinstance(exc, Exception) else None
        part.unlink(missing_ok=True)
        if reason is not None:
            raise reason from exc
        raise
    return path


def _write_error(path: Path, part: Path, exc: Exception) -> OSError | None:
    """An OSError naming ``path`` and the file system's reason for a failed write, or None.

    Writers report a full disk vaguely (netCDF: "NetCDF: HDF error"; astropy: an OSError
    without the file name). If the file system now refuses to grow the temporary file (disk
    full, quota, file size limit), that is the reason given.
    """
    if isinstance(exc, OSError) and exc.errno is not None:
        return OSError(exc.errno, f"{path}: cannot be written: {exc.strerror or exc}")
    refused = _refused_growth(part)
    if refused is None:
        return None
    return OSError(
        refused.errno,
        f"{path}: cannot be written: {refused.strerror} "
        f"(the writer said {type(exc).__name__}: {exc})",
    )


def _refused_growth(part: Path) -> OSError | None:
    """The file system's error if it refuses to add 64 KiB to ``part`` now, else None."""
    try:
        fd = os.open(part, os.O_WRONLY)
    except OSError as err:
        return None if err.errno == errno.ENOENT else err
    try:
        offset = os.fstat(fd).st_size
        block = b"\0" * 65536
        while block:
            count = os.pwrite(fd, block, offset)
            if count == 0:
                break
            offset += count
            block = block[count:]
        os.fsync(fd)
    except OSError as err:
        return err
    finally:
        os.close(fd)
    return None
