#!/usr/bin/python3
"""End-to-end tests of the gantrain CLI: exit codes, messages, run directory contents, checkpoints readable by h5py."""
import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

SKIP = 77


def run(exe, *args, **kw):
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=kw.pop("timeout", 300), **kw)


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def case_info_param_counts(exe, src, tmp):
    r = run(exe, "info", "--config", os.path.join(src, "config/dcgan_celeba64.yaml"))
    check(r.returncode == 0, f"info failed: {r.stderr}")
    check("G = 12,658,432 parameters" in r.stdout, f"G count not in output:\n{r.stdout}")
    check("D = 11,036,160 parameters" in r.stdout, f"D count not in output:\n{r.stdout}")


def expect_user_error(exe, args, must_contain, out_dir):
    r = run(exe, *args)
    check(r.returncode == 2, f"{args}: exit {r.returncode}, expected 2; stderr: {r.stderr}")
    for s in must_contain:
        check(s in r.stderr, f"{args}: stderr lacks {s!r}: {r.stderr!r}")
    check("Traceback" not in r.stderr and "terminate called" not in r.stderr, f"crash output: {r.stderr}")
    check(len(r.stderr.strip().splitlines()) == 1, f"expected one line of error, got: {r.stderr!r}")
    check(not os.path.exists(out_dir) or not os.listdir(out_dir), f"{args}: something was written to {out_dir}")


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
    expect_user_error(exe, ["train", "--config", tiny, od, "train.batch_size=100000"], ["train.batch_size"], out)
    expect_user_error(exe, ["sample", "--checkpoint", os.path.join(tmp, "nope.h5"), "--out", os.path.join(tmp, "x.png")],
                      ["nope.h5"], out)
    not_h5 = os.path.join(tmp, "text.h5")
    with open(not_h5, "w") as f:
        f.write("not an hdf5 file\n")
    expect_user_error(exe, ["info", not_h5], ["text.h5"], out)
    r = run(exe, "train")
    check(r.returncode == 2, f"train without --config: exit {r.returncode}")


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
    with h5py.File(os.path.join(tmp, "s2.h5"), "r") as f:
        check(np.array_equal(f["images"][()], im), "sampling is not deterministic for a fixed seed")
    r = run(exe, "info", ck)
    check(r.returncode == 0 and "step 6" in r.stdout, f"info checkpoint: {r.stdout} {r.stderr}")


def case_stop_on_sigterm(exe, src, tmp):
    tiny = os.path.join(src, "config/tiny.yaml")
    out = os.path.join(tmp, "runs")
    p = subprocess.Popen([exe, "train", "--config", tiny, f"run.out_dir={out}", "run.name=s", "train.max_steps=1000000",
                          "log.every_steps=1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
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


def case_demo_smoke(exe, src, tmp):
    if not os.path.exists("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"):
        print("skip: Debian package dataset-fashion-mnist is not installed")
        return SKIP
    out = os.path.join(tmp, "runs")
    r = run(exe, "train", "--config", os.path.join(src, "config/demo.yaml"), f"run.out_dir={out}",
            "train.max_steps=4", "log.every_steps=2")
    check(r.returncode == 0, f"demo config failed: {r.stdout}\n{r.stderr}")
    check("Fashion-MNIST" in r.stdout and "60000" in r.stdout, f"data line missing: {r.stdout}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--exe", required=True)
    ap.add_argument("--source", required=True)
    ap.add_argument("--case", required=True)
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="gt_e2e_")
    try:
        rc = globals()["case_" + a.case](a.exe, a.source, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if rc == SKIP:
        sys.exit(SKIP)
    print(f"e2e {a.case}: passed")


if __name__ == "__main__":
    main()
