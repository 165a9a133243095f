"""A shared cache under concurrency: `compute` processes racing on one cache directory (shards, the
same shard twice, an unsharded run) compute every entry once and render the site of a
single-process build byte for byte; stale locks (dead pid, old heartbeat) are taken over; a live
holder is waited for and its finished entry used; a process killed mid-entry leaves no torn entry
and the next run completes it. Every compute here is the real CLI in a subprocess, or in process."""

from __future__ import annotations

import collections
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from sae_atlas.cache import CorruptEntry, corpus_key, read_entry, sae_key, set_key
from sae_atlas.locks import Locks, read_holder
from sae_atlas.manifest import load_content
from tests.test_faults import BATCH, ROOT, assert_same_tree, build, partial_states, run_and_kill
from tests.fixtures import build_fixture_content

HOOK = "blocks.{layer}.hook_resid_post"
# Three SAEs in two Sets (one Set entry); d_sae below 16 keeps the map on PCA (fast).
SETS = (("res-st", HOOK, "standard", (0, 1)), ("res-tk", HOOK, "topk", (1,)))
N_PROMPTS, CONTEXT, D_SAE = 32, 16, 12

# The real CLI, recording every finished entry it writes (not checkpoints) as "pid kind/key" lines
# in $ATLAS_WRITE_LOG, and with checkpoints every 2 batches (so that a kill lands mid-entry).
LOGGED_CLI = (
    "import functools, os, sys\n"
    "import sae_atlas.cache as cache, sae_atlas.compute as compute\n"
    "import sae_atlas.compute.engine as engine, sae_atlas.sources.corpus as corpus\n"
    "compute.ComputeOptions = functools.partial(compute.ComputeOptions, checkpoint_every=2)\n"
    "original = cache.write_entry\n"
    "def logged(final_dir, *args, **kwargs):\n"
    "    original(final_dir, *args, **kwargs)\n"
    "    if not final_dir.name.endswith('.partial'):\n"
    "        with open(os.environ['ATLAS_WRITE_LOG'], 'a') as f:\n"
    "            f.write(f'{os.getpid()} {final_dir.parent.name}/{final_dir.name}\\n')\n"
    "engine.write_entry = corpus.write_entry = logged\n"
    "from sae_atlas.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


@pytest.fixture(scope="module")
def content(tmp_path_factory) -> Path:
    return build_fixture_content(tmp_path_factory.mktemp("race"), n_prompts=N_PROMPTS, context=CONTEXT, d_sae=D_SAE, sets=SETS)


@pytest.fixture(scope="module")
def reference(content, tmp_path_factory) -> tuple[Path, Path]:
    """(cache, site) of one single-process build."""
    root = tmp_path_factory.mktemp("reference")
    assert build(content, root / "cache", root / "site") == 0
    return root / "cache", root / "site"


def compute_argv(content: Path, cache: Path, *extra: str) -> list[str]:
    return [sys.executable, "-c", LOGGED_CLI, "compute", "--content", str(content), "--cache", str(cache), "--device", "cpu", "--quiet", "--threads", "1", *BATCH, *extra]


def entry_names(cache: Path) -> set[str]:
    """kind/key of every finished entry in the cache."""
    return {f"{p.parent.parent.name}/{p.parent.name}" for kind in ("corpus", "sae", "set") for p in (cache / kind).glob("*/meta.json") if "." not in p.parent.name}


def writes(log: Path) -> collections.Counter:
    return collections.Counter(line.split()[1] for line in log.read_text().splitlines()) if log.exists() else collections.Counter()


def lock_files(cache: Path) -> list[str]:
    return sorted(p.name for p in (cache / "locks").glob("*")) if (cache / "locks").exists() else []


def entry_locks(content: Path) -> list[str]:
    """The lock names of the fixture release's entries: its corpus, each SAE, the Set of two."""
    (release,) = load_content(content)
    names = [f"corpus-{corpus_key(release)}"] + [f"sae-{sae_key(release, spec)}" for spec in release.saes()]
    return names + [f"set-{set_key(release, s)}" for s in release.sets if len(s.saes) > 1]


def write_lock(cache: Path, name: str, host: str, pid: int, age: float = 0.0) -> Path:
    """A lock file as another process would have left it, its heartbeat `age` seconds old."""
    path = cache / "locks" / f"{name}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    ns = str(os.stat("/proc/self/ns/pid").st_ino) if os.path.exists("/proc/self/ns/pid") else ""
    info = {"host": host, "pid": pid, "pid_namespace": ns, "started": time.time() - age, "token": f"t{pid}"}
    path.write_bytes(orjson.dumps(info))
    os.utime(path, (time.time() - age, time.time() - age))
    return path


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# -- the race -------------------------------------------------------------------------------------


def test_racing_computes_write_each_entry_once_and_render_the_single_process_site(content, reference, tmp_path):
    cache, log = tmp_path / "cache", tmp_path / "writes.log"
    env = {**os.environ, "ATLAS_WRITE_LOG": str(log)}
    shards = [["--shard", "0/2"], ["--shard", "0/2"], ["--shard", "1/2"], []]
    procs = [subprocess.Popen(compute_argv(content, cache, *s), cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for s in shards]
    errs = [p.communicate(timeout=300)[1] for p in procs]
    for p, err in zip(procs, errs):
        assert p.returncode == 0, err
    written = writes(log)
    expected = entry_names(reference[0])
    assert set(written) == expected == entry_names(cache)
    twice = {k: n for k, n in written.items() if n > 1}
    assert not twice, f"entries computed more than once: {twice}"
    assert any("waiting for" in err for err in errs), "no process had to wait: the race did not happen"
    assert lock_files(cache) == []
    assert build(content, cache, tmp_path / "site", command="render") == 0
    assert_same_tree(tmp_path / "site", reference[1])
    assert_same_tree(cache / "sae", reference[0] / "sae")


# -- stale and live locks -------------------------------------------------------------------------


@pytest.mark.parametrize("holder", ["dead-pid", "old-heartbeat"])
def test_stale_locks_are_taken_over(content, reference, tmp_path, capsys, holder):
    cache = tmp_path / "cache"
    for name in entry_locks(content):
        if holder == "dead-pid":
            write_lock(cache, name, socket.gethostname(), dead_pid())
        else:  # another host whose process stopped beating an hour ago
            write_lock(cache, name, "elsewhere.example", 4242, age=3600.0)
    assert build(content, cache, tmp_path / "site") == 0
    err = capsys.readouterr().err
    assert err.count("took over the stale lock") == len(entry_locks(content)), err
    assert lock_files(cache) == []
    assert_same_tree(tmp_path / "site", reference[1])


def test_a_lock_unchanged_for_the_timeout_is_stale_by_the_waiters_own_clock(tmp_path):
    # A fresh heartbeat of another host (its clock may differ): stale only after watching it unchanged.
    path = write_lock(tmp_path, "sae-x", "elsewhere.example", 4242)
    with Locks(tmp_path, stale_after=0.4) as locks:
        assert not locks.try_acquire("sae-x")
        time.sleep(0.2)
        assert not locks.try_acquire("sae-x")
        time.sleep(0.4)
        assert locks.try_acquire("sae-x")
        assert read_holder(path).pid == os.getpid()
    assert not path.exists()


def test_a_live_heartbeat_keeps_the_lock(tmp_path):
    with Locks(tmp_path, heartbeat=0.05) as holder, Locks(tmp_path, stale_after=0.3) as other:
        assert holder.try_acquire("sae-x")
        first = read_holder(holder.path("sae-x"))
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            assert not other.try_acquire("sae-x")
            time.sleep(0.05)
        assert read_holder(holder.path("sae-x")).mtime_ns > first.mtime_ns, "the heartbeat did not touch the lock"
        holder.release("sae-x")
        assert other.try_acquire("sae-x")


def test_a_waiter_uses_the_entry_its_holder_finished(content, reference, tmp_path):
    cache, log, err_path = tmp_path / "cache", tmp_path / "writes.log", tmp_path / "stderr"
    (release,) = load_content(content)
    key = corpus_key(release)
    env = {**os.environ, "ATLAS_WRITE_LOG": str(log)}
    with Locks(cache) as locks, open(err_path, "w") as err:
        assert locks.try_acquire(f"corpus-{key}")  # this process, alive, computes the corpus
        proc = subprocess.Popen(compute_argv(content, cache), cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err)
        try:
            deadline = time.monotonic() + 120
            while "waiting for the corpus" not in err_path.read_text():
                assert proc.poll() is None, err_path.read_text()
                assert time.monotonic() < deadline, "the second process did not wait"
                time.sleep(0.05)
            time.sleep(0.5)
            assert not (cache / "corpus" / key).exists() and not log.exists(), "it computed while the lock was held"
            shutil.copytree(reference[0] / "corpus" / key, cache / "corpus" / key)  # the holder finishes
            locks.release(f"corpus-{key}")
            assert proc.wait(timeout=300) == 0, err_path.read_text()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert f"corpus/{key}" not in writes(log)
    assert build(content, cache, tmp_path / "site", command="render") == 0
    assert_same_tree(tmp_path / "site", reference[1])


# -- a killed holder ------------------------------------------------------------------------------


def test_a_holder_killed_mid_entry_leaves_no_torn_entry_and_the_next_run_completes_it(content, reference, tmp_path, capsys):
    cache = tmp_path / "cache"
    env_log = tmp_path / "writes.log"
    os.environ["ATLAS_WRITE_LOG"] = str(env_log)
    try:
        killed = run_and_kill(compute_argv(content, cache), lambda t: any(done > 0 for _, done in partial_states(cache)))
    finally:
        del os.environ["ATLAS_WRITE_LOG"]
    assert killed, "finished before a checkpoint"
    held = lock_files(cache)
    assert any(name.startswith("sae-") for name in held), f"no SAE lock left by the killed holder: {held}"
    for kind in ("corpus", "sae", "set"):
        for entry in (cache / kind).glob("*"):
            if "." not in entry.name:
                try:
                    read_entry(entry)
                except CorruptEntry as e:
                    pytest.fail(f"torn entry {entry}: {e}")
    assert build(content, cache, tmp_path / "site") == 0
    assert "took over the stale lock" in capsys.readouterr().err
    assert lock_files(cache) == []
    assert not list((cache / "sae").glob("*.partial")) and not list((cache / "sae").glob("*.writing*"))
    assert_same_tree(tmp_path / "site", reference[1])
