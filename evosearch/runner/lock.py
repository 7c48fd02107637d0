"""One writer per run directory: a lock file that works where ``flock`` does not.

Two drivers on one run directory (a requeued cluster job beside the one still running) would both
append records and checkpoints: ids repeat and the budget is spent twice. So a driver holds
``RUN/driver.lock`` for its whole life (``rerank`` holds ``RUN/rerank.lock`` for the files it
writes), and a second one is refused with the holder's host, pid and start time.

``flock``/``fcntl`` locks are unreliable on the shared file systems clusters run on (NFS, Lustre), and
they vanish silently when a node is lost. This lock is a file instead:

- it is created atomically, fully written, by hard-linking a temporary file to the lock's name
  (``link`` fails if the name exists, on NFS too); ``O_CREAT | O_EXCL`` where links are not supported;
- it names its holder (host, boot id, pid, start time) and never changes after that; the holder
  refreshes its modification time (the heartbeat) from a daemon thread every ``stale_after_s / 6``
  seconds. Touching instead of rewriting means a holder can never overwrite a successor's lock;
- a lock is stale when its holder is gone: on the same machine (host name and boot id) a pid that no
  longer exists, at once; anywhere, a heartbeat older than ``stale_after_s``, judged against the file
  system's clock (the mtime of a file written just now), so skewed node clocks do not matter. A
  stale lock is taken over with one line saying so: moved aside atomically, checked to be the very
  file judged stale (a contender may have taken it over first), then replaced.

It is removed on exit — normal, exception, Ctrl-C, SIGTERM (turned into ``SystemExit`` while held, if
nothing else handles it) — together with the directories it created. A ``kill -9`` or a lost node
leaves it behind, to be taken over as stale.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType, TracebackType

from evosearch.errors import EvosearchError, one_line, shorten

DRIVER = "driver"  # evosearch run: config, tasks, events, checkpoint, best/
RERANK = "rerank"  # evosearch rerank: rerank/*.json
STALE_AFTER_S = 120.0  # well above the heartbeat period and NFS attribute caching (up to 60 s)
MIN_LOCK_TIMEOUT_S = 10.0  # shorter, and a slow file server or a busy node would lose a live lock
HEARTBEATS_PER_TIMEOUT = 6
ATTEMPTS = 5  # creations tried, each after a stale lock was taken over or a contender seen
MAX_FIELD = 100  # characters of a lock file's field shown in a message: the file is data
MAX_PATH = 200


class RunLockedError(EvosearchError):
    """The run directory is held by a live holder."""


def lock_file(run_dir: str | os.PathLike, purpose: str = DRIVER) -> Path:
    return Path(run_dir) / f"{purpose}.lock"


@dataclass(frozen=True)
class Holder:
    """Who holds a lock, as its file says. Written once, at acquisition."""

    host: str
    boot_id: str
    pid: int
    started: float  # time.time() of the holder
    stale_after_s: float  # the holder's choice: it knows how often it refreshes
    token: str  # unique per acquisition

    def describe(self) -> str:
        since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.started))
        return f"pid {self.pid} on host {shorten(self.host, MAX_FIELD)} since {since}"

    def on_this_machine(self) -> bool:
        return self.host == socket.gethostname() and self.boot_id == _boot_id()


class RunLock:
    """Hold ``RUN/<purpose>.lock`` while the ``with`` block runs; see the module docstring.

    ``notify`` hears one line when a stale lock is taken over, and when this lock is lost (taken over
    by another process because its heartbeat stalled past the timeout).
    """

    def __init__(
        self,
        run_dir: str | os.PathLike,
        purpose: str = DRIVER,
        *,
        stale_after_s: float = STALE_AFTER_S,
        notify: Callable[[str], None] | None = None,
    ):
        self.run_dir = Path(run_dir)
        self.path = lock_file(run_dir, purpose)
        self.stale_after_s = stale_after_s
        self.notify = notify or _to_stderr
        self.holder: Holder | None = None
        self.lost = False
        self._created_dirs: list[Path] = []
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None
        self._previous_sigterm: signal.Handlers | Callable | int | None = None

    @property
    def _shown(self) -> str:
        """The run directory as messages show it: a path from the command line or a config is data."""
        return shorten(str(self.run_dir), MAX_PATH)

    # ---- acquiring ------------------------------------------------------------------------------

    def acquire(self) -> None:
        """Take the lock, or raise :class:`RunLockedError` naming the live holder."""
        holder = Holder(
            socket.gethostname(), _boot_id(), os.getpid(), time.time(), self.stale_after_s, uuid.uuid4().hex
        )
        try:
            self._created_dirs = _make_dirs(self.run_dir)
            self._create_or_take_over(json.dumps(asdict(holder)).encode())
        except (OSError, ValueError) as e:  # a file for a directory, no permission, a NUL in the name
            self._remove_created_dirs()
            reason = e.strerror if isinstance(e, OSError) and e.strerror else one_line(e)
            raise EvosearchError(f"cannot lock {self._shown}: {reason}") from None
        except BaseException:
            self._remove_created_dirs()
            raise
        self.holder = holder
        self._stop.clear()
        self._heartbeat = threading.Thread(target=self._beat, name=f"{self.path.name} heartbeat", daemon=True)
        self._heartbeat.start()
        self._handle_sigterm()

    def _create_or_take_over(self, data: bytes) -> None:
        for _ in range(ATTEMPTS):
            if self._create(data):
                return
            self._take_over_if_stale()
        raise RunLockedError(f"{self._shown}: {self.path.name} keeps changing hands; try again")

    def _create(self, data: bytes) -> bool:
        """Create the lock file holding ``data``, atomically; False if it exists."""
        tmp = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex}.tmp")
        tmp.write_bytes(data)
        try:
            os.link(tmp, self.path)
            return True
        except FileExistsError:
            return False
        except OSError as e:
            if e.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOSYS, errno.EMLINK):
                raise
            return _create_exclusive(self.path, data)  # a file system without hard links
        finally:
            tmp.unlink(missing_ok=True)

    def _take_over_if_stale(self) -> None:
        """Remove the lock file if its holder is gone (saying so); raise if it is alive."""
        seen = _snapshot(self.path)
        if seen is None:
            return  # released meanwhile: try again
        holder, age = _parse(seen[0]), self._age(seen[1])
        reason = _stale_reason(holder, age, self.stale_after_s)
        if reason is None:
            raise RunLockedError(self._held_message(holder, age))
        aside = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex}.stale")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return  # another process took it over first: look again
        if _snapshot(aside) != seen:  # not the file judged stale (a contender's fresh one): put it back
            _put_back(aside, self.path)
            return
        aside.unlink()
        who = "an unreadable lock file" if holder is None else holder.describe()
        self.notify(f"{self._shown}: taking over the stale {self.path.name} of {who}: {reason}")

    def _age(self, mtime_ns: int) -> float:
        """Seconds since a heartbeat, by the file system's clock: that of the node's file server."""
        probe = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex}.now")
        try:
            probe.touch()
            now_ns = probe.stat().st_mtime_ns
        finally:
            probe.unlink(missing_ok=True)
        return (now_ns - mtime_ns) / 1e9

    def _held_message(self, holder: Holder | None, age: float) -> str:
        who = "an unknown process (unreadable lock file)" if holder is None else holder.describe()
        timeout = self.stale_after_s if holder is None else holder.stale_after_s
        return (
            f"{self._shown} is in use by {who}, heartbeat {max(age, 0):.0f} s ago ({self.path.name}): wait "
            f"for it to end or stop it; if it is gone, the lock is taken over at once on its machine, "
            f"elsewhere after {timeout:.0f} s without a heartbeat"
        )

    # ---- holding --------------------------------------------------------------------------------

    def _beat(self) -> None:
        period = self.stale_after_s / HEARTBEATS_PER_TIMEOUT
        while not self._stop.wait(period):
            if not self._owned():
                self.lost = True
                self.notify(
                    f"{self._shown}: lost {self.path.name}: another process took it over after this "
                    f"one's heartbeat stalled past {self.stale_after_s:.0f} s"
                )
                return
            with contextlib.suppress(OSError):  # a file server's hiccup: the next beat tries again
                os.utime(self.path)

    def _owned(self) -> bool:
        seen = _snapshot(self.path)
        holder = None if seen is None else _parse(seen[0])
        return holder is not None and self.holder is not None and holder.token == self.holder.token

    def _handle_sigterm(self) -> None:
        """A SIGTERM nobody handles would end the process without releasing: make it an exit."""
        if threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            self._previous_sigterm = signal.signal(signal.SIGTERM, _exit_on_sigterm)

    # ---- releasing ------------------------------------------------------------------------------

    def release(self) -> None:
        """Stop the heartbeat, remove the lock file if it is still this one's, and the directories
        that taking it created (if nothing else was written there)."""
        if self._previous_sigterm is not None:
            signal.signal(signal.SIGTERM, self._previous_sigterm)
            self._previous_sigterm = None
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join()
            self._heartbeat = None
        if self._owned():
            self.path.unlink(missing_ok=True)
        self.holder = None
        self._remove_created_dirs()

    def _remove_created_dirs(self) -> None:
        for directory in reversed(self._created_dirs):
            try:
                directory.rmdir()
            except OSError:
                return  # not empty: the run wrote into it, or someone else did
        self._created_dirs = []

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


def _stale_reason(holder: Holder | None, age: float, default_timeout: float) -> str | None:
    """Why a lock's holder is gone, or None if it may be alive."""
    if holder is not None and holder.on_this_machine() and not _pid_alive(holder.pid):
        return "its process no longer exists"
    timeout = default_timeout if holder is None else holder.stale_after_s
    if age > timeout:
        return f"no heartbeat for {age:.0f} s (stale after {timeout:.0f} s)"
    return None


def _snapshot(path: Path) -> tuple[bytes, int] | None:
    """A lock file's content and heartbeat (mtime), or None if there is none."""
    try:
        with open(path, "rb") as f:
            return f.read(4096), os.fstat(f.fileno()).st_mtime_ns
    except FileNotFoundError:
        return None


def _parse(content: bytes) -> Holder | None:
    """The holder a lock file names; None if it is not a lock file this module wrote."""
    try:
        data = json.loads(content)
        holder = Holder(**data)
        time.gmtime(holder.started)  # shown in messages: a time gmtime can render
    except (ValueError, TypeError, OverflowError, OSError, RecursionError):
        return None
    types = {"host": str, "boot_id": str, "pid": int, "started": float, "stale_after_s": float, "token": str}
    for name, kind in types.items():
        value = getattr(holder, name)
        if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else kind):
            return None
    if holder.stale_after_s != holder.stale_after_s or holder.pid <= 0:  # NaN never expires
        return None
    return holder


def _put_back(aside: Path, path: Path) -> None:
    with contextlib.suppress(FileExistsError):  # a third process locked meanwhile: the one put aside
        os.link(aside, path)  # notices at its next heartbeat
    aside.unlink()


def _create_exclusive(path: Path, data: bytes) -> bool:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return True


def _make_dirs(path: Path) -> list[Path]:
    """Create ``path`` and its missing parents; the ones created, outermost first."""
    missing = [p for p in (path, *path.parents) if not p.exists()][::-1]
    path.mkdir(parents=True, exist_ok=True)
    return missing


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    except OverflowError:
        return False
    return True


def _boot_id() -> str:
    """Tells this machine apart from another of the same name, and from itself before a reboot."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def _to_stderr(line: str) -> None:
    print(f"evosearch: {line}", file=sys.stderr, flush=True)
