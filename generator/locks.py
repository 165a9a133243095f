"""Per-entry lock files, so that any number of `compute` processes on one cache directory (shards,
retries, other users; local or on a network filesystem) never compute the same entry at once.

    cache/locks/<name>.lock   {"host", "pid", "pid_namespace", "started", "token"}; mtime = heartbeat

A lock is taken by creating its file with O_CREAT|O_EXCL (atomic on local filesystems and NFS v3+;
no fcntl locks, which NFS does not keep reliably). While it is held a thread touches the file every
`heartbeat` seconds. A lock is stale when its holder's pid is dead on this host (same host name and
pid namespace), or when its heartbeat is older than `stale_after` seconds: by the filesystem's clock
(a file touched now gives it, so clocks of other hosts do not matter) or by this process's own
watch (mtime unchanged that long). A stale lock is taken over under a short-lived `.break` guard
(also O_EXCL) by renaming a new lock file over it, after checking it is still the one found stale.
Waiting processes re-check whether the entry was finished meanwhile, and say whom they wait for.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson

HEARTBEAT = 10.0  # seconds between touches of a held lock
STALE_AFTER = 120.0  # a heartbeat this old means the holder is gone
POLL = 0.5  # seconds between looks at a lock someone else holds
REPORT_EVERY = 30.0  # seconds between "still waiting" lines


def _pid_namespace() -> str:
    try:
        return str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return ""


def pid_alive(pid: int) -> bool:
    """Whether process `pid` exists on this host (one we may not signal counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class Holder:
    """What a lock file says about its holder, and when its heartbeat was last seen (its mtime)."""

    host: str
    pid: int
    pid_namespace: str
    started: float
    token: str
    mtime_ns: int

    def describe(self, now: float) -> str:
        started = time.strftime("%H:%M:%S", time.localtime(self.started)) if self.started else "?"
        beat = max(0.0, now - self.mtime_ns / 1e9)
        return f"{self.host or '?'} pid {self.pid or '?'} (since {started}, heartbeat {beat:.0f} s ago)"


def read_holder(path: Path) -> Holder | None:
    """The lock at `path`, or None when there is none. A file still being written reads as a holder
    with no host or pid (stale only by its heartbeat)."""
    try:
        mtime_ns = os.stat(path).st_mtime_ns
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        info = orjson.loads(data)
        return Holder(str(info["host"]), int(info["pid"]), str(info.get("pid_namespace", "")), float(info["started"]), str(info["token"]), mtime_ns)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return Holder("", 0, "", 0.0, "", mtime_ns)


class Locks:
    """The locks this process holds under `root/locks/`, with one heartbeat thread for all of them.
    Use as a context manager: leaving it releases every lock still held."""

    def __init__(self, root: Path, *, quiet: bool = False, heartbeat: float = HEARTBEAT, stale_after: float = STALE_AFTER):
        self.dir = Path(root) / "locks"
        self.quiet = quiet
        self.heartbeat = heartbeat
        self.stale_after = stale_after
        self.host = socket.gethostname()
        self.pid_namespace = _pid_namespace()
        self._held: dict[str, str] = {}  # name -> token
        self._lost: set[str] = set()
        self._mutex = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._watch: dict[str, tuple[int, float]] = {}  # name -> (mtime_ns seen, monotonic time first seen)

    def __enter__(self) -> "Locks":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def path(self, name: str) -> Path:
        return self.dir / f"{name}.lock"

    # -- taking and releasing --------------------------------------------------------------------

    def _content(self, token: str) -> bytes:
        info = {"host": self.host, "pid": os.getpid(), "pid_namespace": self.pid_namespace, "started": time.time(), "token": token}
        return orjson.dumps(info)

    def try_acquire(self, name: str) -> bool:
        """Take the lock `name` if it is free or stale; False if someone else holds it."""
        self.dir.mkdir(parents=True, exist_ok=True)
        path, token = self.path(name), secrets.token_hex(8)
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = read_holder(path)
            if holder is None or not self._stale(name, holder):
                return False
            if not self._take_over(path, holder, token):
                return False
        else:
            with os.fdopen(fd, "wb") as f:
                f.write(self._content(token))
                f.flush()
                os.fsync(f.fileno())
        with self._mutex:
            self._held[name] = token
        self._watch.pop(name, None)
        self._start_heartbeat()
        return True

    def release(self, name: str) -> None:
        with self._mutex:
            token = self._held.pop(name, None)
        holder = read_holder(self.path(name))
        if token is not None and holder is not None and holder.token == token:
            with contextlib.suppress(FileNotFoundError):
                self.path(name).unlink()

    def close(self) -> None:
        for name in list(self._held):
            self.release(name)
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._stop.clear()

    # -- stale locks -----------------------------------------------------------------------------

    def _fs_now(self) -> float:
        """The current time by the clock of the filesystem holding the locks."""
        probe = self.dir / f".now-{self.host}-{os.getpid()}"
        try:
            probe.touch()
            return os.stat(probe).st_mtime_ns / 1e9
        except OSError:
            return time.time()
        finally:
            with contextlib.suppress(OSError):
                probe.unlink()

    def _stale(self, name: str, holder: Holder) -> bool:
        if holder.host == self.host and holder.pid_namespace == self.pid_namespace and holder.pid and not pid_alive(holder.pid):
            return True
        if self._fs_now() - holder.mtime_ns / 1e9 > self.stale_after:
            return True
        seen = self._watch.get(name)
        if seen is None or seen[0] != holder.mtime_ns:
            self._watch[name] = (holder.mtime_ns, time.monotonic())
            return False
        return time.monotonic() - seen[1] > self.stale_after

    def _take_over(self, path: Path, stale: Holder, token: str) -> bool:
        """Replace the stale lock `stale` at `path` by ours (rename), unless another process took it
        over first or it has been renewed meanwhile."""
        guard = path.with_name(path.name + ".break")
        try:
            os.close(os.open(guard, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        except FileExistsError:
            g = read_holder(guard)
            if g is not None and self._fs_now() - g.mtime_ns / 1e9 > self.stale_after:
                with contextlib.suppress(FileNotFoundError):
                    guard.unlink()  # a process died while taking over (a matter of milliseconds)
            return False
        try:
            current = read_holder(path)
            if current is None or (current.token, current.mtime_ns) != (stale.token, stale.mtime_ns):
                return False  # released, renewed or taken over meanwhile: O_EXCL decides again
            tmp = path.with_name(f"{path.name}.{self.host}-{os.getpid()}-{token}")
            with open(tmp, "wb") as f:
                f.write(self._content(token))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                guard.unlink()
        print(f"sae-atlas: took over the stale lock {path.name} of {stale.describe(self._fs_now())}", file=sys.stderr)
        return True

    # -- heartbeat -------------------------------------------------------------------------------

    def _start_heartbeat(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._beat, name="sae-atlas lock heartbeat", daemon=True)
            self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat):
            with self._mutex:
                held = dict(self._held)
            for name, token in held.items():
                holder = read_holder(self.path(name))
                if holder is None or holder.token != token:
                    if name not in self._lost:
                        self._lost.add(name)
                        print(f"sae-atlas: warning: the lock {name} was taken over (heartbeat too late?); its entry may be computed twice", file=sys.stderr)
                    continue
                with contextlib.suppress(OSError):
                    os.utime(self.path(name))

    # -- waiting ---------------------------------------------------------------------------------

    def wait(self, names: dict[str, str], ready: Callable[[], bool] | None = None) -> None:
        """Block until one of the locks `names` (name -> what it guards, for the progress lines) is
        free or stale, or `ready()` is true (the entry was finished meanwhile)."""
        said, since = 0.0, time.monotonic()
        while True:
            if ready is not None and ready():
                return
            holders = {name: read_holder(self.path(name)) for name in names}
            if any(h is None or self._stale(name, h) for name, h in holders.items()):
                return
            now = time.monotonic()
            if not said or (not self.quiet and now - said >= REPORT_EVERY):
                fs_now = self._fs_now()
                waited = f" (waited {now - since:.0f} s)" if said else ""
                for name, h in holders.items():
                    print(f"sae-atlas: waiting for {names[name]}: {h.describe(fs_now)} is computing it{waited}", file=sys.stderr)
                said = now
            time.sleep(POLL)

    @contextlib.contextmanager
    def hold(self, name: str, what: str, done: Callable[[], bool]) -> Iterator[bool]:
        """Yield False when the entry is `done()` (now, or after waiting for its holder), else True
        while holding its lock (`done()` re-checked once the lock is ours)."""
        while not done():
            if self.try_acquire(name):
                try:
                    yield not done()
                finally:
                    self.release(name)
                return
            self.wait({name: what}, done)
        yield False
