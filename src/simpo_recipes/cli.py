"""How every script ends when something goes wrong: one clear message, no traceback, and an exit
status that says whether rerunning can help.

- 2: the project's own errors (bad config, data, template, judge, an unusable output folder, a
  diverged run): the message says what to change; rerunning as is would fail the same way;
- 130 / 143: stopped by Ctrl-C / SIGTERM: the message says what a rerun does;
- anything else (a bug, a crash, a kill): the traceback, as Python prints it.
"""
from __future__ import annotations

import contextlib
import errno
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from simpo_recipes.errors import UserError

USER_ERROR = 2
# scripts/train.py reads a stage's exit status here: launchers (accelerate, torchrun) turn it into 1
STATUS_FILE = "SIMPO_STAGE_STATUS_FILE"
# A folder or file that cannot be written: what the user can do about it
_OS_ADVICE = {
    errno.EACCES: "no permission: choose a folder you can write",
    errno.EPERM: "no permission: choose a folder you can write",
    errno.EROFS: "read-only file system: choose a writable folder",
    errno.ENOSPC: "the disk is full: free space or choose another folder",
    errno.EDQUOT: "disk quota exceeded: free space or choose another folder",
    errno.ENOTDIR: "a file is in the way where a folder is needed: move it or choose another path",
    errno.EEXIST: "a file is in the way where a folder is needed: move it or choose another path",
    errno.EISDIR: "a folder is in the way where a file is needed: move it or choose another path",
}


class Stopped(KeyboardInterrupt):
    """SIGTERM, turned into an exception so that the script stops like on Ctrl-C."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def stop_on_sigterm() -> None:
    """SIGTERM (Slurm preemption, `kill`, scripts/train.py forwarding) stops the script cleanly."""

    def handler(signum, frame):
        raise Stopped(signum)

    signal.signal(signal.SIGTERM, handler)


def run_cli(main: Callable[[], None], interrupted: Callable[[], str] = lambda: "") -> None:
    """Run a script's main(); `interrupted()` says what a rerun does after Ctrl-C or SIGTERM."""
    stop_on_sigterm()
    code: int | str | None = 1  # an uncaught exception: Python prints its traceback
    try:
        main()
        code = 0
    except SystemExit as e:
        code = e.code
        raise
    except UserError as e:
        code = _exit(USER_ERROR, f"error: {e}")
    except KeyboardInterrupt as e:
        signum = e.signum if isinstance(e, Stopped) else signal.SIGINT
        what = "stopped by SIGTERM" if signum == signal.SIGTERM else "interrupted (Ctrl-C)"
        hint = interrupted()
        code = _exit(128 + signum, f"{what}{'; ' + hint if hint else ''}")
    except OSError as e:
        if e.errno not in _OS_ADVICE:
            raise
        where = " -> ".join(str(f) for f in (e.filename, e.filename2) if f) or "a file"
        code = _exit(USER_ERROR, f"error: cannot use {where}: {e.strerror} ({_OS_ADVICE[e.errno]})")
    finally:
        _report(code)
    if code:
        sys.exit(code)


def _exit(code: int, message: str) -> int:
    print(message, file=sys.stderr, flush=True)
    return code


def _report(code: int | str | None) -> None:
    """Tell scripts/train.py how the stage ended (process 0 only)."""
    path = os.environ.get(STATUS_FILE)
    if path and os.environ.get("RANK", "0") == "0":
        status = code if isinstance(code, int) else 0 if code is None else 1
        with contextlib.suppress(OSError):
            Path(path).write_text(str(status))
