"""cutmix-writer write under SIGTERM and SIGKILL: one line, no orphan workers, no temp copies left."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from test_writer_cli import ok, run

from writer.pipeline import interrupts
from writer.pipeline.scratch import Scratch, sweep_stale


def _start(cifar_root: Path, out: Path, tmpdir: Path) -> subprocess.Popen:
    # Many epochs of a tiny source: the write runs far longer than the test waits.
    args = ["--source", f"cifar10:{cifar_root}", "--batch-size", "16", "--epochs", "5000",
            "--size-limit", "300000", "--workers", "2", "--no-progress"]
    env = {**os.environ, "TMPDIR": str(tmpdir)}
    return subprocess.Popen([sys.executable, "-m", "writer.cli", "write", "--out", str(out), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)


def test_a_write_with_workers_runs_under_a_tmpdir_too_long_for_a_socket(tmp_path: Path) -> None:
    """The fork server's socket path (TMPDIR/pymp-…/listener-…) caps at 107 bytes: under a longer
    TMPDIR the write still runs (the socket goes to /tmp) and its own files stay in TMPDIR."""
    tmpdir = tmp_path / ("t" * max(1, 90 - len(str(tmp_path))))
    tmpdir.mkdir()
    assert len(str(tmpdir)) + len("/pymp-XXXXXXXX/listener-XXXXXXXX") > 107
    env = {**os.environ, "TMPDIR": str(tmpdir)}
    result = subprocess.run(
        [sys.executable, "-m", "writer.cli", "write", "--source", "digits", "--split", "test",
         "--out", str(tmp_path / "out"), "--workers", "2", "--no-progress"],
        capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "out" / "index.json").is_file()


def _wait_for_workers(proc: subprocess.Popen, out: Path) -> list[psutil.Process]:
    """Wait until the pool runs and a shard is published; return the writer's descendants."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        children = psutil.Process(proc.pid).children(recursive=True)
        journal = out / ".cutmix-staging" / "journal.jsonl"
        finished = journal.read_text().count("\n") - 1 if journal.exists() else 0
        if len(children) >= 3 and finished >= 1:  # server, tracker, workers; a shard staged
            return children
        time.sleep(0.05)
    pytest.fail("the writer never started its workers")


def _gone(processes: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    _, alive = psutil.wait_procs(processes, timeout=timeout)
    return [p for p in alive if p.status() != psutil.STATUS_ZOMBIE]


def _ours(tmpdir: Path) -> list[str]:
    return sorted(p.name for p in tmpdir.iterdir() if p.name.startswith("cutmix-"))


def test_sigterm_stops_cleanly_like_ctrl_c(cifar_root: Path, tmp_path: Path) -> None:
    tmpdir, out = tmp_path / "tmp", tmp_path / "out"
    tmpdir.mkdir()
    proc = _start(cifar_root, out, tmpdir)
    try:
        children = _wait_for_workers(proc, out)
        assert _ours(tmpdir), "the workers' source copy should exist while they run"
        proc.send_signal(signal.SIGTERM)
        began = time.monotonic()
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert time.monotonic() - began < 60
    assert proc.returncode == 128 + signal.SIGTERM
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines[0].startswith("writing 500,000 samples x ") and "GB" in lines[0], stderr  # its size
    lines = lines[1:]
    assert len(lines) == 1 and "SIGTERM" in lines[0] and "Traceback" not in stderr, stderr
    assert _gone(children, timeout=20) == []
    assert _ours(tmpdir) == []
    assert _published(out) == [], "nothing is published before the whole dataset is staged"
    assert "holds no dataset" in lines[0] and "rerun the same command to resume" in lines[0], lines[0]
    assert list((out / ".cutmix-staging").glob("shard.*.mds")), "finished shards are kept for a resume"


def _published(out: Path) -> list[str]:
    """What OUT holds besides a write's staging and claim."""
    return sorted(p.name for p in out.iterdir() if p.name not in (".cutmix-staging", ".cutmix-claim.json"))


@pytest.mark.parametrize("after", [0, 2])
def test_an_interrupt_during_the_commit_is_held_until_the_new_dataset_is_whole(
        cifar_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, after: int) -> None:
    # Ctrl-C arriving while the commit moves the staged shards into OUT: held until the last
    # file (index.json) is in, so OUT holds the whole new dataset, and the message says so.
    real, moved = os.replace, []

    def replace_then_interrupt(src: str, dst: str) -> None:
        real(src, dst)
        if Path(dst).name.startswith("shard.") and Path(dst).parent.name == "out":
            moved.append(dst)
            if len(moved) == after + 1:
                os.kill(os.getpid(), signal.SIGINT)  # its handler runs at the next Python call

    out = tmp_path / "out"
    ok("write", "--source", f"cifar10:{cifar_root}", "--out", out, "--batch-size", "16")
    monkeypatch.setattr("writer.publish.store.os.replace", replace_then_interrupt)
    result = run("write", "--source", f"cifar10:{cifar_root}", "--out", out, "--overwrite",
                 "--batch-size", "16", "--epochs", "3", "--size-limit", "20000")
    monkeypatch.undo()
    assert len(moved) > after and result.exit_code == 128 + signal.SIGINT, result.output
    assert "interrupted by SIGINT" in result.output and "holds the new dataset" in result.output
    assert "OK" in ok("verify", out, "--no-progress").output
    assert json.loads((out / "cutmix_manifest.json").read_text())["args"]["epochs"] == 3
    assert not (out / ".cutmix-staging").exists()


def test_sigkill_leaves_no_workers_and_the_next_run_sweeps_the_copy(cifar_root: Path,
                                                                   tmp_path: Path) -> None:
    tmpdir, out = tmp_path / "tmp", tmp_path / "out"
    tmpdir.mkdir()
    proc = _start(cifar_root, out, tmpdir)
    try:
        children = _wait_for_workers(proc, out)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        assert _gone(children, timeout=20) == [], "workers must die with the writer"
        proc.communicate(timeout=20)  # EOF: no orphan holds the writer's stdout or stderr
    finally:
        proc.kill()
    assert [n for n in _ours(tmpdir) if n.startswith("cutmix-writer-src-")], "nothing to sweep?"
    assert sweep_stale(str(tmpdir))
    assert _ours(tmpdir) == []


def test_sweep_keeps_a_live_scratch_and_removes_a_dead_one(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    live = Scratch("cutmix-writer-src-")
    code = ("from writer.pipeline.scratch import Scratch; import os; "
            "s = Scratch('cutmix-writer-stage-'); print(s.path); os._exit(0)")
    dead = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "TMPDIR": str(tmp_path)}, check=True).stdout.strip()
    assert Path(dead).is_dir()
    assert sweep_stale(str(tmp_path)) == [dead]
    assert Path(live.path).is_dir() and not Path(dead).exists()
    live.close()
    assert not Path(live.path).exists()


def test_a_write_sweeps_stale_copies_first(cifar_root: Path, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    code = ("from writer.pipeline.scratch import Scratch; import os; "
            "s = Scratch('cutmix-writer-src-'); print(s.path); os._exit(0)")
    dead = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "TMPDIR": str(tmp_path)}, check=True).stdout.strip()
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    ok("write", "--source", f"cifar10:{cifar_root}", "--out", tmp_path / "out")
    assert not Path(dead).exists()


def _spin() -> int:
    total = 0
    for i in range(1000):  # Python calls and jumps, where a pending signal handler runs
        total += abs(i)
    return total


@pytest.mark.parametrize(("signum", "kind"), [(signal.SIGINT, KeyboardInterrupt),
                                              (signal.SIGTERM, interrupts.Terminated)])
def test_an_interrupt_inside_held_is_raised_when_the_block_ends(signum: int, kind: type) -> None:
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    finished = []
    with interrupts.handling():
        with pytest.raises(kind):
            with interrupts.held():
                os.kill(os.getpid(), signum)
                _spin()
                finished.append(True)
        assert finished == [True], "the block ran to its end before the interrupt"
        if signum == signal.SIGINT:
            with pytest.raises(KeyboardInterrupt):  # outside held(), at once
                os.kill(os.getpid(), signum)
                _spin()
                finished.append(False)
        else:  # a second SIGTERM is ignored: it must not cut the clean-up short
            os.kill(os.getpid(), signum)
            _spin()
        assert finished == [True]
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_an_interrupt_inside_submit_waits_until_the_job_is_queued(
        cifar_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Raised inside ProcessPoolExecutor.submit, between recording a job and queueing it, the
    # interrupt left a job the pool's shutdown waited for forever.
    from concurrent.futures import ProcessPoolExecutor

    real, calls = ProcessPoolExecutor.submit, []

    def submit_interrupted(self: ProcessPoolExecutor, *args: object) -> object:
        calls.append("called")
        if calls.count("called") == 3:
            os.kill(os.getpid(), signal.SIGINT)  # its handler runs at the next Python call
        future = real(self, *args)
        calls.append("queued")
        return future

    out = tmp_path / "out"
    monkeypatch.setattr(ProcessPoolExecutor, "submit", submit_interrupted)
    result = run("write", "--source", f"cifar10:{cifar_root}", "--out", out, "--batch-size", "16",
                 "--epochs", "20", "--size-limit", "20000", "--workers", "2")
    monkeypatch.undo()
    assert result.exit_code == 128 + signal.SIGINT, (result.output, calls)
    assert calls[:6] == ["called", "queued"] * 3, calls  # the third job went in before it stopped
    assert "interrupted by SIGINT" in result.output
    assert _published(out) == [], "nothing is published before the whole dataset is staged"
