"""One launcher per run folder (issue 14 item 3): a second identical command while the first runs is
refused with one line naming it; a lock its launcher could not remove is taken over when stale.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from sagips import checkpoints as ck
from sagips.errors import ConfigError
from sagips.launch.lock import Owner, lock_path, process_state, read_owner, run_lock
from tests.conftest import needs_mpi, run_sagips, summary

DEAD = object()  # a pid that has ended
ZOMBIE = object()  # a pid that has ended and that its parent has not reaped
_zombies: list[subprocess.Popen] = []  # kept unreaped until the end of the session


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def zombie_pid() -> int:
    """What a launcher killed with its parent leaves where the container's init does not reap."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    _zombies.append(proc)
    while process_state(proc.pid) != "Z":
        time.sleep(0.01)
    return proc.pid


def leave_lock(run_dir, **fields) -> None:
    owner = dict(pid=os.getpid(), host=socket.gethostname(), slurm_job="", started=time.time()) | fields
    lock_path(run_dir).write_text(json.dumps(owner))


def test_the_lock_names_its_launcher_while_held_and_goes_after(tmp_path):
    with run_lock(tmp_path) as me:
        assert read_owner(tmp_path) == me and me.pid == os.getpid()
        with pytest.raises(ConfigError) as refused, run_lock(tmp_path):
            pass
        assert f"in use by another sagips (pid {me.pid} on {me.host}" in str(refused.value)
    assert not lock_path(tmp_path).exists()
    assert [p.name for p in tmp_path.iterdir()] == []  # no temporary left either


@pytest.mark.parametrize("fields,taken", [
    ({"pid": DEAD}, "dead pid on this host"),
    ({"pid": ZOMBIE}, "a zombie on this host (issue 12 CI: a killed sweep's job)"),
    ({"host": "elsewhere", "slurm_job": "77"}, "this Slurm job, requeued"),
    ({"pid": DEAD, "host": "elsewhere"}, None),  # another host: its pid says nothing here
    ({}, None),  # this process: alive
])  # fmt: skip
def test_a_stale_lock_is_taken_over_and_a_live_one_refused(tmp_path, monkeypatch, fields, taken):
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    made = {DEAD: dead_pid, ZOMBIE: zombie_pid}
    leave_lock(tmp_path, **{k: (made[v]() if v in made else v) for k, v in fields.items()})
    if taken:
        with run_lock(tmp_path) as me:
            assert read_owner(tmp_path) == me, taken
    else:
        with pytest.raises(ConfigError), run_lock(tmp_path):
            pass
        assert lock_path(tmp_path).exists()  # the other launcher's lock stays


def test_an_unreadable_lock_is_replaced(tmp_path):
    lock_path(tmp_path).write_text("")
    with run_lock(tmp_path) as me:
        assert read_owner(tmp_path) == me


def test_a_lock_taken_over_meanwhile_is_left_to_its_new_owner(tmp_path):
    with run_lock(tmp_path):
        leave_lock(tmp_path, pid=1, started=0.0)
    assert read_owner(tmp_path) == Owner(1, socket.gethostname(), "", 0.0)


@needs_mpi
def test_a_second_identical_command_is_refused_while_the_first_runs(tmp_path):
    args = ("scale=smoke", "ranks=2", "mode=arar", "train.epochs=40", "train.straggler.ms=50",
            "train.straggler.ranks=[0]")  # fmt: skip
    run = tmp_path / "outputs" / "mode=arar,ranks=2,scale=smoke"
    with (tmp_path / "first.log").open("w") as log:
        first = subprocess.Popen([sys.executable, "-m", "sagips", *args], cwd=tmp_path, stderr=log)
    try:
        deadline = time.monotonic() + 240
        while not ck.generator_path(run, 1, 1).exists():  # training has started
            assert first.poll() is None and time.monotonic() < deadline, (tmp_path / "first.log").read_text()
            time.sleep(0.1)
        second = run_sagips(*args, cwd=tmp_path)
        assert first.poll() is None, "the first job ended before the second was tried"
    finally:
        rc = first.wait(timeout=300)
    assert second.returncode == 2
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sagips: error: hydra.run.dir="), second.stderr
    assert f"in use by another sagips (pid {first.pid} on {socket.gethostname()}" in lines[0]
    assert rc == 0, (tmp_path / "first.log").read_text()[-3000:]
    s = summary(run)
    assert (s["status"], s["epochs"], s["resumed_from_epoch"]) == ("complete", 40, 0)
    assert s["total_train_time_s"] >= 40 * 0.05  # the first's own time, not cut short by a "resume"
    assert not lock_path(run).exists()
