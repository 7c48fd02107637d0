"""One writer per run directory: the lock file alone (refusal naming the holder, stale holders taken
over by dead pid or by old heartbeat, the heartbeat, release on every way out), then real drivers: a
second ``evosearch run RUN --resume`` beside a running search is refused and changes nothing, and a
driver killed with ``kill -9`` leaves a lock that ``--resume`` takes over."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import cli_error, records, wait_for, write_config

from evosearch.errors import EvosearchError
from evosearch.runner.lock import RERANK, RunLock, RunLockedError, lock_file
from evosearch.runner.ray_cluster import LOOPBACK_ENV

os.environ[LOOPBACK_ENV] = "0"  # Ray on 127.0.0.1 (the driver also pins it)

HOLD_LOCK = """
import sys, time
from evosearch.runner.lock import RunLock
with RunLock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def hold_in_child(run_dir: Path, seconds: float = 60.0) -> subprocess.Popen:
    """Another process holding the lock of ``run_dir`` (once it has printed 'held')."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(run_dir), str(seconds)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline() == "held\n"
    return proc


def foreign_lock(run_dir: Path, heartbeat_age_s: float, **fields: object) -> Path:
    """A lock file as a holder on another machine left it, its last heartbeat ``heartbeat_age_s`` ago."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = lock_file(run_dir)
    holder = {
        "host": "node-elsewhere",
        "boot_id": "another-boot",
        "pid": 4242,
        "started": time.time() - 3600,
        "stale_after_s": 120.0,
        "token": "theirs",
        **fields,
    }
    path.write_text(json.dumps(holder))
    then = time.time() - heartbeat_age_s
    os.utime(path, (then, then))
    return path


def test_a_second_holder_is_refused_with_host_pid_and_since(tmp_path):
    run_dir = tmp_path / "run"
    child = hold_in_child(run_dir)
    try:
        before = lock_file(run_dir).read_bytes()
        with pytest.raises(RunLockedError) as refused:
            RunLock(run_dir).acquire()
        message = str(refused.value)
        assert f"pid {child.pid} on host {socket.gethostname()} since " in message and " UTC" in message
        assert "\n" not in message and lock_file(run_dir).read_bytes() == before  # the holder's, untouched
        assert sorted(p.name for p in run_dir.iterdir()) == ["driver.lock"]  # no temporary left behind
        (tmp_path / "alias").symlink_to(run_dir)
        with pytest.raises(RunLockedError, match=f"in use by pid {child.pid}"):
            RunLock(tmp_path / "alias").acquire()  # the lock is in the directory, whatever its name
        with RunLock(run_dir, RERANK):  # another purpose is another lock
            pass
    finally:
        child.kill()
        child.wait()


def test_a_lock_whose_process_is_gone_is_taken_over_at_once_with_a_notice(tmp_path):
    run_dir = tmp_path / "run"
    crashed = subprocess.run(
        [sys.executable, "-c", "import os, sys\nfrom evosearch.runner.lock import RunLock\n"
         "RunLock(sys.argv[1]).acquire()\nos._exit(0)", str(run_dir)],
        check=True,
    )  # fmt: skip
    assert crashed.returncode == 0 and lock_file(run_dir).is_file()  # left behind, heartbeat fresh
    dead_pid = json.loads(lock_file(run_dir).read_text())["pid"]
    notices: list[str] = []
    with RunLock(run_dir, notify=notices.append) as lock:
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()
    (notice,) = notices
    assert f"taking over the stale driver.lock of pid {dead_pid} on host " in notice
    assert notice.endswith("its process no longer exists")


def test_another_machines_lock_is_refused_while_its_heartbeat_is_fresh_and_taken_over_after(tmp_path):
    run_dir = tmp_path / "run"
    foreign_lock(run_dir, heartbeat_age_s=30)  # pid 4242 need not exist here: it runs elsewhere
    with pytest.raises(RunLockedError, match=r"in use by pid 4242 on host node-elsewhere since .* 30 s ago"):
        RunLock(run_dir).acquire()
    foreign_lock(run_dir, heartbeat_age_s=600)
    notices: list[str] = []
    with RunLock(run_dir, notify=notices.append):
        assert json.loads(lock_file(run_dir).read_text())["host"] == socket.gethostname()
    assert len(notices) == 1 and "pid 4242 on host node-elsewhere" in notices[0]
    assert "no heartbeat for 600 s (stale after 120 s)" in notices[0]


def test_the_holders_timeout_decides_and_a_garbage_lock_file_is_judged_by_its_age(tmp_path):
    run_dir = tmp_path / "run"
    foreign_lock(run_dir, heartbeat_age_s=600, stale_after_s=3600.0)  # its holder chose a long timeout
    with pytest.raises(RunLockedError, match="after 3600 s without a heartbeat"):
        RunLock(run_dir, stale_after_s=60).acquire()
    foreign_lock(run_dir, heartbeat_age_s=0, host="evil\x1b[2J" * 20)  # shown bounded, escaped
    with pytest.raises(RunLockedError, match=r"on host evil\\x1b\[2Jevil") as refused:
        RunLock(run_dir).acquire()
    assert "\x1b" not in str(refused.value) and len(str(refused.value)) < 500
    path = foreign_lock(run_dir, heartbeat_age_s=0)
    path.write_bytes(b"[" * 4000)  # nesting deeper than the parser's recursion
    with pytest.raises(RunLockedError, match="in use by an unknown process"):
        RunLock(run_dir).acquire()
    path.write_bytes(b"\x1b[2J not json " * 1000)
    with pytest.raises(RunLockedError, match="in use by an unknown process") as refused:
        RunLock(run_dir).acquire()
    assert "\x1b" not in str(refused.value) and len(str(refused.value)) < 500
    then = time.time() - 600
    os.utime(path, (then, then))
    notices: list[str] = []
    with RunLock(run_dir, notify=notices.append):
        pass
    assert len(notices) == 1 and "stale driver.lock of an unreadable lock file: no heartbeat" in notices[0]


@pytest.mark.parametrize(
    "field",
    [{"stale_after_s": float("nan")}, {"pid": -1}, {"pid": True}, {"extra": 1}, {"started": 1e300}],
)
def test_a_lock_file_with_fields_out_of_place_is_unreadable_and_judged_by_its_age(tmp_path, field):
    run_dir = tmp_path / "run"
    foreign_lock(run_dir, heartbeat_age_s=0, host=socket.gethostname(), **field)
    with pytest.raises(RunLockedError, match="in use by an unknown process"):
        RunLock(run_dir).acquire()
    foreign_lock(run_dir, heartbeat_age_s=600, **field)
    with RunLock(run_dir, notify=lambda line: None):
        pass


@pytest.mark.parametrize("value", ["5", ".nan", ".inf", "-1"])
def test_the_lock_timeout_is_a_finite_number_of_seconds_not_below_ten(capsys, value):
    assert "error: resources.lock_timeout_s must be " in cli_error(
        capsys, "config", "--set", f"resources.lock_timeout_s={value}"
    )


def test_the_heartbeat_refreshes_the_lock_files_time(tmp_path):
    with RunLock(tmp_path / "run", stale_after_s=0.6) as lock:  # a beat every 0.1 s
        long_ago = time.time() - 100
        os.utime(lock.path, (long_ago, long_ago))
        wait_for(lambda: time.time() - lock.path.stat().st_mtime < 5, 5, "a heartbeat")
        assert not lock.lost


def test_a_lock_taken_over_is_reported_lost_and_not_removed_by_its_former_holder(tmp_path):
    run_dir = tmp_path / "run"
    notices: list[str] = []
    with RunLock(run_dir, stale_after_s=0.6, notify=notices.append) as lock:
        successor = foreign_lock(run_dir, heartbeat_age_s=0)  # as if taken over while this one stalled
        wait_for(lambda: lock.lost, 5, "the loss to be noticed")
    assert successor.is_file() and json.loads(successor.read_text())["token"] == "theirs"
    assert len(notices) == 1 and "lost driver.lock" in notices[0]


def test_released_on_exit_and_on_exception_with_the_directories_it_created(tmp_path):
    run_dir = tmp_path / "runs" / "new"
    with RunLock(run_dir) as lock:
        assert lock.path.is_file()
    assert not (tmp_path / "runs").exists()  # taking a lock leaves no trace
    run_dir.mkdir(parents=True)
    with pytest.raises(ZeroDivisionError), RunLock(run_dir):
        1 / 0  # noqa: B018
    assert run_dir.is_dir() and not any(run_dir.iterdir())  # it existed before: kept, emptied


def test_released_when_the_holder_gets_sigterm(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    child = hold_in_child(run_dir)
    child.send_signal(signal.SIGTERM)
    assert child.wait(timeout=30) == 128 + signal.SIGTERM
    assert not lock_file(run_dir).exists()


@pytest.mark.parametrize("make_blocker", ["file", "nul"])
def test_a_run_directory_that_cannot_hold_a_lock_is_one_clear_error(tmp_path, make_blocker):
    if make_blocker == "file":
        (tmp_path / "runs").write_text("a file where the output directory should be")
        run_dir = tmp_path / "runs" / "run"
    else:
        run_dir = tmp_path / "ru\0n"
    with pytest.raises(EvosearchError, match="cannot lock ") as failed:
        RunLock(run_dir).acquire()
    message = str(failed.value)
    assert not isinstance(failed.value, RunLockedError) and message.isprintable()


# ---- real drivers -------------------------------------------------------------------------------


def start_search(config: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "evosearch.cli", "run", str(config), "--quiet"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def resume(run_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "evosearch.cli", "run", str(run_dir), "--resume", "--quiet"],
        capture_output=True,
        text=True,
        timeout=300,
    )


def first_record(run_dir: Path) -> bool:
    events = run_dir / "events.jsonl"
    return events.is_file() and bool(events.read_text().strip())


def test_a_second_driver_on_a_running_search_is_refused_and_writes_nothing(tmp_path):
    run_dir = tmp_path / "runs" / "busy"
    proc = start_search(write_config(tmp_path, "busy", evaluations=3, concurrency=1, steps=60))
    try:
        wait_for(lambda: first_record(run_dir), 180, "a first record")
        second = resume(run_dir)
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert second.returncode == 1, second.stderr
    assert second.stderr.startswith("evosearch: error: ") and second.stderr.count("\n") == 1
    assert f"in use by pid {proc.pid} on host {socket.gethostname()} since " in second.stderr
    assert proc.returncode == 0, err
    events = records(run_dir)
    assert sorted(e["id"] for e in events) == list(range(len(events)))  # no id written twice
    assert sum(e["status"] in ("trained", "hurdle", "failed") for e in events) == 3  # the budget, once
    assert not lock_file(run_dir).exists()


def test_a_driver_killed_with_sigkill_leaves_a_lock_that_resume_takes_over(tmp_path):
    run_dir = tmp_path / "runs" / "killed"
    proc = start_search(write_config(tmp_path, "killed", evaluations=3, concurrency=1, steps=60))
    try:
        wait_for(lambda: first_record(run_dir), 180, "a first record")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and its local Ray, mid-run
        proc.wait()
    assert json.loads(lock_file(run_dir).read_text())["pid"] == proc.pid
    done = records(run_dir)
    resumed = resume(run_dir)
    assert resumed.returncode == 0, resumed.stderr
    assert f"taking over the stale driver.lock of pid {proc.pid} on host " in resumed.stderr
    assert "its process no longer exists" in resumed.stderr
    events = records(run_dir)
    assert events[: len(done)] == done and sorted(e["id"] for e in events) == list(range(len(events)))
    assert sum(e["status"] in ("trained", "hurdle", "failed") for e in events) == 3
    assert not lock_file(run_dir).exists()
