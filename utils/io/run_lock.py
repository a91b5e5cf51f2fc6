"""One run at a time in an output folder: a run of ``prepare_data.py`` (its work dir) or ``predict.py`` (its
``--out``) holds a lock on a file in that folder for its whole duration, and a second run on the same folder is
refused at once with a line naming the run that holds it.

The lock is an OS advisory lock (``fcntl.flock``, non-blocking) on a lock file in the folder. The kernel releases
it when its holder ends, however it ends (SIGKILL and power loss included), so the file a killed run leaves behind
never blocks the next run: its content (the holder's program, pid, host and start time as one JSON line) is only
information for the refusal. The file is left in place after the run: deleting it would let a third run lock a
fresh file while a second still holds the deleted one.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import json
import os
import socket
import time
from pathlib import Path
from typing import Iterator

from utils.errors import ConfigError

# flock's errors on a file system without locks (some network mounts): the run goes on unlocked, as before locks
_NO_LOCKS = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)
_RECORD_WAIT_S = 0.5  # how long a refused run waits for the holder to write its record (it writes right after locking)


class FolderInUse(ConfigError):
    """Another run holds the folder's lock. Scripts report it in one line and exit with status 2."""


def _holder(fd: int) -> str:
    """The holder's record in words: ``predict.py, pid 123 on host, started 2024-05-01T12:00:03+02:00``."""
    deadline = time.monotonic() + _RECORD_WAIT_S
    while True:
        try:
            record = json.loads(os.pread(fd, 4096, 0).decode("utf-8"))
            return f"{record['program']}, pid {record['pid']} on {record['host']}, started {record['started']}"
        except (OSError, ValueError, KeyError, TypeError):
            if time.monotonic() > deadline:
                return "it has not recorded its pid"
            time.sleep(0.05)


@contextlib.contextmanager
def run_lock(path: str | Path, program: str, option: str) -> Iterator[None]:
    """Holds the run lock ``path`` (a file in the folder a run writes; created if missing) for the block, and
    writes this process's record into it.

    Args:
        path: the lock file, e.g. ``OUT/.predict.lock``; its folder must exist.
        program: the script, named in the record (``predict.py``).
        option: how the user names the folder (``--out``), for the refusal.

    Raises:
        FolderInUse: another process holds the lock; the message names the folder and that run (its program, pid,
            host and start time) and says to run them one after the other.
        OSError: the lock file cannot be opened (a read-only folder).

    Without ``fcntl`` (Windows), or on a file system that has no locks, the block runs unlocked.
    """
    try:
        import fcntl
    except ImportError:
        yield
        return
    path = Path(path)
    # no O_TRUNC: a refused run must not wipe the holder's record; O_NOFOLLOW: never write through a planted link
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            locked = True
        except BlockingIOError:
            raise FolderInUse(f"{option} {path.parent} is in use by another run ({_holder(fd)}); run them one after "
                              f"the other") from None
        except OSError as error:
            if error.errno not in _NO_LOCKS:
                raise
            locked = False  # no locks on this file system: the run goes on unlocked, as before the lock existed
        if locked:
            record = {"program": program, "pid": os.getpid(), "host": socket.gethostname(),
                      "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(record) + "\n").encode("utf-8"), 0)
        try:
            yield
        finally:
            if locked:  # explicitly: a process forked meanwhile (a DataLoader worker) shares the lock until it ends
                fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
