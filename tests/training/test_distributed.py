"""Training under torchrun on the CPU (gloo): 2 real processes, test_resnet at 8 px, a few epochs of digits.

What is checked: the collectives of training/distributed.py on hand-made tensors; a 2-process run completes,
both ranks end with the very same weights, its folder has the shape of a one-process run's and its accuracy
is within TOLERANCE of a one-process run with the same global batch; a 2-rank run killed with SIGKILL resumes
on 2 processes and equals the uninterrupted run bit for bit, and on 1 process (another world size) it
finishes with the global batch it started with; errors are one line from rank 0.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

TOLERANCE = 0.15  # |2-process - 1-process| mean test accuracy of the peers after 4 epochs (measured: 0.01-0.06)
TINY = ["--device", "cpu", "--backbone", "test_resnet", "--image-size", "8", "--epochs", "4", "--warmup", "2", "--eval", "digits:test", "-q"]


def _env() -> dict[str, str]:
    # CPU processes and gloo whatever the machine has: the same test on a GPU host (nccl is not tested here)
    return {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "",
            "PYTHONPATH": str(Path(__file__).resolve().parents[2])}  # fmt: skip


def _coreg_edge(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "coreg_edge", *args], capture_output=True, text=True,
                          timeout=600, cwd=cwd, env=env or _env())  # fmt: skip


def _torchrun(script: Path, *args: str, cwd: Path, nproc: int = 2) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc), str(script),
         *args],
        capture_output=True, text=True, timeout=600, cwd=cwd, env=_env(),
    )  # fmt: skip


def _selection(run: Path) -> dict:
    return json.loads((run / "selection.json").read_text())


def _mean_test(run: Path) -> float:
    test = _selection(run)["test_accuracy"]
    return (test["a"] + test["b"]) / 2


@pytest.fixture(scope="module")
def two_runs(digits_annotation, tmp_path_factory):
    """The same training on 1 process and on 2 (auto batch: 32 on one; 16 per process, global 32, on two)."""
    root = tmp_path_factory.mktemp("ddp")
    one = _coreg_edge("train", str(digits_annotation), *TINY, "--out", str(root / "one"), cwd=root)
    assert one.returncode == 0, one.stderr[-3000:]
    two = _coreg_edge("train", str(digits_annotation), *TINY, "--nproc", "2", "--out", str(root / "two"), cwd=root)
    assert two.returncode == 0, two.stderr[-3000:]
    return root / "one", root / "two", two


# --- the collectives, on hand-made tensors in 2 real processes --------------------------------------------

COLLECTIVES = textwrap.dedent(
    """
    import torch, torch.distributed as dist
    from coreg_edge.training.distributed import FollowerExit, Group, joined
    from coreg_edge.errors import UserError

    with joined() as g:
        assert (g.rank, g.world, g.backend) == (int(__import__("os").environ["RANK"]), 2, "gloo")
        for n in (0, 1, 3, 4, 5, 8):
            batch = torch.arange(100, 100 + n)
            mine = g.local(batch)
            # fewer than 2 items per rank: not split (BatchNorm needs 2); else consecutive halves
            assert len(mine) == (n if n < 4 else (n + 1 - g.rank) // 2), (n, mine)
            # every rank computes on its slice; gather gives the whole batch back, in order
            back = g.gather(mine * 10 + g.rank * (n < 4), n)
            assert back.tolist() == (batch * 10).tolist(), (n, back)
            flags = g.gather(mine % 2 == 0, n)
            assert flags.dtype == torch.bool and flags.tolist() == (batch % 2 == 0).tolist()
        # a batch smaller than the world is not split: rank 0's own values reach everyone
        assert g.gather(torch.tensor([float(g.rank)] * 3), 3).tolist() == [0.0] * 3
        bn = torch.nn.BatchNorm1d(2)
        bn.running_mean.fill_(float(g.rank))
        g.average_buffers(bn)
        assert bn.running_mean.tolist() == [0.5, 0.5] and int(bn.num_batches_tracked) == 0
        x = torch.tensor([1.0, 2.0]) * (g.rank + 1)
        g.broadcast_(x)
        assert x.tolist() == [1.0, 2.0]
        assert g.share({"rank": g.rank}) == {"rank": 0} and g.collect(g.rank) == [0, 1]

        def fails_on_every_rank(run, rank0_says):  # rank 0 with its one line, the others quietly (FollowerExit)
            try:
                run()
            except FollowerExit as exc:
                assert g.rank == 1 and exc.quiet and exc.exit_code == 1, exc
            except UserError as exc:
                assert g.rank == 0 and str(exc) == rank0_says, exc
            else:
                raise AssertionError(f"rank {g.rank}: did not fail")

        fails_on_every_rank(lambda: g.decide(lambda: (_ for _ in ()).throw(UserError("bad folder"))), "bad folder")

        def rank_1_alone_fails():  # a block rank 0 runs first: rank 0 names the rank that failed alone
            with g.main_first():
                if g.rank == 1:
                    raise UserError("no such folder")

        fails_on_every_rank(rank_1_alone_fails, "process 1 of 2: no such folder")

        def rank_0_fails_first():
            with g.main_first():
                if g.rank == 0:
                    raise UserError("bad annotation")
                raise AssertionError("rank 1 must not run the block after rank 0 failed")

        fails_on_every_rank(rank_0_fails_first, "bad annotation")
        with g.main_first():
            pass  # and the group still works after both failures
        open(f"ok-{g.rank}", "w").close()  # stdout of two processes interleaves
    """
)


def test_collectives_rebuild_the_global_batch_on_every_rank(tmp_path):
    script = tmp_path / "collectives.py"
    script.write_text(COLLECTIVES)
    result = _torchrun(script, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.glob("ok-*")) == ["ok-0", "ok-1"]


def test_one_process_group_is_the_identity():
    from coreg_edge.training.distributed import Group

    g = Group()
    batch = torch.arange(5)
    assert g.local(batch) is batch and g.gather(batch, 5) is batch and g.share(3) == 3 and g.collect(3) == [3]
    assert g.decide(lambda: 7) == 7 and g.sizes(5) is None


# --- training -----------------------------------------------------------------------------------------------


def test_two_processes_train_one_network_per_peer(two_runs):
    one, two, launch = two_runs
    processes = _selection(two)["processes"]
    assert processes["world_size"] == 2 and processes["backend"] == "gloo"
    assert processes["weights_identical_across_ranks"] is True
    assert processes["global_batch"] == _selection(one)["processes"]["global_batch"] == 32
    assert processes["batch_per_process"] == 16
    assert launch.stderr.count("Error") == 0 and "Traceback" not in launch.stderr


def test_two_process_folder_has_the_one_process_shape(two_runs):
    one, two, _ = two_runs
    assert sorted(p.name for p in one.iterdir()) == sorted(p.name for p in two.iterdir())
    for name in ("config.json", "selection.json"):
        assert set(json.loads((one / name).read_text())) == set(json.loads((two / name).read_text())), name
    lines = [(run / "metrics.jsonl").read_text().splitlines() for run in (one, two)]
    assert len(lines[0]) == len(lines[1]) == 4
    optional = {"guard", "events", "warmup_ended"}  # what the label-free guard did differs from run to run
    assert [set(json.loads(x)) - optional for x in lines[0]] == [set(json.loads(x)) - optional for x in lines[1]]
    # no rank but 0 wrote anything: no stray temporary or lock files beside or inside the run
    assert not [p for p in two.parent.iterdir() if p.name.startswith(".two")]


def test_two_process_accuracy_is_close_to_one_process(two_runs):
    one, two, _ = two_runs
    assert abs(_mean_test(two) - _mean_test(one)) <= TOLERANCE, (_mean_test(one), _mean_test(two))
    assert _mean_test(two) > 0.3  # it learned: 10 classes, chance is 0.1


KILLER = textwrap.dedent(
    """
    import os, signal, sys
    from coreg_edge.training import trainer

    real = trainer.save_checkpoint

    def save(path, epoch, *args, **kwargs):
        real(path, epoch, *args, **kwargs)
        if epoch == int(os.environ.get("KILL_AFTER_EPOCH", "2")):
            os.kill(os.getpid(), signal.SIGKILL)  # rank 0 dies as kill -9 would; torchrun stops rank 1

    trainer.save_checkpoint = save
    sys.argv = ["coreg-edge", *sys.argv[1:]]
    from coreg_edge.cli import main
    main()
    """
)


def _killed_run(digits_annotation, root: Path, name: str) -> Path:
    script = root / "killer.py"
    script.write_text(KILLER)
    out = root / name
    killed = _torchrun(script, "train", str(digits_annotation), *TINY, "--out", str(out), cwd=root)
    assert killed.returncode != 0
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2 and (out / "checkpoint.pt").exists()
    assert not (out / "selection.json").exists()
    return out


def test_a_killed_two_rank_run_resumes_exactly(two_runs, digits_annotation):
    _, two, _ = two_runs
    root = two.parent
    out = _killed_run(digits_annotation, root, "killed")
    resumed = _coreg_edge("train", "--resume", "--out", str(out), "--nproc", "2", "-q", cwd=root)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    for peer in ("peer_a.safetensors", "peer_b.safetensors"):
        assert (out / peer).read_bytes() == (two / peer).read_bytes(), peer
    assert _selection(out)["test_accuracy"] == _selection(two)["test_accuracy"]


def test_a_killed_two_rank_run_resumes_on_one_process(two_runs, digits_annotation):
    root = two_runs[1].parent
    out = _killed_run(digits_annotation, root, "killed-then-one")
    resumed = _coreg_edge("train", "--resume", "--out", str(out), "-q", cwd=root)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    selection, config = _selection(out), json.loads((out / "config.json").read_text())
    assert selection["epochs_trained"] == 4 and len((out / "metrics.jsonl").read_text().splitlines()) == 4
    assert selection["processes"]["world_size"] == 1 and selection["processes"]["global_batch"] == 32
    assert config["world_changes"] == [{"epoch": 2, "world_size": 1, "backend": None, "global_batch": 32,
                                        "batch_per_process": 32}]  # fmt: skip


def test_a_baseline_trains_under_two_processes(digits_annotation, tmp_path):
    """PRODEN's soft targets are rebuilt from every rank's logits, so both ranks stay one network."""
    out = tmp_path / "proden"
    args = ["train", str(digits_annotation), *TINY, "--method", "proden", "--epochs", "2", "--nproc", "2"]
    result = _coreg_edge(*args, "--out", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert _selection(out)["processes"]["weights_identical_across_ranks"] is True


def test_errors_under_two_processes_are_one_line_from_rank_0(two_runs, digits_annotation):
    _, two, _ = two_runs
    again = _coreg_edge("train", str(digits_annotation), *TINY, "--nproc", "2", "--out", str(two), cwd=two.parent)
    assert again.returncode == 1
    lines = [line for line in again.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "already holds a run" in lines[0], again.stderr


def test_nproc_refuses_a_bad_annotation_or_a_used_folder_before_starting_processes(
    runner, cli, digits_annotation, tmp_path, monkeypatch
):
    """The parent checks what rank 0 would refuse first: one line at once, no processes started."""
    from coreg_edge.training import launch

    monkeypatch.setattr(launch, "launch", lambda *args, **kwargs: pytest.fail("processes were started"))
    monkeypatch.setattr(launch, "devices_for_processes", lambda device: (8, "8 CPU cores"))  # any machine
    bad = tmp_path / "bad.npz"
    bad.write_text("not an archive")
    result = runner.invoke(cli, ["train", str(bad), "--nproc", "2", "--out", str(tmp_path / "run")])
    assert result.exit_code != 0 and "not a readable .npz annotation file" in result.output
    used = tmp_path / "used"
    used.mkdir()
    (used / "notes.txt").write_text("mine")
    result = runner.invoke(cli, ["train", str(digits_annotation), "--nproc", "2", "--out", str(used)])
    assert result.exit_code != 0 and "exists and is not a run folder" in result.output
    assert (used / "notes.txt").read_text() == "mine"
    result = runner.invoke(cli, ["train", "--resume", "--nproc", "2", "--out", str(tmp_path / "nothing")])
    assert result.exit_code != 0 and "Error" in result.output


def test_sync_bn_needs_cuda(runner, cli, digits_annotation, tmp_path):
    result = runner.invoke(cli, ["train", str(digits_annotation), *TINY, "--sync-bn", "--out", str(tmp_path / "r")])
    assert result.exit_code != 0 and "--sync-bn needs CUDA" in result.output


def test_worker_arguments_drop_nproc():
    from coreg_edge.training.launch import killed_line, worker_args, worker_threads

    assert killed_line(1, 2, 9, ["train", "a.npz", "--out", "runs/x"]) == (
        "process 1 of 2 was killed (SIGKILL; out of memory?); the finished epochs are saved: "
        "coreg-edge train --resume --out runs/x"
    )
    assert killed_line(0, 4, 15, ["train", "--out=r"]).endswith("--resume --out r")

    assert worker_args(["train", "a.npz", "--nproc", "2", "--out", "r"]) == ["train", "a.npz", "--out", "r"]
    assert worker_args(["train", "--nproc=4", "--resume"]) == ["train", "--resume"]
    assert worker_threads(2, {"OMP_NUM_THREADS": "3"}) == "3" and int(worker_threads(64, {})) >= 1


def test_run_and_demo_refuse_torchrun(runner, cli, monkeypatch, tmp_path):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    result = runner.invoke(cli, ["demo", "--out", str(tmp_path / "demo")])
    assert result.exit_code == 1 and "under torchrun use `coreg-edge train`" in result.output
    assert not (tmp_path / "demo").exists()


def test_workers_stop_when_their_launcher_is_gone(tmp_path):
    """`train --nproc` workers run in their own sessions: a SIGKILLed launcher could not stop them."""
    code = "from coreg_edge.training.launch import watch_launcher; import time; watch_launcher(interval=0.05); time.sleep(3)"
    orphan = subprocess.run([sys.executable, "-c", code], env={**_env(), "COREG_EDGE_LAUNCHER_PID": "0"}, timeout=60)
    assert orphan.returncode == -9  # its "launcher" (pid 0) is not its parent: it stops at once
    child = subprocess.run([sys.executable, "-c", code.replace("sleep(3)", "sleep(0.3)")],
                           env={**_env(), "COREG_EDGE_LAUNCHER_PID": str(os.getpid())}, timeout=60)  # fmt: skip
    assert child.returncode == 0  # its launcher (this test) lives on


def test_nproc_is_bounded_by_devices(runner, cli, digits_annotation, tmp_path, monkeypatch):
    """`--nproc 1000` on 2 cores started a thousand workers that never met: one line, nothing started."""
    from coreg_edge.training import launch

    real_launch = launch.launch
    monkeypatch.setattr(launch, "launch", lambda *args, **kwargs: pytest.fail("processes were started"))
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    out = tmp_path / "run"
    result = runner.invoke(cli, ["train", str(digits_annotation), "--device", "cpu", "--nproc", "1000", "--out", str(out)])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 1 and lines == [
        "Error: --nproc 1000: this machine has 2 CPU cores (gloo), one process each; use --nproc 2 or fewer"
    ], result.output
    assert not out.exists()
    # CUDA: one process per GPU
    import coreg_edge.utils

    monkeypatch.setattr(coreg_edge.utils, "resolve_device", lambda device: "cuda")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(launch.UserError, match=r"^--nproc 2: this machine has 1 GPU, one process each; drop --nproc"):
        launch.check_nproc(2, "cuda")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    launch.check_nproc(4, "cuda")
    with pytest.raises(launch.UserError, match="has 4 GPUs"):
        real_launch(5, ["train"], "cuda")  # the launcher itself refuses too


def _dead(pid: int) -> bool:
    """Gone, or a zombie no one reaped yet (a container's first process may never reap)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError):
        return True


def _wait_dead(pid: int, seconds: float = 10) -> bool:
    import time

    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if _dead(pid):
            return True
        time.sleep(0.05)
    return False


def _kill_if_alive(pid: int) -> None:
    import signal

    if not _dead(pid):
        os.kill(pid, signal.SIGKILL)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_workers_die_with_a_launcher_killed_while_starting_them(tmp_path):
    """A launcher killed with SIGKILL (while it still starts workers) left them running: the worker's boot
    arms the kernel's parent-death signal before it imports the CLI, so the kernel kills it at once."""
    launcher = textwrap.dedent(
        """
        import os, subprocess, sys, time
        from coreg_edge.training.launch import LAUNCHER_PID, WORKER_BOOT
        # the real boot, up to where it would run the CLI; then the worker stays busy
        boot = WORKER_BOOT.split("import runpy")[0] + (
            "import sys, time; print('cli imported' if 'coreg_edge.cli' in sys.modules else 'armed', flush=True);"
            "time.sleep(60)")
        worker = subprocess.Popen([sys.executable, "-c", boot], env={**os.environ, LAUNCHER_PID: str(os.getpid())},
                                  start_new_session=True, stdout=subprocess.PIPE, text=True)  # as torch starts it
        print(worker.pid, worker.stdout.readline().strip(), flush=True)
        time.sleep(60)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", launcher], stdout=subprocess.PIPE, text=True, env=_env(),
                            cwd=tmp_path)  # fmt: skip
    worker = None
    try:
        pid, state = proc.stdout.readline().split()
        worker = int(pid)
        assert state == "armed" and not _dead(worker)
        proc.kill()  # SIGKILL: the launcher cannot stop anything
        proc.wait(timeout=30)
        assert _wait_dead(worker), "the worker outlived its launcher"
    finally:
        proc.kill()
        if worker is not None:
            _kill_if_alive(worker)


def test_a_stopped_worker_takes_its_own_children(tmp_path):
    """A worker that stops because its launcher is gone stops what it started too (its process group)."""
    code = textwrap.dedent(
        """
        import subprocess, time
        child = subprocess.Popen(["sleep", "60"])
        print(child.pid, flush=True)
        from coreg_edge.training.launch import watch_launcher
        watch_launcher(interval=0.05)
        time.sleep(10)
        """
    )
    # its "launcher" (pid 0) is not its parent: it stops at once; in its own session, as torch starts workers
    worker = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, start_new_session=True,
                              env={**_env(), "COREG_EDGE_LAUNCHER_PID": "0"})  # fmt: skip
    child = None
    try:
        child = int(worker.stdout.readline())
        assert worker.wait(timeout=30) == -9
        assert _wait_dead(child, 5), "the worker's child outlived it"
    finally:
        worker.kill()
        if child is not None:
            _kill_if_alive(child)


def test_a_lost_process_is_told_apart_from_a_bug():
    from coreg_edge.training.trainer import _lost_a_process

    assert _lost_a_process(RuntimeError("[../gloo/transport/tcp/pair.cc:561] Connection closed by peer [127.0.0.1]"))
    assert _lost_a_process(torch.distributed.DistBackendError("NCCL communicator was aborted"))
    assert not _lost_a_process(RuntimeError("mat1 and mat2 shapes cannot be multiplied (4x3 and 5x2)"))
