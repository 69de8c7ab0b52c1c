"""What bubblewrap's PID namespace gives for free, without one: when a worker dies (even by
SIGKILL, mid-job), no process its candidates started outlives it.

:func:`split` forks at the top of a worker: the child returns and becomes the worker; the
parent stays behind as a small subreaper holding nothing (no protocol pipe, no problem).
Orphans of the worker's candidates (a ``setsid`` grandchild, a daemon) come back to it, and
once the worker exits, or the pool asks it to stop (SIGTERM, forwarded to the worker first),
it SIGKILLs and reaps everything left below it, then exits with the worker's status.
Candidates cannot signal it: another uid (root) or Landlock's signal scope (otherwise).
"""
from __future__ import annotations

import os
import signal

from evaluators import sandbox


def split() -> None:
    """Return in the worker process; never return in the reaper."""
    sandbox.become_subreaper()
    sandbox.die_with_parent(signal.SIGTERM)  # the pool died: stop, and stop everything below
    worker = os.fork()
    if worker == 0:
        return
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1):  # the protocol pipe is the worker's alone: its death must read as EOF at the pool
        os.dup2(devnull, fd)
    signal.signal(signal.SIGTERM, lambda *_: os.kill(worker, signal.SIGTERM))
    status = 1
    while True:
        try:
            pid, wait_status = os.waitpid(-1, 0)  # the worker, and orphans handed to this subreaper
        except InterruptedError:
            continue
        except ChildProcessError:
            break
        if pid == worker:
            status = os.waitstatus_to_exitcode(wait_status)
            break
    sandbox.kill_descendants()
    os._exit(status if status >= 0 else 128 - status)
