#!/usr/bin/python3
"""Runs that survive a cluster, one process: exact resume, resume modes, config changes, retention, kills at many moments, a full disk."""
import json
import os
import resource
import shutil
import signal
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "common"))
from gt_test import check, checkpoint_tensors, fnv1a64, reseal_checkpoint, script_main  # noqa: E402  (tests/common/gt_test.py)

STEPS = 40
HALF = 20


class Runs:
    """gantrain train on config/tiny.yaml (1 thread) under one runs/ folder."""

    def __init__(self, exe, src, tmp):
        self.exe, self.tmp = exe, tmp
        self.tiny = os.path.join(src, "config/tiny.yaml")
        self.out = os.path.join(tmp, "runs")

    def args(self, name, *overrides, steps=STEPS):
        return [self.exe, "train", "--config", self.tiny, f"run.out_dir={self.out}", f"run.name={name}",
                f"train.max_steps={steps}", "log.every_steps=1", "log.sample_every_steps=0", "checkpoint.every_steps=5",
                "checkpoint.keep_last=0", *overrides]

    def train(self, name, *overrides, steps=STEPS, env=None, timeout=300, **kw):
        return subprocess.run(self.args(name, *overrides, steps=steps), capture_output=True, text=True, timeout=timeout,
                              env=dict(os.environ, **(env or {})), **kw)

    def dir(self, name):
        return os.path.join(self.out, name)

    def ckpt(self, name, step):
        return os.path.join(self.out, name, "checkpoints", f"ckpt_{step:08d}.h5")

    def checkpoints(self, name):
        d = os.path.join(self.out, name, "checkpoints")
        return sorted(f for f in os.listdir(d) if f.startswith("ckpt_") and f.endswith(".h5"))

    def metrics(self, name):
        return [json.loads(line) for line in open(os.path.join(self.out, name, "metrics.jsonl"))]

    def info(self, path):
        return subprocess.run([self.exe, "info", path], capture_output=True, text=True, timeout=60)


def check_identical(a_path, b_path, what):
    import numpy as np
    a, b = checkpoint_tensors(a_path), checkpoint_tensors(b_path)
    check(sorted(a) == sorted(b), f"{what}: tensor names differ: {sorted(set(a) ^ set(b))}")
    differ = [k for k in a if a[k].shape != b[k].shape or a[k].tobytes() != b[k].tobytes()]
    check(not differ, f"{what}: {len(differ)} of {len(a)} tensors differ from the uninterrupted run, e.g. {differ[:3]}")
    check(all(np.all(np.isfinite(v)) for v in a.values() if v.dtype.kind == "f"), f"{what}: non-finite values")
    return len(a)


def check_metrics_continue(runs, name, reference, what):
    """metrics.jsonl has every step once, in order, with the uninterrupted run's losses bit for bit."""
    got, ref = runs.metrics(name), runs.metrics(reference)
    steps = [m["step"] for m in got]
    check(steps == list(range(1, STEPS + 1)), f"{what}: metrics steps {steps}")
    for g, r in zip(got, ref):
        for key in ("d_loss", "g_loss", "d_real", "d_fake"):
            check(g[key] == r[key], f"{what}: step {g['step']} {key} {g[key]} vs {r[key]} uninterrupted")


def reference(runs):
    r = runs.train("straight")
    check(r.returncode == 0, f"uninterrupted run failed: {r.stdout}{r.stderr}")
    return runs.ckpt("straight", STEPS)


def case_exact_resume(exe, src, tmp):
    """40 steps straight = 20 + stop + 20, bit for bit, whether the stop was max_steps, a signal or the time limit."""
    runs = Runs(exe, src, tmp)
    ref = reference(runs)
    # 1. Stopped by max_steps at 20, then the same command with 40.
    r = runs.train("steps", steps=HALF)
    check(r.returncode == 0, f"first half: {r.stderr}")
    r = runs.train("steps")
    check(r.returncode == 0, f"second half: {r.stderr}")
    first = r.stdout.splitlines()[0]
    check(first.startswith(f"resuming run {runs.dir('steps')} from ") and f"at step {HALF} of {STEPS}" in first,
          f"first line: {first}")
    check("config changed since the checkpoint: train.max_steps: 20 -> 40" in r.stdout, r.stdout)
    n = check_identical(runs.ckpt("steps", STEPS), ref, "max_steps 20 then 40")
    check_metrics_continue(runs, "steps", "straight", "max_steps 20 then 40")
    print(f"20 + 20 steps: {n} tensors bit-identical to 40 straight; metrics.jsonl steps 1..40 once each")
    # 2. SIGTERM before step 13 (the process sends it to itself, so the moment is known), then the same command.
    r = runs.train("signal", "checkpoint.every_steps=0", env={"GANTRAIN_TEST_FAULT": "0:12:sigterm"})
    check(r.returncode == 3, f"exit {r.returncode} after SIGTERM, expected 3: {r.stderr}")
    check("signal 15 received: stopping after step 13 with a checkpoint" in r.stdout, r.stdout)
    check(runs.checkpoints("signal") == ["ckpt_00000013.h5"], f"{runs.checkpoints('signal')}")
    r = runs.train("signal", "checkpoint.every_steps=0")
    check(r.returncode == 0 and f"at step 13 of {STEPS}" in r.stdout.splitlines()[0], f"resume: {r.stdout}{r.stderr}")
    check_identical(runs.ckpt("signal", STEPS), ref, "SIGTERM then resume")
    check_metrics_continue(runs, "signal", "straight", "SIGTERM then resume")
    print("SIGTERM during step 13, exit 3, resume: bit-identical")
    # 3. train.max_minutes: every invocation stops after ~0.1 s with exit 3; the same command until it finishes.
    stops = 0
    for _ in range(200):
        r = runs.train("minutes", "checkpoint.every_steps=0", "train.max_minutes=0.0002")
        if r.returncode == 0:
            break
        check(r.returncode == 3 and "time limit train.max_minutes=0.0002 reached" in r.stdout, f"{r.returncode}: {r.stdout}{r.stderr}")
        stops += 1
    check(r.returncode == 0 and stops >= 2, f"time-limited invocations: {stops} stops, last exit {r.returncode}")
    check_identical(runs.ckpt("minutes", STEPS), ref, "time limit, resumed")
    check_metrics_continue(runs, "minutes", "straight", "time limit, resumed")
    r = runs.train("minutes", "checkpoint.every_steps=0", "train.max_minutes=0.0002")
    check(r.returncode == 0 and r.stdout.startswith(f"run {runs.dir('minutes')} is finished"), f"finished run: {r.stdout}")
    print(f"train.max_minutes: {stops} stops (exit 3) and resumes: bit-identical; a finished run exits 0 at once")


OBJECTIVES = {
    "wgan": ["loss.objective=wgan", "loss.clip_critic=0.01", "train.g_fresh_noise=true", "train.n_critic=3",
             "optim.d.name=rmsprop",
             "optim.d.lr=5e-5", "optim.g.name=rmsprop", "optim.g.lr=1e-5"],
    "hinge": ["loss.objective=hinge", "loss.drift=0.001", "train.n_critic=2"],
    "ema": ["ema.half_life_images=40", "ema.rampup=0.5", "train.n_critic=1"],  # G_ema resumes exactly too
    "lr": ["train.lr_scaling=sqrt", "train.lr_base_batch=2", "train.warmup_steps=9", "train.n_critic=1"],  # mid-warmup
    # WGAN-GP, lazy: the penalty on every 4th critic batch, so odd steps (the first after the resume at 6) have none.
    "wgangp": ["loss.objective=wgan", "loss.gp_weight=10", "loss.gp_every=4", "model.d_norm=none", "train.n_critic=2"],
    # The large-batch plan: 4 micro-batches of 2 accumulated per update (batch norm per micro-batch).
    "accumulation": ["train.micro_batch=2", "train.n_critic=2"],
}


def case_exact_resume_objectives(exe, src, tmp):
    """WGAN (clipping, 3 critic updates, fresh G noise), hinge (drift, 2), G_ema (half-life, ramp-up), learning-rate
    warmup, WGAN-GP (lazy penalty every 4th critic batch, 2 per step) and gradient accumulation: 12 steps
    straight = 6 + stop + 6, bit for bit (G_ema's tensors included).
    A step reads n_critic batches, so the data order after a resume depends on it: the checkpoint counts
    the real images seen, and a resume with another train.n_critic is refused."""
    runs = Runs(exe, src, tmp)
    steps, half = 12, 6
    for name, overrides in OBJECTIVES.items():
        n_critic = int(next(o for o in overrides if o.startswith("train.n_critic=")).split("=")[1])
        r = runs.train(f"{name}_straight", *overrides, steps=steps)
        check(r.returncode == 0, f"{name}: uninterrupted run failed: {r.stdout}{r.stderr}")
        plan = f"{steps} steps of {n_critic} D updates and 1 G update" if n_critic > 1 else f"{steps} steps |"
        check(plan in r.stdout, f"{name}: plan line: {r.stdout}")
        r = runs.train(f"{name}_halves", *overrides, steps=half)
        check(r.returncode == 0, f"{name}: first half: {r.stderr}")
        r = runs.train(f"{name}_halves", *overrides, steps=steps)
        check(r.returncode == 0 and f"at step {half} of {steps}" in r.stdout.splitlines()[0], f"{name}: resume: {r.stdout}")
        n = check_identical(runs.ckpt(f"{name}_halves", steps), runs.ckpt(f"{name}_straight", steps),
                            f"{name}: {half} + {half}")
        got, ref = runs.metrics(f"{name}_halves"), runs.metrics(f"{name}_straight")
        check([m["step"] for m in got] == list(range(1, steps + 1)), f"{name}: metrics steps {[m['step'] for m in got]}")
        keys = ("d_loss", "g_loss", "d_real", "d_fake") + (("d_penalty",) if name == "wgangp" else ())
        check(all(g[k] == r_[k] for g, r_ in zip(got, ref) for k in keys),
              f"{name}: metrics differ from the uninterrupted run")
        import h5py
        with h5py.File(runs.ckpt(f"{name}_straight", steps), "r") as f:
            seen = int(f["meta"].attrs["images_seen"])
        check(seen == steps * 8 * n_critic, f"{name}: images_seen {seen}, expected {steps} x 8 x {n_critic}")
        print(f"{name}: {half} + {half} steps bit-identical to {steps} straight ({n} tensors); images_seen {seen}")
        # Another n_critic would read other batches from here on: refused, naming the key.
        r = runs.train(f"{name}_halves", *overrides, f"train.n_critic={n_critic + 1}", steps=steps + 2)
        check(r.returncode == 2 and f"train.n_critic is {n_critic} there and {n_critic + 1} now" in r.stderr,
              f"{name}: n_critic change: {r.returncode} {r.stderr}")


def case_resume_modes(exe, src, tmp):
    """never, an explicit path (in place, and into a new run), a newest checkpoint that does not validate, config changes."""
    runs = Runs(exe, src, tmp)
    ref = reference(runs)
    r = runs.train("m", steps=HALF)
    check(r.returncode == 0, r.stderr)
    # never: a new run beside the old one.
    r = runs.train("m", "checkpoint.resume=never", steps=2)
    check(r.returncode == 0 and os.path.isfile(runs.ckpt("m.1", 2)), f"never: {r.stdout}{r.stderr}")
    # A config change that cannot resume: exit 2, one line naming the key, nothing written.
    before = sorted(os.listdir(runs.dir("m")))
    for key, value in [("model.g_width", "8"), ("optim.d.name", "sgd"), ("train.batch_size", "16"), ("run.seed", "7")]:
        r = runs.train("m", f"{key}={value}")
        check(r.returncode == 2 and key in r.stderr and len(r.stderr.strip().splitlines()) == 1,
              f"{key} changed: exit {r.returncode}: {r.stderr}")
    check(sorted(os.listdir(runs.dir("m"))) == before, "a refused resume wrote into the run directory")
    # The newest checkpoint truncated: reported, kept aside as .invalid, the one before it used.
    newest = runs.ckpt("m", HALF)
    with open(newest, "r+b") as f:
        f.truncate(os.path.getsize(newest) // 2)
    r = runs.train("m", "log.every_steps=2")
    check(r.returncode == 0, f"resume past a truncated checkpoint: {r.stdout}{r.stderr}")
    lines = r.stdout.splitlines()
    check(f"at step {HALF - 5} of {STEPS}" in lines[0], f"first line: {lines[0]}")
    check(any(l.startswith("skipped: ") and "ckpt_00000020.h5" in l for l in lines[:4]), f"no skip note: {lines[:4]}")
    check(os.path.isfile(newest + ".invalid"), "the truncated checkpoint was not kept aside")
    check("config changed since the checkpoint: log.every_steps: 1 -> 2" in r.stdout, "harmless change not logged")
    check_identical(runs.ckpt("m", STEPS), ref, "resumed past a truncated checkpoint")
    # The newest checkpoint reads, but lacks a tensor the model needs: skipped like a damaged file.
    import h5py
    r = runs.train("mt", steps=HALF)
    check(r.returncode == 0, r.stderr)
    with h5py.File(runs.ckpt("mt", HALF), "r+") as f:
        del f["G/params/main.0.weight"]
    reseal_checkpoint(runs.ckpt("mt", HALF))  # a whole file that lacks a tensor, not a damaged one
    r = runs.train("mt")
    lines = r.stdout.splitlines()
    check(r.returncode == 0 and f"at step {HALF - 5} of {STEPS}" in lines[0], f"missing tensor: {r.stdout}{r.stderr}")
    check(any(l.startswith("skipped: ") and "main.0.weight" in l for l in lines[:4]), f"no skip note: {lines[:4]}")
    check_identical(runs.ckpt("mt", STEPS), ref, "resumed past a checkpoint missing a tensor")
    print("never -> m.1; model/optimizer/batch/seed changes refused (exit 2); a truncated newest checkpoint and one "
          "missing a tensor skipped")
    # An explicit checkpoint into a new run directory.
    r = runs.train("p", f"checkpoint.resume={runs.ckpt('straight', 25)}")
    check(r.returncode == 0 and r.stdout.splitlines()[0].startswith(f"new run {runs.dir('p')} continuing from"),
          f"resume from a path: {r.stdout}{r.stderr}")
    check_identical(runs.ckpt("p", STEPS), ref, "resumed from an explicit path")
    # A path that is not a checkpoint.
    bad = os.path.join(tmp, "not_a_checkpoint.h5")
    open(bad, "w").write("hello")
    r = runs.train("q", f"checkpoint.resume={bad}")
    check(r.returncode == 2 and "checkpoint.resume" in r.stderr and "not_a_checkpoint.h5" in r.stderr, r.stderr)
    # Checkpoints that validate as files but cannot resume this model: a tensor missing, a tensor reshaped, an
    # embedded config that does not parse. Each is exit 2 with one line naming the file and the problem.
    import h5py
    import numpy as np
    good = runs.ckpt("straight", 25)
    for what, edit, words in [
            ("missing", lambda f: f["G/params"].__delitem__("main.0.weight"), ["main.0.weight"]),
            ("reshaped", lambda f: (f["D/params"].__delitem__("main.0.weight"),
                                    f["D/params"].create_dataset("main.0.weight", data=np.zeros((2, 2), np.float32),
                                                                 fletcher32=True, chunks=(2, 2))),
             ["main.0.weight"]),
            ("badconfig", lambda f: f["meta"].attrs.__setitem__("config", "model: [unclosed"), ["config"])]:
        path = os.path.join(tmp, f"{what}.h5")
        shutil.copy(good, path)
        with h5py.File(path, "r+") as f:
            edit(f)
            if what == "badconfig":  # a consistent file: its FNV-1a digest (core/hash.h) matches the new text
                f["meta"].attrs.modify("config_digest", np.uint64(fnv1a64("model: [unclosed")))
        reseal_checkpoint(path)
        r = runs.train(f"bad_{what}", f"checkpoint.resume={path}")
        check(r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and f"{what}.h5" in r.stderr and
              all(w in r.stderr for w in words), f"{what}: exit {r.returncode}: {r.stderr}")
        check(not os.path.exists(runs.dir(f"bad_{what}")), f"{what}: a run directory was made")
    print("explicit checkpoint path: a new run continues bit-identically; a bad path, a missing or reshaped tensor "
          "and a broken embedded config are exit 2")


def case_retention(exe, src, tmp):
    """keep_last: only the newest K checkpoints stay, and the run still resumes from the newest."""
    runs = Runs(exe, src, tmp)
    r = runs.train("k", "checkpoint.every_steps=1", "checkpoint.keep_last=3", steps=12)
    check(r.returncode == 0, r.stderr)
    check(runs.checkpoints("k") == [f"ckpt_{s:08d}.h5" for s in (10, 11, 12)], f"kept: {runs.checkpoints('k')}")
    check(r.stdout.count("retention: deleted") == 9, "deletions not logged")
    r = runs.train("all", "checkpoint.every_steps=1", "checkpoint.keep_last=0", steps=6)
    check(len(runs.checkpoints("all")) == 6, f"keep_last 0 kept {runs.checkpoints('all')}")
    # checkpoint.every_minutes alone (steps take a few ms; 0.0001 min is 6 ms): checkpoints in between.
    r = runs.train("minutes", "checkpoint.every_steps=0", "checkpoint.every_minutes=0.0001")
    kept = runs.checkpoints("minutes")
    check(r.returncode == 0 and len(kept) >= 3 and kept[-1] == f"ckpt_{STEPS:08d}.h5", f"every_minutes: {kept}")
    print(f"keep_last 3 of 12 checkpoints: steps 10, 11, 12 kept; keep_last 0 keeps all; every_minutes: {len(kept)} "
          "checkpoints in 40 steps")


# The kill points of src/core/fault_point.h, each passed many times in a 12-step run with a checkpoint
# every 3 steps and keep_last 2 (so retention deletes).
KILLS = ([("step", n) for n in (1, 3, 4, 7, 12)] +
         [(p, n) for p in ("ckpt_created", "ckpt_meta", "ckpt_tensors", "ckpt_synced", "ckpt_renamed") for n in (1, 3)] +
         [("retention", n) for n in (1, 2)] + [("metrics", n) for n in (2, 6, 9, 11)])


def case_crash_kills(exe, src, tmp):
    """SIGKILL at many moments, checkpoint writes included: the newest remaining checkpoint always validates, and
    running the same command again ends with the parameters of a run that was never killed."""
    runs = Runs(exe, src, tmp)
    extra = ("checkpoint.every_steps=3", "checkpoint.keep_last=2")
    r = runs.train("clean", *extra, steps=12)
    check(r.returncode == 0, r.stderr)
    ref = runs.ckpt("clean", 12)
    check(len(KILLS) >= 20, "too few kill moments")
    for point, n in KILLS:
        name = f"kill_{point}_{n}"
        r = runs.train(name, *extra, steps=12, env={"GANTRAIN_TEST_KILL": f"{point}:{n}"})
        check(r.returncode == -signal.SIGKILL, f"{name}: exit {r.returncode}, expected death by SIGKILL: {r.stderr}")
        left = runs.checkpoints(name)
        if left:
            v = runs.info(os.path.join(runs.dir(name), "checkpoints", left[-1]))
            check(v.returncode == 0, f"{name}: the newest checkpoint left, {left[-1]}, does not validate: {v.stdout}{v.stderr}")
        r = runs.train(name, *extra, steps=12)
        check(r.returncode == 0, f"{name}: resume failed: {r.stdout}{r.stderr}")
        first = r.stdout.splitlines()[0]
        # Killed after the final checkpoint (retention's second deletion comes after it): the run is finished.
        finished = first.startswith(f"run {runs.dir(name)} is finished")
        check(first.startswith(("resuming run", "restarting run")) or (finished and point == "retention"),
              f"{name}: first line after the kill: {first}")
        check_identical(runs.ckpt(name, 12), ref, name)
        leftovers = [f for f in os.listdir(os.path.join(runs.dir(name), "checkpoints")) if f.endswith(".tmp")]
        check(not leftovers, f"{name}: temporary files left: {leftovers}")
        print(f"{name}: newest left {left[-1] if left else 'none'} validates; resumed to identical parameters")
    print(f"{len(KILLS)} kills: every resume ended bit-identical to the run that was not killed")


def case_full_disk(exe, src, tmp):
    """A checkpoint write that runs out of space (a file-size limit) stops the run with a clear message (exit 1),
    leaves no temporary file, and leaves the earlier checkpoints as they were; the run then resumes."""
    runs = Runs(exe, src, tmp)
    r = runs.train("d", steps=10)
    check(r.returncode == 0, r.stderr)
    size = os.path.getsize(runs.ckpt("d", 10))
    before = {f: open(os.path.join(runs.dir("d"), "checkpoints", f), "rb").read() for f in runs.checkpoints("d")}

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # as a full disk: write() fails with EFBIG, nothing is killed
        resource.setrlimit(resource.RLIMIT_FSIZE, (size // 2, size // 2))

    r = runs.train("d", steps=20, preexec_fn=limit)
    check(r.returncode == 1, f"exit {r.returncode}, expected 1: {r.stdout}{r.stderr}")
    err = r.stderr.strip().splitlines()
    check(len(err) == 1 and "ckpt_00000015.h5" in err[0], f"message: {r.stderr}")
    after = {f: open(os.path.join(runs.dir("d"), "checkpoints", f), "rb").read() for f in runs.checkpoints("d")}
    check(after == before, f"earlier checkpoints changed: {sorted(before)} -> {sorted(after)}")
    tmp_files = [f for f in os.listdir(os.path.join(runs.dir("d"), "checkpoints")) if f.endswith(".tmp")]
    check(not tmp_files, f"temporary files left: {tmp_files}")
    r = runs.train("d", steps=20)
    check(r.returncode == 0 and "at step 10 of 20" in r.stdout.splitlines()[0], f"resume after the full disk: {r.stdout}")
    print(f"file-size limit {size // 2} bytes: '{err[0]}'; earlier checkpoints intact; resumed")


def case_unwritable_out_dir(exe, src, tmp):
    runs = Runs(exe, src, tmp)
    blocker = os.path.join(tmp, "a_file")
    open(blocker, "w").write("x")
    r = subprocess.run([exe, "train", "--config", runs.tiny, f"run.out_dir={blocker}"], capture_output=True, text=True,
                       timeout=120)
    check(r.returncode == 2 and "a_file" in r.stderr and len(r.stderr.strip().splitlines()) == 1,
          f"exit {r.returncode}: {r.stderr}")


def main():
    return script_main(lambda a, tmp: globals()["case_" + a.case](a.exe, a.source, tmp), "gt_resume")


if __name__ == "__main__":
    sys.exit(main())
