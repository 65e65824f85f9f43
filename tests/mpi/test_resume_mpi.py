#!/usr/bin/python3
"""Runs that survive a cluster, several ranks: exact resume on 2 ranks, elastic resume 2 -> 1 ranks against a measured
noise floor, the NaN guard with a NaN injected on one rank, and the stop signals (configurable, a second one at once)."""
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "common"))
import mpirun  # noqa: E402  (tests/common/mpirun.py)
from gt_test import check, checkpoint_tensors, script_main  # noqa: E402  (tests/common/gt_test.py)


class Job:
    def __init__(self, args, tmp):
        self.exe, self.mpirun, self.src, self.tmp = args.exe, args.mpirun, args.source, tmp
        self.tiny = os.path.join(self.src, "config/tiny.yaml")
        self.runs = os.path.join(tmp, "runs")

    def train_args(self, name, steps, *overrides):
        return [self.exe, "train", "--config", self.tiny, f"run.out_dir={self.runs}", f"run.name={name}",
                f"train.max_steps={steps}", "log.every_steps=1", "log.sample_every_steps=0", "checkpoint.every_steps=5",
                "checkpoint.keep_last=0", "run.threads=1", *overrides]

    def train(self, np, name, steps, *overrides, env=None, timeout=120):
        cmd = self.train_args(name, steps, *overrides)
        if np > 1:
            cmd = mpirun.command(self.mpirun, np, *[a for k in (env or {}) for a in ("-x", k)], *cmd)
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              env=mpirun.environment(**(env or {})))

    def ckpt(self, name, step):
        return os.path.join(self.runs, name, "checkpoints", f"ckpt_{step:08d}.h5")

    def checkpoints(self, name):
        return sorted(f for f in os.listdir(os.path.join(self.runs, name, "checkpoints")) if f.endswith(".h5"))

    def metrics_steps(self, name):
        import json
        return [json.loads(line)["step"] for line in open(os.path.join(self.runs, name, "metrics.jsonl"))]


def max_relative_difference(a_path, b_path):
    """max over parameters and buffers of max|a - b| / max|a|."""
    import numpy as np
    a, b = checkpoint_tensors(a_path), checkpoint_tensors(b_path)
    worst = 0.0
    for k in a:
        if "/params/" in k and a[k].dtype.kind == "f" and a[k].size:
            worst = max(worst, float(np.abs(a[k] - b[k]).max() / max(float(np.abs(a[k]).max()), 1e-30)))
    return worst


def identical(a_path, b_path):
    a, b = checkpoint_tensors(a_path), checkpoint_tensors(b_path)
    return sorted(a) == sorted(b) and all(a[k].tobytes() == b[k].tobytes() for k in a)


def case_exact_resume_np2(job):
    """2 ranks: 40 steps straight and 20 + SIGUSR1 stop + resume to 40 give bit-identical checkpoints."""
    r = job.train(2, "straight", 40)
    check(r.returncode == 0, f"straight: {r.stderr}")
    r = job.train(2, "halves", 20)
    check(r.returncode == 0, f"first half: {r.stderr}")
    r = job.train(2, "halves", 40)
    check(r.returncode == 0 and "at step 20 of 40" in r.stdout.splitlines()[0], f"second half: {r.stdout}{r.stderr}")
    check(identical(job.ckpt("straight", 40), job.ckpt("halves", 40)), "2 ranks, 20 + 20: checkpoints differ")
    check(job.metrics_steps("halves") == list(range(1, 41)), f"metrics steps {job.metrics_steps('halves')}")
    # SIGUSR1 on rank 1 alone during step 13 (sent by the process to itself, so the moment is known): both ranks
    # stop after it, then the same command.
    r = job.train(2, "sig", 40, "checkpoint.every_steps=0", env={"GANTRAIN_TEST_FAULT": "1:12:sigusr1"})
    check(r.returncode == 3, f"exit {r.returncode} after SIGUSR1 on rank 1: {r.stderr}")
    check(job.checkpoints("sig") == ["ckpt_00000013.h5"], f"{job.checkpoints('sig')}")
    r = job.train(2, "sig", 40, "checkpoint.every_steps=0")
    check(r.returncode == 0 and "at step 13 of 40" in r.stdout.splitlines()[0], f"resume: {r.stdout}{r.stderr}")
    check(identical(job.ckpt("straight", 40), job.ckpt("sig", 40)), "2 ranks, stopped by SIGUSR1: checkpoints differ")
    check(job.metrics_steps("sig") == list(range(1, 41)), f"metrics steps {job.metrics_steps('sig')}")
    print("2 ranks: 20 + 20 and a SIGUSR1 stop on rank 1 after step 13 + resume: bit-identical to 40 straight")


def case_elastic_np2_np1(job):
    """A 2-rank run resumed on 1 rank (the same global batch) follows the 2-rank trajectory to float rounding: after
    10 more steps it is as close to the uninterrupted 2-rank run as 1 vs 2 OpenMP threads in one process are to each
    other over the same 10 steps."""
    r = job.train(2, "np2", 30)
    check(r.returncode == 0, r.stderr)
    r = job.train(2, "elastic", 20)
    check(r.returncode == 0, r.stderr)
    r = job.train(1, "elastic", 30)
    check(r.returncode == 0, f"elastic resume: {r.stdout}{r.stderr}")
    check("elastic resume: the checkpoint was written by 2 ranks, this run has 1" in r.stdout, r.stdout)
    elastic = max_relative_difference(job.ckpt("np2", 30), job.ckpt("elastic", 30))
    # The noise floor: one process, from the same checkpoint, 1 thread against 2 threads.
    start = job.ckpt("np2", 20)
    for threads in (1, 2):
        r = job.train(1, f"threads{threads}", 30, f"checkpoint.resume={start}", f"run.threads={threads}")
        check(r.returncode == 0, r.stderr)
    floor = max_relative_difference(job.ckpt("threads1", 30), job.ckpt("threads2", 30))
    check(floor > 0, "1 and 2 threads gave identical bits: no noise floor to compare with")
    check(elastic <= 20 * floor, f"elastic resume differs by {elastic:.3g} relative, the 1-vs-2-thread floor is {floor:.3g}")
    print(f"elastic 2 -> 1 ranks: {elastic:.3g} relative after 10 steps; 1 vs 2 threads: {floor:.3g} "
          f"(ratio {elastic / floor:.2f}, bound 20)")
    # 1 -> 2 ranks works too.
    r = job.train(2, "threads1", 40)
    check(r.returncode == 0 and "this run has 2" in r.stdout, f"1 -> 2 ranks: {r.stdout}{r.stderr}")
    # A global batch that the new rank count cannot split is the usual clear error.
    r = job.train(3, "threads1", 50)
    check(r.returncode == 2 and "train.batch_size 8 does not divide over 3 ranks" in r.stderr, r.stderr)


def case_nan_guard_np2(job):
    """A NaN injected into rank 1's batch: policy stop names the loss, step and rank and writes no non-finite
    checkpoint; rollback reloads the newest checkpoint and finishes; a NaN every step stops after K rollbacks; a NaN
    before the first checkpoint stops cleanly."""
    import numpy as np
    common = ("dist.sync_bn=false", "checkpoint.every_steps=4")  # rank 0's own d_loss stays finite
    r = job.train(2, "stop", 12, *common, env={"GANTRAIN_TEST_FAULT": "1:6:nan"})
    check(r.returncode == 1, f"policy stop: exit {r.returncode}")
    check("gantrain: runtime failure: step 7: d_loss is not finite on rank 1" in r.stderr, r.stderr)
    check(r.stderr.count("gantrain:") == 1, f"reported more than once: {r.stderr}")
    check(job.checkpoints("stop") == ["ckpt_00000004.h5"], f"checkpoints after the stop: {job.checkpoints('stop')}")
    r = job.train(2, "rollback", 12, *common, "train.nan_policy=rollback", env={"GANTRAIN_TEST_FAULT": "1:6:nan"})
    check(r.returncode == 0, f"rollback: {r.stdout}{r.stderr}")
    check("step 7: d_loss is not finite on rank 1" in r.stdout and "rolled back to" in r.stdout and
          "ckpt_00000004.h5 (rollback 1 of at most 3)" in r.stdout, r.stdout)
    steps = job.metrics_steps("rollback")
    check(steps == [s for s in range(1, 13) if s != 7], f"metrics steps after a rollback: {steps}")
    final = checkpoint_tensors(job.ckpt("rollback", 12))
    check(all(np.all(np.isfinite(v)) for v in final.values() if v.dtype.kind == "f"), "non-finite final checkpoint")
    r = job.train(2, "always", 12, *common, "train.nan_policy=rollback", "train.nan_max_rollbacks=2",
                  env={"GANTRAIN_TEST_FAULT": "1:6:nan_from"})
    check(r.returncode == 1 and "step 9: d_loss is not finite on rank 1" in r.stderr and
          "stopping after 2 rollbacks" in r.stderr, f"{r.returncode}: {r.stderr}")
    check(job.checkpoints("always") == ["ckpt_00000004.h5"], f"{job.checkpoints('always')}")
    r = job.train(2, "early", 12, *common, "train.nan_policy=rollback", env={"GANTRAIN_TEST_FAULT": "1:1:nan"})
    check(r.returncode == 1 and "before the run's first checkpoint: nothing to roll back to" in r.stderr, r.stderr)
    print("NaN on rank 1: stop (exit 1, one message), rollback (finished, step 7 skipped), "
          "2 rollbacks then stop, and a NaN before the first checkpoint: all as documented")


def start_and_wait_for_step(cmd, env, step):
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    for line in p.stdout:
        if line.startswith("step") and int(line.split()[1].split("/")[0]) >= step:
            return p
    raise AssertionError(f"no step {step}: {p.stderr.read()}")


def rank_pids(parent):
    out = subprocess.run(["pgrep", "-P", str(parent)], capture_output=True, text=True).stdout.split()
    return [int(x) for x in out]


def case_signals_np2(job):
    """train.stop_signal picks the extra stop signal; SIGUSR1 is then not ours; a second signal stops at once."""
    long_run = ("train.max_steps=100000", "checkpoint.every_steps=0")
    # SIGUSR2 as the stop signal, sent to one rank: both stop with a checkpoint, exit 3.
    p = start_and_wait_for_step(mpirun.command(job.mpirun, 2, *job.train_args("usr2", 10, *long_run,
                                                                                "train.stop_signal=SIGUSR2")),
                                mpirun.environment(), 3)
    time.sleep(0.5)
    kids = rank_pids(p.pid)
    check(len(kids) == 2, f"rank processes: {kids}")
    os.kill(kids[1], signal.SIGUSR2)
    out, err = p.communicate(timeout=60)
    check(p.returncode == 3, f"SIGUSR2 with train.stop_signal=SIGUSR2: exit {p.returncode}: {err}")
    check(len(job.checkpoints("usr2")) == 1, f"{job.checkpoints('usr2')}")
    # One process, stop_signal none: SIGUSR1 keeps its default action (the process ends, no checkpoint).
    p = start_and_wait_for_step(job.train_args("none", 10, *long_run, "train.stop_signal=none"), mpirun.environment(), 3)
    p.send_signal(signal.SIGUSR1)
    p.communicate(timeout=60)
    check(p.returncode == -signal.SIGUSR1, f"stop_signal none, SIGUSR1: exit {p.returncode}")
    check(job.checkpoints("none") == [], "a checkpoint was written")
    # Two signals: the second ends the process at once, without a checkpoint. Sent back to back, both are
    # handled before the process runs on; two different ones, because the kernel merges a second instance of
    # a signal that is still pending.
    p = start_and_wait_for_step(job.train_args("twice", 10, *long_run), mpirun.environment(), 1)
    p.send_signal(signal.SIGINT)
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=60)
    check(p.returncode in (-signal.SIGTERM, -signal.SIGINT), f"SIGINT then SIGTERM: exit {p.returncode}: {err} {out[-300:]!r}")
    check("second stop signal: stopping at once" in err, err)
    print("SIGUSR2 as train.stop_signal: exit 3 with a checkpoint; stop_signal none: SIGUSR1 default; "
          "a second stop signal: killed at once")


def main():
    return script_main(lambda a, tmp: globals()["case_" + a.case](Job(a, tmp)), "gt_resume_mpi", mpirun=True)


if __name__ == "__main__":
    sys.exit(main())
