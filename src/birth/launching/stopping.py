"""Stopping a launch of many runs (``birth.launching.local.LocalBackend``): what SIGINT, SIGTERM and
the death of the launching process do, in the launcher and in its worker processes.

- SIGINT or SIGTERM to the launcher raise ``Stopped`` in it (a ``KeyboardInterrupt``). The launcher
  then tells its workers (``stop_workers``) and waits for them: each stops the run it trains at the
  next step, as ``birth train`` does (a checkpoint, summary status ``interrupted``), and exits; a
  run still queued never starts.
- The launcher killed (SIGKILL, out of memory): each worker gets SIGTERM from the kernel
  (``PR_SET_PDEATHSIG``, Linux) and sees the end of a pipe that only the launcher held open
  (everywhere), and stops the same way. A worker whose launcher is gone never starts a run.

Signals belong to a whole process, so each process has one ``Guard``: installed by the launcher
(``launching``) or by a worker's initializer (``init_worker``), found by ``current``. Nothing here
imports torch: a worker installs its guard before it loads anything heavy.
"""
from __future__ import annotations

import contextlib
import io
import os
import signal
import sys
import threading
import time
from typing import Iterator, Optional, Sequence

SIGNALS = (signal.SIGINT, signal.SIGTERM)
POLL_S = 0.1         # how often a worker looks at its launcher (stopped? gone?)
RESEND_S = 0.3       # a busy worker of a stopped launch gets its signal again this often (see Guard)
SETTLE_S = 1.0       # after a signal stopped its run, how long a worker waits to learn whether the launch stops
STOP_WAIT_S = 120.0  # how long the launcher waits for its workers' checkpoints before it kills them

IDLE, WAITING, BUSY = "idle", "waiting", "busy"


class Stopped(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped a launch. A ``KeyboardInterrupt``, so that code which stops on
    Ctrl-C stops on SIGTERM too."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def exit_code(stop: BaseException) -> int:
    """128 + the signal: 130 for SIGINT (a bare ``KeyboardInterrupt`` too), 143 for SIGTERM."""
    return 128 + getattr(stop, "signum", signal.SIGINT)


class Guard:
    """This process's part in stopping a launch.

    ``phase`` says what a SIGINT/SIGTERM does here: ``IDLE`` (between units of work) stops the
    launcher at once (``Stopped``) and leaves a worker alone (its launcher decides); ``WAITING`` (for
    another process's lock on a run directory: nothing written yet) raises ``Stopped``; ``BUSY`` (a
    unit in training) only notes the signal, because the training loop stops at the next step by
    its own handler (``birth.training.loop.stop_signals``). A signal that came before the loop
    took over is sent again, and so is the stop of a launch while its unit lasts, so that every loop
    of the unit sees it (a stack resumed at different steps trains several loops in turn).
    """

    def __init__(self, launcher: bool, shared=None, parent=None, parent_pid: Optional[int] = None):
        self.launcher = launcher
        self.shared = shared          # worker: the launcher's stop signal, 0 while the launch goes on
        self.parent = parent          # worker: a pipe's reading end; its end of file is the launcher's death
        self.parent_pid = parent_pid  # worker: the launcher's pid
        self.gone = False             # worker: the launcher is gone
        self.phase = IDLE
        self.signum = 0               # the signal this process stops its unit for (0: none)
        self.stopping = 0             # launcher: the signal that stopped the launch (0: it goes on)
        self.resend_at: Optional[float] = None  # when to send ``signum`` to this process again
        self.lock = threading.Lock()  # between the main thread and the watcher: one of them acts on a phase
        self.closed = threading.Event()
        self.previous: dict = {}

    # -- what the launch is doing

    def launch_stopped(self) -> int:
        """The signal that stopped the launch (0: it goes on); SIGTERM for a worker whose launcher is
        gone."""
        if self.launcher:
            return self.stopping
        if self.shared is not None and self.shared.value:
            return int(self.shared.value)
        return signal.SIGTERM if self.orphaned() else 0

    def orphaned(self) -> bool:
        """The launcher is gone: its pipe ended, or this process has another parent, or the kernel
        already holds a SIGKILL for it or reaps it. (The pipe is the sure sign: a parent that dies
        thread by thread keeps its pid a moment, and the kernel may send the parent-death signal
        already; the pending SIGKILL is the earliest.)"""
        if not self.gone and self.parent_pid is not None:
            self.gone = os.getppid() != self.parent_pid or _dying(self.parent_pid)
        if not self.gone and self.parent is not None:
            with contextlib.suppress(OSError, ValueError):
                self.gone = self.parent.poll()  # the launcher never writes: readable means closed
        return self.gone

    # -- signals

    def install(self) -> None:
        """Takes SIGINT and SIGTERM (main thread only: elsewhere Python cannot) and starts the watcher."""
        global _CURRENT
        if threading.current_thread() is threading.main_thread():
            self.previous = {s: signal.signal(s, self._on_signal) for s in SIGNALS}
        threading.Thread(target=self._watch, name="birth-stop-watcher", daemon=True).start()
        _CURRENT = self

    def uninstall(self) -> None:
        global _CURRENT
        self.closed.set()
        for s, handler in self.previous.items():
            signal.signal(s, handler)
        _CURRENT = None

    def _on_signal(self, signum: int, _frame) -> None:
        # runs in the main thread between two bytecodes: never takes self.lock (the main thread may hold it)
        if self.phase == BUSY:
            self.signum = self.signum or signum
            self.resend_at = time.monotonic() + RESEND_S
            return
        if self.phase == WAITING or self.launcher and not self.stopping:
            raise Stopped(signum)
        # a worker between units: its launcher decides (it stops the launch, or the watcher sees it gone);
        # a launcher already stopping: it is waiting for its workers' checkpoints

    def _pause(self) -> None:
        if self.parent is not None and not self.gone:
            from multiprocessing.connection import wait
            with contextlib.suppress(OSError, ValueError):
                wait([self.parent], POLL_S)  # wakes at once when the launcher dies
                return
        self.closed.wait(POLL_S)

    def _watch(self) -> None:
        while not self.closed.is_set():
            self._pause()
            with self.lock:
                stop = self.launch_stopped()
                if stop and not self.launcher:
                    if self.phase == IDLE:
                        _exit(stop)  # between units: nothing to save, and no new unit may start
                    if not self.signum:
                        self.signum, self.resend_at = stop, time.monotonic()
                if self.resend_at is not None and self.phase != IDLE and time.monotonic() >= self.resend_at:
                    # again until the unit ends: whichever training loop runs then sees it
                    self.resend_at = time.monotonic() + RESEND_S if stop else None
                    os.kill(os.getpid(), self.signum)

    # -- the phases of a unit of work

    @contextlib.contextmanager
    def unit(self) -> Iterator[None]:
        """One unit of work (``BUSY``). A worker of a stopped launch exits instead of starting one,
        and when it ends; the launcher raises ``Stopped`` after a unit that a signal stopped."""
        with self.lock:
            stop = self.launch_stopped()
            if stop:
                if not self.launcher:
                    _exit(stop)
                raise Stopped(stop)
            self.phase, self.signum, self.resend_at = BUSY, 0, None
        try:
            with contextlib.redirect_stderr(_QuietOnceStopped(sys.stderr, self)):
                yield
        finally:
            with self.lock:
                got, self.phase, self.signum, self.resend_at = self.signum, IDLE, 0, None
                stop = self.launch_stopped()
                if stop and not self.launcher:
                    _exit(stop)  # here, not between units: no lock of the executor's queues is held
            if got and self.launcher:
                raise Stopped(got)

    def settle(self, signum: int) -> None:
        """After a unit that ``signum`` stopped: a signal to a worker alone stops its run and no more,
        but a Ctrl-C reaches the whole process group, and the kernel's parent-death signal can come
        before the pipe ends; so wait a moment to learn whether the launch stops (``unit`` then
        exits this worker), and note the signal in the launcher (``unit`` raises ``Stopped``)."""
        if self.launcher:
            self.signum = self.signum or signum
            return
        deadline = time.monotonic() + SETTLE_S
        while not self.launch_stopped() and time.monotonic() < deadline:
            time.sleep(POLL_S / 4)

    @contextlib.contextmanager
    def waiting(self) -> Iterator[None]:
        """Waiting for a lock inside a unit: a signal raises ``Stopped`` out of the wait."""
        with self.lock:
            noted, self.phase = self.signum, WAITING
        try:
            stop = noted or self.launch_stopped()
            if stop:
                raise Stopped(stop)
            yield
        finally:
            self.phase = BUSY


class _QuietOnceStopped(io.TextIOBase):
    """stderr, silent once the launch is stopped: a stopped run's own hint (``birth train --resume
    RUN``) would stand beside the launcher's one line that continues every run."""

    def __init__(self, stream, guard: Guard):
        self.stream, self.guard = stream, guard

    def write(self, text: str) -> int:
        if self.guard.launch_stopped():
            return len(text)
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return self.stream.isatty()


# This process's guard: signal handlers are per process, and a worker's initializer has nowhere else to put it.
_CURRENT: Optional[Guard] = None


def current() -> Optional[Guard]:
    """The guard of this process, None outside a launch (``birth train``, a Slurm job)."""
    return _CURRENT


def unit():
    """``Guard.unit`` of this process's guard (nothing outside a launch)."""
    return _CURRENT.unit() if _CURRENT else contextlib.nullcontext()


def waiting():
    """``Guard.waiting`` of this process's guard (nothing outside a launch)."""
    return _CURRENT.waiting() if _CURRENT else contextlib.nullcontext()


def launch_stopped() -> int:
    """The signal that stopped this process's launch, 0 while it goes on or outside a launch."""
    return _CURRENT.launch_stopped() if _CURRENT else 0


def settle(signum: int) -> None:
    """``Guard.settle`` of this process's guard (nothing outside a launch)."""
    if _CURRENT:
        _CURRENT.settle(signum)


@contextlib.contextmanager
def launching() -> Iterator[Guard]:
    """The launcher's guard for the ``with`` block: SIGINT/SIGTERM raise ``Stopped`` between units."""
    guard = Guard(launcher=True)
    guard.install()
    try:
        yield guard
    finally:
        guard.uninstall()


@contextlib.contextmanager
def pool_link(ctx) -> Iterator[tuple]:
    """What the launcher gives its workers for the ``with`` block: ``(shared, initargs)``. ``shared``
    carries its stop signal (``stop_workers``); ``initargs`` are ``init_worker``'s."""
    shared = ctx.RawValue("i", 0)
    reader, writer = ctx.Pipe(duplex=False)  # the writer stays here: its end is this process's end
    # the kernel's parent-death signal follows the thread that started the child: only the main one
    # lives as long as the launcher
    main = threading.current_thread() is threading.main_thread()
    try:
        yield shared, (shared, reader, os.getpid(), main)
    finally:
        reader.close()
        writer.close()


def init_worker(shared, parent, parent_pid: int, parent_death_signal: bool) -> None:
    """A worker process's initializer (``ProcessPoolExecutor(initializer=...)``)."""
    if parent_death_signal:
        _parent_death_signal(signal.SIGTERM)
    # after the prctl: the watcher then sees a launcher that died before it
    Guard(launcher=False, shared=shared, parent=parent, parent_pid=parent_pid).install()


def _dying(pid: int) -> bool:
    """Whether process ``pid`` has a SIGKILL pending or is exiting (Linux ``/proc``; False elsewhere)."""
    try:
        status = open(f"/proc/{pid}/status").read()
    except OSError:
        return sys.platform.startswith("linux")  # no such process any more
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    kill = 1 << (signal.SIGKILL - 1)
    pending = any(int(fields.get(k, "0").strip() or "0", 16) & kill for k in ("SigPnd", "ShdPnd"))
    return pending or fields.get("State", "").strip()[:1] in ("Z", "X")


def _parent_death_signal(signum: int) -> None:
    """Asks the kernel for ``signum`` when the parent dies (Linux ``prctl(PR_SET_PDEATHSIG)``), so
    that a training loop stops at once; elsewhere the launcher's pipe tells the watcher."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signum), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG


def stop_workers(processes: Sequence, shared, signum: int, wait_s: float = STOP_WAIT_S) -> None:
    """Tells the workers (``multiprocessing`` processes) that the launch stopped, and waits until
    each has exited (after its checkpoint); kills those still there after ``wait_s``."""
    from multiprocessing.connection import wait
    shared.value = signum
    # their sentinels, not join(): the pool's own thread may be reaping them at the same time
    pending = {p.sentinel: p for p in processes}
    deadline = time.monotonic() + wait_s
    while pending and time.monotonic() < deadline:
        for ready in wait(list(pending), max(0.0, deadline - time.monotonic())):
            pending.pop(ready)
    for p in pending.values():
        p.kill()


def _exit(signum: int) -> None:
    """Ends a worker at once (its run is saved, or none runs): what the launcher waits for."""
    # multiprocessing's own clean-up first: the named semaphores this process made (tqdm's lock)
    # are released and unregistered, so that the resource tracker warns of no leak
    from multiprocessing import util
    with contextlib.suppress(Exception):
        getattr(util, "_run_finalizers", lambda _priority: None)(0)
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(128 + signum)
