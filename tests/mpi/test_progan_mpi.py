#!/usr/bin/python3
"""Progressive GAN runs (model.arch progan, config/progan_tiny.yaml: 4x4 -> 8x8 -> 16x16, both transitions, 6 steps per
phase): every phase on 1 and on 2 ranks with the resolution, alpha, phase and images seen that each checkpoint records
checked against the schedule, the two rank counts within a measured noise floor of each other; exact resume in the
middle of a transition and at a phase boundary; the bad inputs (exit 2 naming the key or file); `gantrain info` on the
reference preset and on a checkpoint; sampling a checkpoint of an earlier phase; a NaN rollback to a checkpoint of
the phase before."""
import json
import os
import struct
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "common"))
import mpirun  # noqa: E402  (tests/common/mpirun.py)
from gt_test import check, checkpoint_tensors, run, script_main  # noqa: E402  (tests/common/gt_test.py)

# config/progan_tiny.yaml's schedule: (resolution, fading, first step, steps, batch) per phase.
PHASES = [(4, False, 0, 6, 16), (8, True, 6, 6, 16), (8, False, 12, 6, 16), (16, True, 18, 6, 8), (16, False, 24, 6, 8)]
TOTAL = 30


def phase_after(step):
    """The phase of the networks after `step` steps: that of step - 1 (the first at 0)."""
    s = max(step - 1, 0)
    for i, p in enumerate(PHASES):
        if s < p[2] + p[3]:
            return i
    return len(PHASES) - 1


def images_before(step):
    return sum(min(max(step - first, 0), steps) * batch for _, _, first, steps, batch in PHASES)


class Job:
    def __init__(self, args, tmp):
        self.exe, self.mpirun, self.src, self.tmp = args.exe, args.mpirun, args.source, tmp
        self.config = os.path.join(self.src, "config/progan_tiny.yaml")
        self.runs = os.path.join(tmp, "runs")

    def train(self, np, name, *overrides, threads=1, timeout=240, env=None):
        cmd = [self.exe, "train", "--config", self.config, f"run.out_dir={self.runs}", f"run.name={name}",
               f"run.threads={threads}", *overrides]
        env = dict(mpirun.environment(), **(env or {}))
        env["OMP_NUM_THREADS"] = str(threads)
        if np > 1:
            cmd = mpirun.command(self.mpirun, np, *cmd)
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
        return r

    def ckpt(self, name, step):
        return os.path.join(self.runs, name, "checkpoints", f"ckpt_{step:08d}.h5")


def meta(path):
    import h5py
    with h5py.File(path, "r") as f:
        return {k: (v.item() if hasattr(v, "item") else v) for k, v in f["meta"].attrs.items()}


def png_size(path):
    with open(path, "rb") as f:
        head = f.read(24)
    check(head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG")
    return struct.unpack(">II", head[16:24])


def check_run(job, name, r):
    check(r.returncode == 0, f"{name}: exit {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    for i, (res, fading, first, _, _) in enumerate(PHASES[1:], start=1):
        kind = "transition" if fading else "stable"
        check(f"phase {i}: {res}x{res} {kind} from step {first}" in r.stdout, f"{name}: no line for phase {i}:\n{r.stdout}")
    for step in range(3, TOTAL + 1, 3):
        path = job.ckpt(name, step)
        check(os.path.isfile(path), f"{name}: no checkpoint at step {step}")
        m = meta(path)
        i = phase_after(step)
        res, fading, first, steps, batch = PHASES[i]
        into = min(max(step - first, 0), steps)
        alpha = into / steps if fading else 1.0
        want = {"resolution": res, "phase": i, "fading": int(fading), "images_seen": images_before(step),
                "fade_images": into * batch if fading else 0, "final_resolution": 16}
        for key, value in want.items():
            check(m.get(key) == value, f"{name} step {step}: /meta {key} is {m.get(key)}, expected {value}")
        check(abs(m["alpha"] - alpha) < 1e-12, f"{name} step {step}: alpha {m['alpha']}, expected {alpha}")
        # The networks of the phase: both toRGB layers while 8x8 fades in, only the new one after.
        names = {k.split("/")[-1] for k in checkpoint_tensors(path) if k.startswith("G/params/")}
        check((f"torgb{res}.weight" in names) and ((f"torgb{res // 2}.weight" in names) == fading),
              f"{name} step {step}: G's parameters {sorted(names)} do not fit the {res}x{res} phase (fading {fading})")
    # metrics.jsonl: every logged step says where it stood.
    lines = [json.loads(x) for x in open(os.path.join(job.runs, name, "metrics.jsonl"))]
    logged = {x["step"]: x for x in lines if "d_loss" in x}
    check(sorted(logged) == list(range(2, TOTAL + 1, 2)), f"{name}: logged steps {sorted(logged)}")
    for step, x in logged.items():
        res, fading, first, steps, _ = PHASES[phase_after(step)]
        check(x["resolution"] == res and x["phase"] == phase_after(step), f"{name} step {step}: {x}")
        want_alpha = (step - 1 - first) / steps if fading else 1.0  # the logged step's own alpha
        check(abs(x["alpha"] - want_alpha) < 1e-12, f"{name} step {step}: alpha {x['alpha']}, expected {want_alpha}")
    # Every grid has the final size (samples of earlier phases upsampled).
    samples = sorted(os.listdir(os.path.join(job.runs, name, "samples")))
    sizes = {png_size(os.path.join(job.runs, name, "samples", s)) for s in samples if s.endswith(".png")}
    check(len(samples) >= 5 and len(sizes) == 1, f"{name}: sample grids {samples} of sizes {sizes}")


def worst_relative(a_path, b_path):
    import numpy as np
    a, b = checkpoint_tensors(a_path), checkpoint_tensors(b_path)
    worst = 0.0
    for k in a:
        if k.startswith(("G/params/", "D/params/")):
            worst = max(worst, float(np.abs(a[k] - b[k]).max() / max(float(np.abs(a[k]).max()), 1e-30)))
    return worst


def identical(a_path, b_path):
    a, b = checkpoint_tensors(a_path), checkpoint_tensors(b_path)
    return sorted(a) == sorted(b) and all(a[k].tobytes() == b[k].tobytes() for k in a)


def case_phases_np1_np2(job):
    """Every phase on 1 and 2 ranks. Two checks against measured floors:
    - the first step of every phase (4x4 start, both transitions, both stable phases), each resumed from the 1-rank
      run's checkpoint on 1 rank, on 1 rank with 2 threads, on 1 rank in two micro-batches (the split 2 ranks make)
      and on 2 ranks: 2 ranks within 20x the thread floor (at least one float32 rounding, 2^-23) of the same split on
      one rank, and within 20x the larger floor of the one-pass rank (Adam, reset at each phase with beta1 0, turns a
      near-zero gradient's rounding into a step of about lr); a wrong group of the minibatch standard deviation, a
      wrong shard or a wrong fade would be orders of magnitude above them;
    - the whole run (30 steps, an optimizer reset per phase, Adam with beta1 0, which moves a near-zero gradient by
      about lr whatever its size): 2 ranks within 3x the floor of another summation order, 1 rank accumulating
      micro-batches of 4."""
    check_run(job, "one", job.train(1, "one"))
    check_run(job, "two", job.train(2, "two"))
    micro = job.train(1, "micro", "train.micro_batch=4")
    check(micro.returncode == 0, f"micro-batch run failed: {micro.stderr[-2000:]}")
    for start in [0] + [p[2] for p in PHASES[1:]]:
        resume = [f"train.max_steps={start + 1}", "log.sample_every_steps=0"]
        if start > 0:
            resume.append(f"checkpoint.resume={job.ckpt('one', start)}")
        half = PHASES[phase_after(start + 1)][4] // 2  # the phase's batch in two micro-batches: 2 ranks' split
        runs = {}
        for label, np, threads, extra in (("ref", 1, 1, []), ("threads", 1, 2, []), ("ranks", 2, 1, []),
                                          ("halves", 1, 1, [f"train.micro_batch={half}"])):
            name = f"first{start}_{label}"
            r = job.train(np, name, *resume, *extra, threads=threads)
            check(r.returncode == 0, f"{name} failed: {r.stdout[-1500:]}\n{r.stderr[-1500:]}")
            runs[label] = job.ckpt(name, start + 1)
        threads = max(worst_relative(runs["ref"], runs["threads"]), 2.0 ** -23)
        halves = worst_relative(runs["ref"], runs["halves"])
        ranks = worst_relative(runs["ref"], runs["ranks"])
        same_split = worst_relative(runs["halves"], runs["ranks"])
        print(f"step {start + 1} ({PHASES[phase_after(start + 1)][0]}x{PHASES[phase_after(start + 1)][0]}): 1 vs 2 "
              f"ranks {ranks:.3g}; 2 ranks vs 1 rank in two micro-batches {same_split:.3g}; floors: threads (at least "
              f"2^-23) {threads:.3g}, the halves' summation order {halves:.3g}")
        check(same_split <= 20 * threads,
              f"step {start + 1}: 2 ranks differ from the same split on one rank by {same_split:.3g} > 20x {threads:.3g}")
        check(ranks <= 20 * max(threads, halves),
              f"step {start + 1}: 1 vs 2 ranks differ by {ranks:.3g}, more than 20x {max(threads, halves):.3g}")
    floor = worst_relative(job.ckpt("one", TOTAL), job.ckpt("micro", TOTAL))
    ranks = worst_relative(job.ckpt("one", TOTAL), job.ckpt("two", TOTAL))
    print(f"after {TOTAL} steps: 1 vs 2 ranks {ranks:.3g}; floor (1 rank vs micro-batches of 4) {floor:.3g}")
    check(floor > 0, "micro-batches gave identical bits: the floor measures nothing")
    check(ranks <= 3 * floor, f"after {TOTAL} steps 1 vs 2 ranks differ by {ranks:.3g}, more than 3x {floor:.3g}")


def case_resume_in_transition(job):
    """Stopped inside the 8x8 transition (step 9) or at the end of a phase (step 12), then resumed: bit-identical to
    the run straight through, optimizer state and G_ema included."""
    straight = job.train(1, "straight", "ema.beta=0.9")
    check(straight.returncode == 0, f"straight run failed: {straight.stderr[-2000:]}")
    for stop in (9, 12):
        name = f"stop{stop}"
        first = job.train(1, name, "ema.beta=0.9", f"train.max_steps={stop}")
        check(first.returncode == 0, f"{name} first part failed: {first.stderr[-2000:]}")
        again = job.train(1, name, "ema.beta=0.9")
        check(again.returncode == 0 and f"at step {stop} of {TOTAL}" in again.stdout,
              f"{name} did not resume at {stop}: {again.stdout[-2000:]}\n{again.stderr[-2000:]}")
        for step in (18, 24, TOTAL):
            check(identical(job.ckpt("straight", step), job.ckpt(name, step)),
                  f"resumed at {stop}: the checkpoint of step {step} differs from the straight run's")
        steps = [json.loads(x)["step"] for x in open(os.path.join(job.runs, name, "metrics.jsonl"))]
        check(steps == sorted(set(steps)), f"{name}: metrics.jsonl repeats or reorders steps: {steps}")


def expect_exit_2(job, name, overrides, words, np=1):
    r = job.train(np, name, *overrides)
    check(r.returncode == 2, f"{overrides}: exit {r.returncode}, expected 2\n{r.stdout[-1500:]}\n{r.stderr[-1500:]}")
    for w in words:
        check(w in r.stderr, f"{overrides}: the error lacks {w!r}: {r.stderr!r}")
    ours = [line for line in r.stderr.splitlines() if line.startswith("gantrain")]  # mpirun adds its own lines
    check(len(ours) == 1 and (np > 1 or len(r.stderr.strip().splitlines()) == 1),
          f"{overrides}: not one line of error: {r.stderr!r}")


def case_bad_inputs(job):
    import h5py
    import numpy as np
    expect_exit_2(job, "res", ["model.resolution=48"], ["model.resolution", "48"])
    expect_exit_2(job, "lists", ["progan.batch=[16, 8]"], ["progan.batch has 2 values", "3 resolutions"])
    expect_exit_2(job, "group", ["progan.batch=6"], ["model.mbstd_group 4", "4x4 stable"])
    expect_exit_2(job, "micro", ["train.micro_batch=2"], ["train.micro_batch 2", "model.mbstd_group"])
    expect_exit_2(job, "ranks", ["progan.batch=8"], ["model.mbstd_group 4", "4 ranks"], np=4)
    expect_exit_2(job, "big", ["progan.batch=[16, 16, 512]"], ["16x16 transition phase's batch 512", "progan.batch",
                                                             "256 images"])
    small = os.path.join(job.tmp, "small8.h5")
    with h5py.File(small, "w") as f:
        f.create_dataset("images", data=np.zeros((32, 8, 8, 3), np.uint8))
    expect_exit_2(job, "small", ["data.source=hdf5", f"data.path={small}"], ["small8.h5", "model.resolution"])
    written = os.listdir(job.runs) if os.path.exists(job.runs) else []
    check(not written, f"a refused run wrote {written}")


def case_info_and_sample(job):
    """gantrain info on the reference preset lists its 13 phases; on a checkpoint it names the phase; sampling a
    checkpoint of the 8x8 transition gives images at the final 16x16, and eval measures their SWD."""
    preset = os.path.join(job.src, "config/progan_food101_256.yaml")
    r = run(job.exe, "info", "--config", preset)
    check(r.returncode == 0, f"info --config failed: {r.stderr}")
    print(r.stdout)
    rows = [line.split() for line in r.stdout.splitlines()
            if len(line.split()) > 2 and line.split()[2] in ("stable", "transition")]
    check(len(rows) == 13, f"expected 13 phase rows, got {len(rows)}:\n{r.stdout}")
    steps = [1000] * 9 + [2000, 2000, 4000, 4000]
    for row, want in zip(rows, steps):
        check(row[3] == f"{want:,}" and row[5] == "128", f"row {row}: expected {want} steps at batch 128")
    check(rows[-1][1] == "256x256" and rows[0][1] == "4x4", f"first/last rows: {rows[0]} / {rows[-1]}")
    t = job.train(1, "s", "train.max_steps=9")
    check(t.returncode == 0, f"training failed: {t.stderr[-2000:]}")
    ck = job.ckpt("s", 9)
    r = run(job.exe, "info", ck)
    check(r.returncode == 0 and "progan phase 1: 8x8 transition | alpha 0.5000" in r.stdout, f"info: {r.stdout}{r.stderr}")
    out = os.path.join(job.tmp, "s.h5")
    r = run(job.exe, "sample", "--checkpoint", ck, "--out", out, "--n", "4")
    check(r.returncode == 0, f"sample failed: {r.stderr}")
    images = checkpoint_tensors(out)["images"]
    check(images.shape == (4, 3, 16, 16), f"samples of shape {images.shape}, expected (4, 3, 16, 16)")
    # Upsampled from 8x8: every 2x2 block holds one value.
    check((images[:, :, ::2, ::2] == images[:, :, 1::2, 1::2]).all(), "the 8x8 samples were not upsampled by repetition")
    # The SWD of the transition's samples (upsampled to 16x16) against a 16x16 dataset.
    import h5py
    import numpy as np
    data = os.path.join(job.tmp, "d16.h5")
    with h5py.File(data, "w") as f:
        f.create_dataset("images", data=np.random.default_rng(0).integers(0, 255, (128, 16, 16, 3), dtype=np.uint8))
    r = run(job.exe, "eval", "--metric", "swd", "--checkpoint", ck, "--data", data, "--n", "128")
    check(r.returncode == 0 and "SWDx1e3_16" in r.stdout, f"eval on a transition checkpoint: {r.stdout}{r.stderr}")


def case_nan_rollback_across_phases(job):
    """A NaN in the 8x8 transition (step 8) with train.nan_policy rollback: the newest checkpoint (step 6) holds the 4x4
    networks; the run reloads it, grows to the transition again (the new block from its initial weights) and
    finishes with finite weights."""
    import numpy as np
    r = job.train(1, "nan", "train.nan_policy=rollback", env={"GANTRAIN_TEST_FAULT": "0:7:nan"})
    check(r.returncode == 0, f"rollback run: exit {r.returncode}\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    check("step 8: d_loss is not finite on rank 0" in r.stdout and "ckpt_00000006.h5 (rollback 1 of at most 3)" in r.stdout,
          f"no rollback to step 6 in: {r.stdout[-3000:]}")
    steps = [json.loads(x)["step"] for x in open(os.path.join(job.runs, "nan", "metrics.jsonl")) if "d_loss" in x]
    check(steps == [s for s in range(2, TOTAL + 1, 2) if s != 8], f"logged steps after the rollback: {steps}")
    final = checkpoint_tensors(job.ckpt("nan", TOTAL))
    check(all(np.all(np.isfinite(v)) for v in final.values() if v.dtype.kind == "f"), "non-finite final checkpoint")
    check(meta(job.ckpt("nan", TOTAL))["resolution"] == 16, "the run did not grow to 16x16 after the rollback")


def case_preset_on_ingested_folder(job):
    """The reference preset end to end on a folder of generated pictures (Food-101 is not on this machine): ingest
    --size 256, then every one of its 13 phases for one step at tiny widths on 2 ranks, from 4x4 to 256x256 with the
    preset's objective, EMA and schedule shape; the last checkpoint holds the 256x256 networks."""
    import numpy as np
    sys.path.insert(0, os.path.join(job.src, "tests", "e2e"))
    from test_cli import png_bytes, write_bytes  # noqa: E402  (tests/e2e/test_cli.py)
    rng = np.random.default_rng(3)
    root = os.path.join(job.tmp, "food")
    yy, xx = np.mgrid[0:300, 0:280]
    for i in range(16):  # smooth coloured blobs, landscape: the center crop matters
        cy, cx, rad = rng.integers(60, 240), rng.integers(60, 220), rng.integers(30, 90)
        blob = ((yy - cy) ** 2 + (xx - cx) ** 2 < rad * rad)[..., None] * rng.integers(60, 255, 3)
        write_bytes(os.path.join(root, f"dish_{i:02d}.png"), png_bytes((blob + 20).clip(0, 255).astype(np.uint8)))
    data = os.path.join(job.tmp, "food256.h5")
    r = run(job.exe, "ingest", "--from", root, "--out", data, "--size", "256")
    check(r.returncode == 0 and "wrote 16 images of 256x256x3" in r.stdout, f"ingest: {r.stdout}{r.stderr}")
    preset = os.path.join(job.src, "config/progan_food101_256.yaml")
    cmd = [job.exe, "train", "--config", preset, f"run.out_dir={job.runs}", "run.name=preset", "run.device=cpu",
           "run.threads=1", "data.source=hdf5", f"data.path={data}", "model.nz=16", "model.fmap_base=256",
           "model.fmap_max=8", "progan.phase_length=1", "progan.batch=8", "log.every_steps=1",
           "log.sample_every_steps=0", "checkpoint.every_steps=0", "checkpoint.every_minutes=0"]
    r = subprocess.run(mpirun.command(job.mpirun, 2, *cmd), capture_output=True, text=True, timeout=240,
                       env=mpirun.environment())
    check(r.returncode == 0, f"preset run: exit {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-2000:]}")
    check("phase 12: 256x256 stable from step 12" in r.stdout, f"no 256x256 stable phase: {r.stdout[-3000:]}")
    m = meta(job.ckpt("preset", 13))
    check(m["resolution"] == 256 and m["phase"] == 12 and m["images_seen"] == 13 * 8, f"final checkpoint: {m}")
    names = {k.split("/")[2] for k in checkpoint_tensors(job.ckpt("preset", 13)) if k.startswith("G_ema/params/")}
    check("torgb256.weight" in names and "b256.conv1.weight" in names, f"G_ema lacks the 256x256 block: {sorted(names)}")


def case_swd_matches_eval(job):
    """The SWD hook in a progressive run (samples upsampled to 16x16, the networks as their checkpoint records them)
    equals `gantrain eval --train-noise` on the checkpoints of the same steps: mid-transition (9), at the end of a
    transition (12) and in a stable phase (30)."""
    import h5py
    import numpy as np
    data = os.path.join(job.tmp, "d16.h5")
    with h5py.File(data, "w") as f:
        f.create_dataset("images", data=np.random.default_rng(1).integers(0, 255, (256, 16, 16, 3), dtype=np.uint8))
    r = job.train(1, "swd", "data.source=hdf5", f"data.path={data}", "log.swd_every_steps=3", "log.swd_images=128",
                  "log.tensorboard=false")
    check(r.returncode == 0, f"train failed: {r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    lines = {x["step"]: x for x in map(json.loads, open(os.path.join(job.runs, "swd", "metrics.jsonl"))) if "swd" in x}
    check(sorted(lines) == list(range(0, TOTAL + 1, 3)), f"swd at steps {sorted(lines)}")
    for step in (9, 12, TOTAL):
        e = run(job.exe, "eval", "--metric", "swd", "--checkpoint", job.ckpt("swd", step), "--data", data, "--n", "128",
                "--seed", "1234", "--train-noise")
        check(e.returncode == 0, f"eval failed: {e.stdout}{e.stderr}")
        value = float([line.split()[1] for line in e.stdout.splitlines() if line.startswith("SWDx1e3_avg")][0])
        print(f"step {step}: training swd {lines[step]['swd']:.4f}, eval {value:.4f}")
        check(abs(lines[step]["swd"] - value) <= 0.6e-4, f"step {step}: swd {lines[step]['swd']} vs eval's {value}")


CASES = {"phases_np1_np2": case_phases_np1_np2, "swd_matches_eval": case_swd_matches_eval, "preset_on_ingested_folder": case_preset_on_ingested_folder, "nan_rollback_across_phases": case_nan_rollback_across_phases, "resume_in_transition": case_resume_in_transition,
         "bad_inputs": case_bad_inputs, "info_and_sample": case_info_and_sample}


def run_case(args, tmp):
    return CASES[args.case](Job(args, tmp))


if __name__ == "__main__":
    sys.exit(script_main(run_case, "gt_progan", mpirun=True))
