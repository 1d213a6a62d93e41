"""One writer per directory: an advisory ``flock`` on ``DIR/.lock`` that holds the owner's pid.

The kernel drops a ``flock`` when its process dies, SIGKILL included, so a crash never leaves a stale
lock behind: the file may stay, but nobody holds it. ``birth train`` takes the lock of its run
directory without waiting (a second writer exits at once, naming the holder); a ``birth reproduce``
worker waits for it, then finds the run complete and trains nothing.
"""
from __future__ import annotations

import errno
import fcntl
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from birth.training.config import ConfigError
from birth.training.exits import SPACE_ERRORS, as_no_space

LOCK_FILE = ".lock"


class DirectoryBusy(ConfigError):
    """Another live process holds the directory's lock (a usage error: exit code 2)."""


def _busy(path: Path, what: str) -> DirectoryBusy:
    return DirectoryBusy(f"{what}: {path} is in use by pid {holder(path)} (another birth process writes there); "
                         "wait for it to end, or stop it first")


def holder(path: Path) -> str:
    """The pid written by the lock's holder, or '?' when it cannot be read."""
    try:
        return (Path(path) / LOCK_FILE).read_text().strip() or "?"
    except OSError:
        return "?"


@contextmanager
def directory_lock(path: str | Path, *, wait: bool = False, what: str = "--out") -> Iterator[Path]:
    """Holds ``path``'s lock for the ``with`` block (creating ``path`` if needed).

    ``wait=False``: raises DirectoryBusy, one line naming the holder's pid, when another process holds
    it; nothing is written then. ``wait=True``: blocks until the holder is done.
    """
    path = Path(path)
    make_folder(path, what)
    lock = path / LOCK_FILE
    created = not lock.exists()
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        raise as_no_space(lock, err) if err.errno in SPACE_ERRORS else ConfigError(
            f"{what}: cannot create {lock}: {err.strerror}") from None
    try:
        _flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB), path, what)
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError as err:  # a full disk: no empty lock file is left behind by us
            if created:
                lock.unlink(missing_ok=True)
            raise as_no_space(lock, err) from None
        yield path
    finally:
        os.close(fd)  # releases the lock


def check_folder(path: str | Path, what: str = "--out") -> None:
    """One-line ConfigError when ``path``, or a folder above it, is a file; creates nothing."""
    for place in (Path(path), *Path(path).parents):
        if place.exists() and not place.is_dir():
            raise ConfigError(f"{what}: {place} is a file, not a folder")


def make_folder(path: Path, what: str = "--out") -> None:
    """Creates the folder ``path`` (and its parents); one-line ConfigError when it, or a parent, is
    a file, or it cannot be made; NoSpace on a full disk."""
    check_folder(path, what)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        if err.errno in SPACE_ERRORS:
            raise as_no_space(path, err) from None
        raise ConfigError(f"{what}: cannot create the folder {path}: {err.strerror}") from None


def check_free(path: str | Path, what: str = "--out") -> None:
    """Raises DirectoryBusy if a live process holds ``path``'s lock; creates and changes nothing."""
    try:
        fd = os.open(Path(path) / LOCK_FILE, os.O_RDONLY)
    except OSError:
        return  # no lock file: nobody has ever held it
    try:
        _flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB, Path(path), what)
    finally:
        os.close(fd)


def _flock(fd: int, mode: int, path: Path, what: str) -> None:
    """``flock(fd, mode)``; a lock held elsewhere (non-blocking mode) becomes DirectoryBusy."""
    try:
        fcntl.flock(fd, mode)
    except OSError as err:
        if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise
        raise _busy(path, what) from None


def clear_directory(path: Path) -> None:
    """Removes everything in ``path`` but its lock file (which the caller holds)."""
    for child in Path(path).iterdir():
        if child.name == LOCK_FILE:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
