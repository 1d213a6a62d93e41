"""Exit codes of ``birth`` and the one error that has its own: a file that cannot be written for
lack of space. Kept free of heavy imports: the command line catches these before torch loads.

    0    success (reproduce: every run trained and analysed)
    1    reproduce: some run failed, or a recipe could not be analysed
    2    usage: bad option, config key or value, unreadable file, or a directory another process holds
    3    train: the run diverged (non-finite loss or weight); the last good checkpoint is kept
    4    a file could not be written (ENOSPC, EDQUOT, EFBIG): free space, then resume; sweep and
         reproduce: some run stopped for lack of space
    5    a reader of runs (plot, report, export, llc) found no whole checkpoint to read
    128+N  train: stopped by signal N (130: Ctrl-C, 143: SIGTERM) after writing a checkpoint
"""
from __future__ import annotations

import errno
from pathlib import Path

EXIT_USAGE = 2
EXIT_DIVERGED = 3
EXIT_NO_SPACE = 4
EXIT_DAMAGED = 5
SPACE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}  # no room left: free some, then resume


class NoSpace(OSError):
    """A file could not be written for lack of space (or over a file-size limit)."""

    def __init__(self, path: Path, err: OSError):
        super().__init__(err.errno, err.strerror)
        self.path = Path(path)

    def __str__(self) -> str:
        return f"cannot write {self.path}: {self.strerror} ({errno.errorcode.get(self.errno, self.errno)})"


def as_no_space(path: Path, err: BaseException) -> BaseException:
    """``err`` as NoSpace when it is a lack of space, else ``err`` itself."""
    return NoSpace(path, err) if isinstance(err, OSError) and err.errno in SPACE_ERRORS else err


class NoWholeCheckpoint(Exception):
    """Every checkpoint a reader could read is damaged (exit code EXIT_DAMAGED); one line naming them."""
