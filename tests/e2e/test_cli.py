#!/usr/bin/python3
"""End-to-end tests of the gantrain CLI: exit codes, messages, run directory contents, checkpoints readable by h5py."""
import json
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "common"))
from gt_test import check, run, script_main, skip  # noqa: E402  (tests/common/gt_test.py)


def case_info_param_counts(exe, src, tmp):
    r = run(exe, "info", "--config", os.path.join(src, "config/dcgan_celeba64.yaml"))
    check(r.returncode == 0, f"info failed: {r.stderr}")
    check("G = 12,658,432 parameters" in r.stdout, f"G count not in output:\n{r.stdout}")
    check("D = 11,036,160 parameters" in r.stdout, f"D count not in output:\n{r.stdout}")
    check("objective: nonsaturating | 1 D update per G update" in r.stdout, f"objective line:\n{r.stdout}")
    # The other presets: the same networks, their objectives.
    for preset, words in [("wgan", ["objective: wgan", "clamped to +-0.01", "5 D updates per G update",
                                    "noise of its own"]),
                          ("hinge", ["objective: hinge", "1 D update per G update"])]:
        r = run(exe, "info", "--config", os.path.join(src, f"config/{preset}_celeba64.yaml"))
        check(r.returncode == 0 and "G = 12,658,432 parameters" in r.stdout, f"{preset}: {r.stdout}{r.stderr}")
        for w in words:
            check(w in r.stdout, f"{preset}: {w!r} not in:\n{r.stdout}")


def expect_user_error(exe, args, must_contain, out_dir):
    r = run(exe, *args)
    check(r.returncode == 2, f"{args}: exit {r.returncode}, expected 2; stderr: {r.stderr}")
    for s in must_contain:
        check(s in r.stderr, f"{args}: stderr lacks {s!r}: {r.stderr!r}")
    check("Traceback" not in r.stderr and "terminate called" not in r.stderr, f"crash output: {r.stderr}")
    check(len(r.stderr.strip().splitlines()) == 1, f"expected one line of error, got: {r.stderr!r}")
    check(not os.path.exists(out_dir) or not os.listdir(out_dir), f"{args}: something was written to {out_dir}")


def bad_hdf5_datasets(tmp):
    """HDF5 files a 32x32 gray model must refuse, each with words its error must contain."""
    import h5py
    import numpy as np

    def dataset(name, shape, dtype=np.uint8, key="images"):
        path = os.path.join(tmp, name)
        with h5py.File(path, "w") as f:  # written out: a dataset's pixels must fit in its file
            f.create_dataset(key, data=np.zeros(shape, dtype))
        return path

    return [(dataset("layout.h5", (64, 32, 32, 1), key="pixels"), ["layout.h5", "no /images"]),
            (dataset("rank3.h5", (64, 32, 32)), ["rank3.h5", "[N, H, W, C]"]),
            (dataset("float.h5", (64, 32, 32, 1), np.float32), ["float.h5", "float32", "uint8"]),
            (dataset("res16.h5", (64, 16, 16, 1)), ["res16.h5", "16x16", "model.resolution", "--size 32"]),
            (dataset("rgb.h5", (64, 32, 32, 3)), ["rgb.h5", "model.channels"]),
            (dataset("empty.h5", (0, 32, 32, 1)), ["empty.h5", "no images"])]


def case_bad_input_exits_2(exe, src, tmp):
    tiny = os.path.join(src, "config/tiny.yaml")
    out = os.path.join(tmp, "runs")
    od = f"run.out_dir={out}"
    expect_user_error(exe, ["train", "--config", os.path.join(tmp, "missing.yaml")], ["missing.yaml"], out)
    bad_yaml = os.path.join(tmp, "bad.yaml")
    with open(bad_yaml, "w") as f:
        f.write("model:\n  nz: [1, 2\n")
    expect_user_error(exe, ["train", "--config", bad_yaml], ["bad.yaml"], out)
    expect_user_error(exe, ["train", "--config", tiny, od, "optim.g.lrr=0.1"], ["optim.g.lrr", "optim.g.lr"], out)
    expect_user_error(exe, ["train", "--config", tiny, od, "train.batch_size=abc"], ["train.batch_size"], out)
    expect_user_error(exe, ["train", "--config", tiny, od, "train.batch_size=0"], ["train.batch_size"], out)
    expect_user_error(exe, ["train", "--config", tiny, od, "model.resolution=48"], ["model.resolution"], out)
    expect_user_error(exe, ["train", "--config", tiny, od, "data.source=fashion-mnist",
                            f"data.path={tmp}/no_such_dir"], ["no_such_dir"], out)
    for path, words in bad_hdf5_datasets(tmp):  # tiny.yaml's model is 32x32 gray
        expect_user_error(exe, ["train", "--config", tiny, od, "data.source=hdf5", f"data.path={path}"], words, out)
    expect_user_error(exe, ["train", "--config", tiny, od, "train.batch_size=100000"], ["train.batch_size"], out)
    # The objective's keys: each bad value names its key; WGAN without its clamp names both keys.
    expect_user_error(exe, ["train", "--config", tiny, od, "train.n_critic=0"], ["train.n_critic", ">= 1"], out)
    expect_user_error(exe, ["train", "--config", tiny, od, "loss.drift=-0.1"], ["loss.drift", ">= 0"], out)
    expect_user_error(exe, ["train", "--config", tiny, od, "loss.clip_critic=-1"], ["loss.clip_critic", ">= 0"], out)
    expect_user_error(exe, ["train", "--config", tiny, od, "loss.objective=wasserstein"],
                      ["loss.objective", "nonsaturating", "wgan", "hinge"], out)
    expect_user_error(exe, ["train", "--config", tiny, od, "loss.objective=wgan"],
                      ["loss.objective wgan", "loss.clip_critic > 0", "loss.gp_weight > 0"], out)
    # The gradient penalty: a negative weight, a batch-norm critic, clipping and penalty together, a bad norm.
    expect_user_error(exe, ["train", "--config", tiny, od, "loss.gp_weight=-1"], ["loss.gp_weight", ">= 0"], out)
    expect_user_error(exe, ["train", "--config", tiny, od, "loss.gp_weight=10"],
                      ["loss.gp_weight", "batch norm", "model.d_norm"], out)
    expect_user_error(exe, ["train", "--config", tiny, od, "loss.gp_weight=10", "model.d_norm=layer",
                            "loss.clip_critic=0.01"], ["loss.gp_weight", "loss.clip_critic", "set one of them"], out)
    expect_user_error(exe, ["train", "--config", tiny, od, "model.d_norm=instance"], ["model.d_norm", "layer"], out)
    expect_user_error(exe, ["train", "--config", tiny, od, "loss.gp_every=0"], ["loss.gp_every", ">= 1"], out)
    # The large-batch plan: micro-batches that do not split a rank's share, a budget below one image.
    expect_user_error(exe, ["train", "--config", tiny, od, "train.micro_batch=3"],
                      ["train.micro_batch 3", "does not divide", "e.g. 2"], out)
    expect_user_error(exe, ["train", "--config", tiny, od, "train.memory_mb=0.001"], ["train.memory_mb", "one image"],
                      out)
    expect_user_error(exe, ["train", "--config", tiny, od, "model.g_norm=instance"], ["model.g_norm", "layer"], out)
    expect_user_error(exe, ["train", "--config", tiny, od, "ema.beta=1"], ["ema.beta", "[0, 1)"], out)
    expect_user_error(exe, ["train", "--config", tiny, od, "ema.beta=0.9", "ema.half_life_images=100"],
                      ["ema.beta", "ema.half_life_images", "set one of them"], out)
    expect_user_error(exe, ["train", "--config", tiny, od, "ema.rampup=0.05"], ["ema.rampup", "ema.half_life_images"],
                      out)
    expect_user_error(exe, ["train", "--config", tiny, od, "train.lr_scaling=quadratic"],
                      ["train.lr_scaling", "linear", "sqrt"], out)
    expect_user_error(exe, ["train", "--config", tiny, od, "train.lr_base_batch=0"], ["train.lr_base_batch", ">= 1"], out)
    expect_user_error(exe, ["sample", "--checkpoint", os.path.join(tmp, "nope.h5"), "--out", os.path.join(tmp, "x.png")],
                      ["nope.h5"], out)
    not_h5 = os.path.join(tmp, "text.h5")
    with open(not_h5, "w") as f:
        f.write("not an hdf5 file\n")
    expect_user_error(exe, ["info", not_h5], ["text.h5"], out)
    r = run(exe, "train")
    check(r.returncode == 2, f"train without --config: exit {r.returncode}")


def case_damaged_hdf5_refused(exe, src, tmp):
    """Files that crash or hang HDF5 1.10 (found by fuzzing) are refused with exit 2: HDF5 parses them in a child process."""
    import shutil
    tiny = os.path.join(src, "config/tiny.yaml")
    out = os.path.join(tmp, "runs")
    env = dict(os.environ, GANTRAIN_FILE_CHECK_TIMEOUT_S="3")  # two of the files make HDF5 loop forever
    found = sorted(f for f in os.listdir(os.path.join(src, "tests/fuzz/corpus/dataset")) if f.startswith("found_hdf5_"))
    check(len(found) >= 4, f"the HDF5 crash files are missing: {found}")
    verdicts = ("is damaged", "could not be checked", "is corrupt", "cannot be read")
    for name in found:
        path = os.path.join(tmp, name)  # the message names the file: a copy without odd characters in its path
        shutil.copy(os.path.join(src, "tests/fuzz/corpus/dataset", name), path)
        for args in (["info", path], ["train", "--config", tiny, f"run.out_dir={out}", "data.source=hdf5",
                                      f"data.path={path}"]):
            r = run(exe, *args, env=env)
            check(r.returncode == 2, f"{args}: exit {r.returncode}, expected 2: {r.stderr}")
            check(path in r.stderr and any(v in r.stderr for v in verdicts), f"{args}: {r.stderr!r}")
            check(len(r.stderr.strip().splitlines()) == 1, f"{args}: expected one line, got {r.stderr!r}")
            print(f"{name} {args[0]}: {r.stderr.strip()[:160]}")
    check(not os.path.exists(out) or not os.listdir(out), "a run directory was created for a damaged dataset")

    # A checkpoint of the older formats (no digest block) is parsed in a child first, then here.
    legacy = os.path.join(src, "tests/fuzz/corpus/checkpoint/tiny_width1_format2.h5")
    r = run(exe, "info", legacy)
    check(r.returncode == 0 and "format_version 2" in r.stdout and "verdict: ok" in r.stdout, f"{r.stdout} {r.stderr}")
    r = run(exe, "sample", "--checkpoint", legacy, "--n", "4", "--out", os.path.join(tmp, "legacy.png"))
    check(r.returncode == 0, f"sample from a format-2 checkpoint: {r.stderr}")
    r = run(exe, "info", legacy, env=dict(os.environ, GANTRAIN_TEST_KILL="file_check:1"))  # the child dies
    check(r.returncode == 2 and "is damaged" in r.stderr and "signal 9" in r.stderr, f"{r.returncode} {r.stderr}")
    # One that says format 3 without the block was rewritten by another tool.
    import h5py
    import numpy as np
    rewritten = os.path.join(tmp, "rewritten.h5")
    shutil.copy(legacy, rewritten)
    with h5py.File(rewritten, "r+") as f:
        f["meta"].attrs["format_version"] = np.int64(3)
    r = run(exe, "info", rewritten)
    check(r.returncode == 2 and "says format_version 3 but lacks its digest block" in r.stderr, r.stderr)
    # A format-3 checkpoint whose digest block is damaged is refused before HDF5 sees it (HDF5 would find
    # the superblock behind the block and parse the file with nothing to verify it).
    sealed = os.path.join(tmp, "sealed.h5")
    shutil.copy(os.path.join(src, "tests/fuzz/corpus/checkpoint/tiny_width1.h5"), sealed)
    with open(sealed, "r+b") as f:
        f.write(b"G")
    r = run(exe, "info", sealed)
    check(r.returncode == 2 and "its digest block (the first 512 bytes) is damaged" in r.stderr, r.stderr)


def run_on_terminal(args, columns, env):
    """Runs args with a pseudo-terminal of `columns` columns as stdin, stdout and stderr; (exit code, bytes written)."""
    import fcntl
    import pty
    import struct
    import termios
    pid, fd = pty.fork()
    if pid == 0:
        os.execve(args[0], args, env)
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    out = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return os.waitstatus_to_exitcode(status), out


def case_progress_display(exe, src, tmp):
    """On a terminal one status line is redrawn in place, cut to the width; off it, plain lines every log.every_steps."""
    import re
    tiny = os.path.join(src, "config/tiny.yaml")
    common = ["train", "--config", tiny, f"run.out_dir={tmp}/runs", "train.max_steps=30", "log.every_steps=10",
              "log.sample_every_steps=0", "checkpoint.every_steps=0"]
    columns = 70
    rc, out = run_on_terminal([exe, *common, "run.name=tty"], columns, dict(os.environ, TERM="xterm"))
    check(rc == 0, f"exit {rc}: {out[-2000:]!r}")
    erase = b"\r\x1b[2K"
    check(erase in out, f"no status line redrawn in place: {out[:1000]!r}")
    # A status is what follows an erase up to the next "\r" (the pseudo-terminal turns "\n" into "\r\n").
    statuses = [part.split(b"\r")[0] for part in out.split(erase)[1:]]
    statuses = [st for st in statuses if st.startswith(b"step ") and b"%) | epoch " in st]
    check(statuses, f"no status text: {out[:2000]!r}")
    for st in statuses:
        check(len(st) < columns, f"a status of {len(st)} characters on a {columns}-column terminal: {st!r}")
    # The first step after each logged line redraws at once (the 10-per-second limit only spaces out later ones).
    for step in (1, 11, 21):
        check(any(st.startswith(f"step {step}/30 (".encode()) for st in statuses), f"no status at step {step}: {statuses}")
    for step in (10, 20, 30):
        line = f"step {step:>6}/30 | epoch".encode()
        check(line in out, f"the logged line of step {step} is missing: {out[-3000:]!r}")
        before = out[:out.index(line)]
        check(before.endswith(b"\n") or before.endswith(erase),
              f"step {step}'s line was written over a status: {before[-200:]!r}")
    check(out.rindex(b"%) | epoch") < out.rindex(b"step     30/30 | epoch"), "a status was drawn after the last line")
    log = open(os.path.join(tmp, "runs", "tty", "train.log"), "rb").read()
    check(b"\x1b" not in log and b"\r" not in log and b"step     10/30 | epoch" in log, f"terminal codes in train.log: {log[:500]!r}")

    # Off a terminal (a pipe, as under Slurm or CI): plain lines only.
    r = run(exe, *common, "run.name=pipe", env=dict(os.environ, TERM="xterm"))
    check(r.returncode == 0, r.stderr)
    check("\x1b" not in r.stdout and "\r" not in r.stdout, f"terminal codes in piped output: {r.stdout[:500]!r}")
    logged = re.findall(r"^step +(\d+)/30 \|", r.stdout, re.M)
    check(logged == ["10", "20", "30"], f"logged steps {logged}: {r.stdout}")
    print(f"terminal: {len(statuses)} status redraws of at most {max(len(st) for st in statuses)} columns; "
          f"pipe: lines at steps {logged}")


def case_timing_breakdown(exe, src, tmp):
    """metrics.jsonl's timing breakdown adds up to the step time; the CPU engine's named phases hold most of it."""
    parts = ["ms_g_forward", "ms_d_forward_backward", "ms_g_backward", "ms_comm_wait", "ms_optimizer", "ms_step_other",
             "ms_data", "ms_rest"]
    phases = parts[:5]
    batch = 16
    r = run(exe, "train", "--config", os.path.join(src, "config/tiny.yaml"), f"run.out_dir={tmp}/runs", "run.name=t",
            "train.max_steps=30", "log.every_steps=10", f"train.batch_size={batch}", "model.g_width=16",
            "model.d_width=16", "log.sample_every_steps=10", "checkpoint.every_steps=10")
    check(r.returncode == 0, r.stderr)
    lines = [json.loads(x) for x in open(os.path.join(tmp, "runs", "t", "metrics.jsonl"))]
    check(len(lines) == 3, f"{len(lines)} metrics lines")
    for m in lines:
        for k in parts + ["ms_step"]:
            check(k in m and m[k] >= 0, f"step {m['step']}: {k} missing or negative: {m}")
        total = sum(m[k] for k in parts)
        check(abs(total - m["ms_step"]) <= 0.05 * m["ms_step"],
              f"step {m['step']}: the parts add up to {total:.3f} ms, the step took {m['ms_step']:.3f} ms")
        # An independent clock: images/s over the same window.
        check(abs(batch * 1e3 / m["ms_step"] - m["images_per_sec"]) <= 0.05 * m["images_per_sec"],
              f"step {m['step']}: {m['ms_step']} ms per step but {m['images_per_sec']} images/s")
        named = sum(m[k] for k in phases)
        check(named >= 0.5 * m["ms_step"], f"step {m['step']}: the step's phases hold {named:.2f} of {m['ms_step']:.2f} ms")
        check(m["ms_d_forward_backward"] > m["ms_g_forward"] > 0, f"step {m['step']}: D's three passes vs G's one: {m}")
    # Samples and checkpoints every 10 steps land in `rest` (of the window after them).
    check(lines[1]["ms_rest"] > lines[1]["ms_comm_wait"], f"samples and checkpoints not in rest: {lines[1]}")
    summary = [x for x in r.stdout.splitlines() if x.startswith("time per step (ms): G forward ")]
    check(len(summary) == 1 and "| rest " in summary[0] and "| total " in summary[0], f"no summary line: {r.stdout}")
    for m in lines:
        print(f"step {m['step']}: " + ", ".join(f"{k[3:]} {m[k]:.2f}" for k in parts) + f" | step {m['ms_step']:.2f} ms")
    print(summary[0])


def case_device_choice(exe, src, tmp):
    """run.device cuda trains on the GPU where there is one, else is one clear error with nothing written;
    run.device auto falls back to the CPU without a GPU."""
    tiny = os.path.join(src, "config/tiny.yaml")
    out = os.path.join(tmp, "runs")
    od = f"run.out_dir={out}"
    r = run(exe, "train", "--config", tiny, od, "run.name=cuda", "run.device=cuda", "train.max_steps=3")
    if r.returncode == 2:
        check("run.device is cuda" in r.stderr, f"the error does not name run.device: {r.stderr!r}")
        check("no usable GPU" in r.stderr or "built without CUDA" in r.stderr, f"no reason given: {r.stderr!r}")
        check(len(r.stderr.strip().splitlines()) == 1, f"expected one line of error, got: {r.stderr!r}")
        check(not os.path.exists(out) or not os.listdir(out), "something was written")
        r = run(exe, "train", "--config", tiny, od, "run.name=auto", "run.device=auto", "train.max_steps=2")
        check(r.returncode == 0, f"run.device auto without a GPU failed: {r.stderr}")
        check("| cpu, " in r.stdout, f"run.device auto did not say it runs on the CPU:\n{r.stdout}")
        return
    check(r.returncode == 0, f"run.device cuda failed: exit {r.returncode}: {r.stderr}")
    check("| cuda " in r.stdout, f"the log does not say cuda:\n{r.stdout}")
    check(os.path.exists(os.path.join(out, "cuda", "checkpoints", "ckpt_00000003.h5")), "no final checkpoint")


def case_tiny_train_sample_info(exe, src, tmp):
    import h5py
    import numpy as np
    tiny = os.path.join(src, "config/tiny.yaml")
    out = os.path.join(tmp, "runs")
    r = run(exe, "train", "--config", tiny, f"run.out_dir={out}", "run.name=t", "train.max_steps=6",
            "log.every_steps=2", "log.sample_every_steps=3", "checkpoint.every_steps=3")
    check(r.returncode == 0, f"train failed ({r.returncode}): {r.stdout}\n{r.stderr}")
    rd = os.path.join(out, "t")
    for name in ["config.yaml", "metrics.jsonl", "train.log", "samples/step_00000003.png", "samples/step_00000006.png",
                 "checkpoints/ckpt_00000003.h5", "checkpoints/ckpt_00000006.h5"]:
        check(os.path.isfile(os.path.join(rd, name)), f"missing {name} in {rd}: {os.listdir(rd)}")
    check(not any(n.endswith(".tmp") for n in os.listdir(os.path.join(rd, "checkpoints"))), "temporary file left")
    check("checkpoint:" in r.stdout and "ckpt_00000006.h5" in r.stdout, "final paths not printed")
    lines = [json.loads(l) for l in open(os.path.join(rd, "metrics.jsonl"))]
    check([l["step"] for l in lines] == [2, 4, 6], f"metrics steps {[l['step'] for l in lines]}")
    for l in lines:
        for k in ["d_loss", "g_loss", "d_real", "d_fake", "images_per_sec"]:
            check(isinstance(l[k], float) and np.isfinite(l[k]), f"metric {k} = {l.get(k)}")
    ck = os.path.join(rd, "checkpoints/ckpt_00000006.h5")
    with h5py.File(ck, "r") as f:
        m = f["meta"].attrs
        check(int(m["step"]) == 6 and int(m["world_size"]) == 1, f"meta {dict(m)}")
        cfg = m["config"]
        cfg = cfg.decode() if isinstance(cfg, bytes) else str(cfg)
        check("batch_size" in cfg, "config text not in checkpoint")
        w = f["G/params/main.0.weight"]
        check(w.dtype == np.float32 and w.shape[0] == 8, f"G main.0.weight {w.dtype} {w.shape}")
        check("main.1.running_mean" in f["G/params"] and "main.1.num_batches_tracked" in f["G/params"], "BN buffers")
        check(int(f["G/params/main.1.num_batches_tracked"][()]) == 6, "num_batches_tracked after 6 steps")
        check(int(f["D/optim/step"][()]) == 6, "D optimizer step count")
        check("main.0.weight" in f["D/optim/exp_avg"], "Adam state")
    png = os.path.join(tmp, "s.png")
    r = run(exe, "sample", "--checkpoint", ck, "--n", "9", "--seed", "5", "--out", png)
    check(r.returncode == 0 and os.path.getsize(png) > 0, f"sample png: {r.stderr}")
    h5 = os.path.join(tmp, "s.h5")
    r = run(exe, "sample", "--checkpoint", ck, "--n", "5", "--seed", "5", "--out", h5)
    check(r.returncode == 0, f"sample h5: {r.stderr}")
    with h5py.File(h5, "r") as f:
        z, im = f["z"][()], f["images"][()]
    check(z.shape == (5, 8) and z.dtype == np.float32, f"/z {z.shape} {z.dtype}")
    check(im.shape == (5, 1, 32, 32) and im.min() >= -1 and im.max() <= 1, f"/images {im.shape}")
    check(float(im.std()) > 0, "images are constant")
    r2 = run(exe, "sample", "--checkpoint", ck, "--n", "5", "--seed", "5", "--out", os.path.join(tmp, "s2.h5"))
    check(r2.returncode == 0, f"second sample h5: {r2.stderr}")
    with h5py.File(os.path.join(tmp, "s2.h5"), "r") as f:
        check(np.array_equal(f["images"][()], im), "sampling is not deterministic for a fixed seed")
    r = run(exe, "info", ck)
    check(r.returncode == 0 and "step 6" in r.stdout, f"info checkpoint: {r.stdout} {r.stderr}")
    # The same command again: the run is finished, so nothing is trained and nothing changes.
    before = open(os.path.join(rd, "metrics.jsonl")).read()
    r = run(exe, "train", "--config", tiny, f"run.out_dir={out}", "run.name=t", "train.max_steps=6")
    check(r.returncode == 0 and r.stdout.startswith(f"run {rd} is finished"), f"rerun of a finished run: {r.stdout} {r.stderr}")
    check(not os.path.exists(os.path.join(out, "t.1")), "a finished run's rerun made a new directory")
    # checkpoint.resume=never: a new run beside it, in t.1; the first run is kept.
    r = run(exe, "train", "--config", tiny, f"run.out_dir={out}", "run.name=t", "train.max_steps=2",
            "checkpoint.resume=never")
    check(r.returncode == 0 and os.path.isfile(os.path.join(out, "t.1", "checkpoints", "ckpt_00000002.h5")),
          f"second run: {r.stdout} {r.stderr}")
    check("is taken; checkpoint.resume is never" in r.stdout.splitlines()[0], f"first line: {r.stdout}")
    check(open(os.path.join(rd, "metrics.jsonl")).read() == before, "the first run's metrics changed")


def case_run_length_epochs(exe, src, tmp):
    """train.epochs sets the run length when train.max_steps is 0: whole batches per epoch, the rest dropped."""
    import h5py
    tiny = os.path.join(src, "config/tiny.yaml")
    out = os.path.join(tmp, "runs")
    # 64 images: batch 8 makes 8 steps an epoch; batch 12 makes 5 (the last 4 images of an epoch unused).
    for batch, epochs, steps in [(8, 2, 16), (12, 1, 5)]:
        name = f"b{batch}e{epochs}"
        r = run(exe, "train", "--config", tiny, f"run.out_dir={out}", f"run.name={name}", "train.max_steps=0",
                f"train.epochs={epochs}", f"train.batch_size={batch}", "log.every_steps=1",
                "log.sample_every_steps=0", "checkpoint.every_steps=0")
        check(r.returncode == 0, f"{name}: train failed ({r.returncode}): {r.stdout}\n{r.stderr}")
        check(f"{steps // epochs} batches per epoch | {steps} steps" in r.stdout, f"{name}: plan line:\n{r.stdout}")
        lines = [json.loads(l) for l in open(os.path.join(out, name, "metrics.jsonl"))]
        check([l["step"] for l in lines] == list(range(1, steps + 1)), f"{name}: metrics steps {[l['step'] for l in lines]}")
        check([int(l["epoch"]) for l in lines] == [(s - 1) // (steps // epochs) for s in range(1, steps + 1)],
              f"{name}: epochs {[l['epoch'] for l in lines]}")
        with h5py.File(os.path.join(out, name, "checkpoints", f"ckpt_{steps:08d}.h5"), "r") as f:
            m = f["meta"].attrs
            check(int(m["step"]) == steps and int(m["epoch"]) == epochs - 1 and int(m["images_seen"]) == steps * batch,
                  f"{name}: meta step {m['step']} epoch {m['epoch']} images_seen {m['images_seen']}")
            check(int(f["D/optim/step"][()]) == steps and int(f["G/optim/step"][()]) == steps, f"{name}: optimizer steps")
        print(f"{name}: {steps} steps, epochs 0..{epochs - 1}")


def case_stop_on_sigterm(exe, src, tmp):
    tiny = os.path.join(src, "config/tiny.yaml")
    out = os.path.join(tmp, "runs")
    p = subprocess.Popen([exe, "train", "--config", tiny, f"run.out_dir={out}", "run.name=s", "train.max_steps=1000000",
                          "log.every_steps=1", "checkpoint.every_steps=0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        line = p.stdout.readline()
        if line.startswith("step"):
            break
    p.send_signal(signal.SIGTERM)
    try:
        rc = p.wait(timeout=60)
    except subprocess.TimeoutExpired:
        p.kill()
        raise AssertionError("training did not stop within 60 s of SIGTERM")
    check(rc == 3, f"exit code {rc} after SIGTERM, expected 3")
    ck = os.listdir(os.path.join(out, "s", "checkpoints"))
    check(len(ck) == 1 and ck[0].endswith(".h5"), f"checkpoints after SIGTERM: {ck}")


def case_hdf5_dataset_train(exe, src, tmp):
    """A dataset file in the documented layout (written here with h5py) trains, gray into RGB included."""
    import h5py
    import numpy as np
    path = os.path.join(tmp, "gray32.h5")
    rng = np.random.default_rng(3)
    with h5py.File(path, "w") as f:
        d = f.create_dataset("images", shape=(40, 32, 32, 1), maxshape=(None, 32, 32, 1), chunks=(1, 32, 32, 1),
                             dtype=np.uint8)
        d[:] = rng.integers(0, 256, (40, 32, 32, 1), dtype=np.uint8)
        f["labels"] = np.arange(40, dtype=np.int64)
        f.attrs.update({"format": "gantrain-dataset", "format_version": 1, "source": "e2e random", "count": 40,
                        "height": 32, "width": 32, "channels": 1, "created_by": "test_cli.py"})
    tiny = os.path.join(src, "config/tiny.yaml")
    out = os.path.join(tmp, "runs")
    for channels in ["1", "3"]:
        r = run(exe, "train", "--config", tiny, f"run.out_dir={out}", f"run.name=h5_{channels}", "data.source=hdf5",
                f"data.path={path}", f"model.channels={channels}", "data.flip=true", "train.max_steps=6")
        check(r.returncode == 0, f"train on {path} (model.channels={channels}) failed: {r.stdout}\n{r.stderr}")
        check("HDF5" in r.stdout and "40 images 32x32x1" in r.stdout, f"data line: {r.stdout}")
        check(os.path.isfile(os.path.join(out, f"h5_{channels}", "checkpoints", "ckpt_00000006.h5")), "no checkpoint")


def case_demo_smoke(exe, src, tmp):
    if not os.path.exists("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"):
        return skip("Debian package dataset-fashion-mnist is not installed")
    # The demo's two steps: ingest Fashion-MNIST once, then train from the HDF5 file.
    out = os.path.join(tmp, "runs")
    data = os.path.join(tmp, "fashion-mnist-32.h5")
    r = run(exe, "ingest", "--from", "fashion-mnist", "--out", data, "--size", "32")
    check(r.returncode == 0 and os.path.isfile(data), f"ingest failed: {r.stdout}\n{r.stderr}")
    r = run(exe, "info", data)
    check(r.returncode == 0 and "60,000 images 32x32x1" in r.stdout, f"info on the dataset: {r.stdout} {r.stderr}")
    r = run(exe, "train", "--config", os.path.join(src, "config/demo.yaml"), f"run.out_dir={out}",
            f"data.path={data}", "train.max_steps=4", "log.every_steps=2")
    check(r.returncode == 0, f"demo config failed: {r.stdout}\n{r.stderr}")
    check("60000" in r.stdout and "fashion-mnist-32.h5" in r.stdout, f"data line missing: {r.stdout}")
    # The demo measures the SWD (log.swd_every_steps): before the first step and at the end.
    check("swd x1e3 at step 0:" in r.stdout and "swd x1e3 at step 4:" in r.stdout, f"no SWD lines: {r.stdout}")
    # Without the ingested file the demo config is a clear user error, not a crash.
    r = run(exe, "train", "--config", os.path.join(src, "config/demo.yaml"), f"run.out_dir={out}",
            f"data.path={tmp}/absent.h5")
    check(r.returncode == 2 and "absent.h5" in r.stderr, f"missing dataset: {r.returncode} {r.stderr}")


def png_bytes(pixels, level=6):
    """A PNG of uint8 pixels [H, W] or [H, W, C] (C = 1..4), written with zlib alone (no PIL needed)."""
    import struct
    import zlib
    import numpy as np
    h, w = pixels.shape[:2]
    c = 1 if pixels.ndim == 2 else pixels.shape[2]
    rows = np.concatenate([np.zeros((h, 1), np.uint8), pixels.reshape(h, w * c)], axis=1)  # filter byte 0 per row

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    header = struct.pack(">IIBBBBB", w, h, 8, {1: 0, 2: 4, 3: 2, 4: 6}[c], 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows.tobytes(), level)) +
            chunk(b"IEND", b""))


def write_bytes(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def torch_resize(pixels_hwc, size):
    """The oracle for ingest's resize: PyTorch's antialiased bilinear (PIL's filter), rounded to uint8."""
    import numpy as np
    import torch
    t = torch.from_numpy(pixels_hwc.astype(np.float32)).permute(2, 0, 1).unsqueeze(0)
    r = torch.nn.functional.interpolate(t, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return np.clip(np.floor(r[0].permute(1, 2, 0).numpy() + 0.5), 0, 255).astype(np.uint8)


def case_ingest_folder(exe, src, tmp):
    import h5py
    import numpy as np
    rng = np.random.default_rng(0)
    root = os.path.join(tmp, "photos")
    originals = {}
    for i in range(20):
        h, w = 40 + 3 * i, 60 - i  # landscape and portrait, so the center crop differs
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        rel = f"{'sub/' if i % 2 else ''}img_{i:02d}.{'PNG' if i % 5 == 0 else 'png'}"
        write_bytes(os.path.join(root, rel), png_bytes(img))
        originals[rel] = img
    write_bytes(os.path.join(root, "gray.png"), png_bytes(rng.integers(0, 256, (30, 30), dtype=np.uint8)))
    write_bytes(os.path.join(root, "rgba.png"), png_bytes(rng.integers(0, 256, (30, 30, 4), dtype=np.uint8)))
    write_bytes(os.path.join(root, "bad/notes.jpg"), b"not a picture\n")
    write_bytes(os.path.join(root, "bad/empty.png"), b"")
    whole = png_bytes(rng.integers(0, 256, (50, 50, 3), dtype=np.uint8))
    write_bytes(os.path.join(root, "bad/cut.png"), whole[:len(whole) // 2])
    write_bytes(os.path.join(root, "README.txt"), b"about these photos\n")
    out = os.path.join(tmp, "photos.h5")
    r = run(exe, "ingest", "--from", root, "--out", out, "--size", "16", "--threads", "2")
    check(r.returncode == 0, f"ingest failed ({r.returncode}): {r.stdout}\n{r.stderr}")
    check("wrote 22 images of 16x16x3" in r.stdout, f"report: {r.stdout}")
    for line in ["bad/notes.jpg: not an image", "bad/empty.png: empty", "bad/cut.png: truncated", "ignored 1 files"]:
        check(line in r.stdout, f"report lacks {line!r}: {r.stdout}")
    check("images/s" in r.stdout, f"no speed in the report: {r.stdout}")
    check(r.stderr.count("ingest: ") >= 5, f"no progress lines on a non-terminal stderr: {r.stderr!r}")
    check(not os.path.exists(out + ".tmp"), "temporary file left behind")
    with h5py.File(out, "r") as f:
        images = f["images"][()]
        check("labels" not in f, "a folder has no labels")
    check(images.shape == (22, 16, 16, 3) and images.dtype == np.uint8, f"/images {images.shape} {images.dtype}")
    order = sorted(list(originals) + ["gray.png", "rgba.png"])  # bytewise order of relative paths
    for name, img in originals.items():
        h, w = img.shape[:2]
        s = min(h, w)
        y, x = (h - s) // 2, (w - s) // 2
        want = torch_resize(img[y:y + s, x:x + s], 16)
        got = images[order.index(name)]
        diff = np.abs(got.astype(int) - want.astype(int)).max()
        check(diff <= 1, f"{name}: differs from torch's antialiased resize by {diff}")


def case_ingest_bad_input(exe, src, tmp):
    import numpy as np
    good = os.path.join(tmp, "good")
    write_bytes(os.path.join(good, "a.png"), png_bytes(np.zeros((8, 8, 3), np.uint8)))
    out = os.path.join(tmp, "out.h5")

    def expect_exit_2(args, must_contain):
        r = run(exe, "ingest", *args)
        check(r.returncode == 2, f"{args}: exit {r.returncode}, expected 2; stderr: {r.stderr}")
        last = r.stderr.strip().splitlines()[-1] if r.stderr.strip() else ""
        check("error" in last.lower(), f"{args}: last stderr line is not the error: {r.stderr!r}")
        for s in must_contain:
            check(s in last, f"{args}: error lacks {s!r}: {last!r}")
        check("terminate called" not in r.stderr, f"crash: {r.stderr}")
        check(not os.path.exists(out) and not os.path.exists(out + ".tmp"), f"{args}: something was written")

    expect_exit_2(["--from", os.path.join(tmp, "no_such_folder"), "--out", out, "--size", "16"], ["no_such_folder"])
    expect_exit_2(["--from", good, "--out", os.path.join(tmp, "no_dir", "x.h5"), "--size", "16"], ["--out", "no_dir"])
    expect_exit_2(["--from", good, "--out", out, "--size", "0"], ["--size"])
    expect_exit_2(["--from", good, "--out", out, "--size", "100000"], ["--size"])
    expect_exit_2(["--from", good, "--out", out, "--size", "16", "--crop", "1,2,3"], ["--crop"])
    expect_exit_2(["--from", good, "--out", out, "--size", "16", "--channels", "4"], ["--channels"])
    empty = os.path.join(tmp, "empty")
    os.makedirs(os.path.join(empty, "sub"))
    expect_exit_2(["--from", empty, "--out", out, "--size", "16"], [empty])
    bad = os.path.join(tmp, "bad")
    write_bytes(os.path.join(bad, "a.jpg"), b"text")
    write_bytes(os.path.join(bad, "b.png"), b"")
    expect_exit_2(["--from", bad, "--out", out, "--size", "16"], [bad, "skipped"])
    r = run(exe, "ingest", "--from", good, "--out", out)
    check(r.returncode == 2, f"ingest without --size: exit {r.returncode}")


def case_ingest_kill9_leaves_nothing(exe, src, tmp):
    import numpy as np
    rng = np.random.default_rng(1)
    root = os.path.join(tmp, "big")
    count = 80
    base = np.add.outer(np.arange(1024), np.arange(1024)).astype(np.uint8)
    for i in range(count):  # 1-megapixel images: slow enough to be caught half-way on one thread
        img = base + rng.integers(0, 4, (1024, 1024), dtype=np.uint8)
        write_bytes(os.path.join(root, f"{i:04d}.png"), png_bytes(img, level=1))
    out = os.path.join(tmp, "big.h5")
    args = [exe, "ingest", "--from", root, "--out", out, "--size", "32", "--threads", "1"]
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = p.stderr.readline()  # "ingest:  10% ..." once a tenth is written
    check(first.startswith("ingest:"), f"expected a progress line, got {first!r}")
    check(p.poll() is None, "ingest finished before it could be killed; make the test's images bigger")
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=60)
    check(not os.path.exists(out), f"{out} exists after kill -9 mid-way")
    # SIGINT (Ctrl-C) unwinds: no dataset and no temporary file either.
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = p.stderr.readline()
    check(p.poll() is None, "ingest finished before it could be interrupted")
    p.send_signal(signal.SIGINT)
    rest = p.communicate(timeout=60)[1]
    check(p.returncode not in (0, 2), f"exit code {p.returncode} after SIGINT")
    check("stopped by signal" in rest, f"no message after SIGINT: {rest!r}")
    check(not os.path.exists(out) and not os.path.exists(out + ".tmp"), "files left after SIGINT")
    # The next run replaces the stale temporary file and finishes normally.
    r = run(*args)
    check(r.returncode == 0 and f"wrote {count} images" in r.stdout, f"rerun failed: {r.stdout}\n{r.stderr}")
    check(os.path.exists(out) and not os.path.exists(out + ".tmp"), "rerun did not leave exactly the dataset")


def case_ingest_fashion_mnist(exe, src, tmp):
    import gzip
    import h5py
    import numpy as np
    fm = "/usr/share/datasets/fashion-mnist"
    if not os.path.exists(os.path.join(fm, "train-images-idx3-ubyte.gz")):
        return skip("Debian package dataset-fashion-mnist is not installed")
    out = os.path.join(tmp, "fm32.h5")
    r = run(exe, "ingest", "--from", "fashion-mnist", "--out", out, "--size", "32")
    check(r.returncode == 0, f"ingest fashion-mnist failed: {r.stdout}\n{r.stderr}")
    check("wrote 60000 images of 32x32x1 with labels" in r.stdout, f"report: {r.stdout}")
    print(r.stdout.strip())
    with gzip.open(os.path.join(fm, "train-images-idx3-ubyte.gz")) as f:
        raw = np.frombuffer(f.read()[16:], np.uint8).reshape(-1, 28, 28, 1)
    with gzip.open(os.path.join(fm, "train-labels-idx1-ubyte.gz")) as f:
        labels = np.frombuffer(f.read()[8:], np.uint8)
    with h5py.File(out, "r") as f:
        images, got_labels = f["images"][:1000], f["labels"][()]
    check(np.array_equal(got_labels, labels.astype(got_labels.dtype)), "labels differ from the IDX file")
    want = np.stack([torch_resize(im, 32) for im in raw[:1000]])
    diff = np.abs(images.astype(int) - want.astype(int)).max()
    check(diff <= 1, f"Fashion-MNIST 28->32 differs from torch's bilinear resize by {diff}")


def main():
    return script_main(lambda a, tmp: globals()["case_" + a.case](a.exe, a.source, tmp), "gt_e2e", modules=())


if __name__ == "__main__":
    sys.exit(main())
