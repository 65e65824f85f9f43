#!/usr/bin/python3
"""End-to-end tests of `gantrain eval --metric swd` (src/cli/eval.cpp): the printed numbers, determinism, halves of one
dataset against noise, and the exit-2 refusals."""
import os
import re
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "common"))
from gt_test import check, run, script_main  # noqa: E402

LINE = re.compile(r"^SWDx1e3_(\d+|avg)\s+(\S+)$")


def write_dataset(path, images):
    import h5py
    with h5py.File(path, "w", libver="v110") as f:
        f.create_dataset("images", data=images, chunks=(1,) + images.shape[1:], dtype="uint8")
        f.attrs.update(format="gantrain-dataset", format_version=1, source="test_eval.py", count=len(images),
                       height=images.shape[1], width=images.shape[2], channels=images.shape[3], created_by="numpy")
    return path


def discs(n, size, channels, seed):
    """n images of one bright disc on a dark gradient: structured, unlike noise."""
    import numpy as np
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    out = np.empty((n, size, size, channels), np.uint8)
    for i in range(n):
        cy, cx = rng.uniform(size * 0.25, size * 0.75, 2)
        r = rng.uniform(size * 0.12, size * 0.3)
        back = 30 + 40 * (x / size) * rng.uniform(0.5, 1.5)
        img = np.where((y - cy) ** 2 + (x - cx) ** 2 <= r * r, rng.uniform(150, 250), back)
        out[i] = np.clip(img, 0, 255).astype(np.uint8)[:, :, None]
    return out


def parse_swd(stdout):
    """{"32": v, "16": v, "avg": v} from eval's output; every SWD line must parse."""
    values = {}
    for line in stdout.splitlines():
        m = LINE.match(line.strip())
        if m:
            values[m.group(1)] = float(m.group(2))
    check("avg" in values, f"no SWDx1e3_avg line in:\n{stdout}")
    return values


def tiny_checkpoint(exe, src, tmp):
    tiny = os.path.join(src, "config/tiny.yaml")
    r = run(exe, "train", "--config", tiny, f"run.out_dir={tmp}/runs", "run.name=t", "train.max_steps=4")
    check(r.returncode == 0, f"train failed ({r.returncode}): {r.stdout}\n{r.stderr}")
    return os.path.join(tmp, "runs", "t", "checkpoints", "ckpt_00000004.h5")


def case_swd_numbers(exe, src, tmp):
    import math
    import numpy as np
    data = write_dataset(os.path.join(tmp, "discs.h5"), discs(200, 32, 1, 1))
    ck = tiny_checkpoint(exe, src, tmp)
    # G's samples against the dataset: 32x32 gives levels 32 and 16; the average is their mean.
    r = run(exe, "eval", "--metric", "swd", "--checkpoint", ck, "--data", data, "--n", "64", "--seed", "3")
    check(r.returncode == 0, f"eval failed ({r.returncode}): {r.stdout}\n{r.stderr}")
    print(r.stdout, end="")
    v = parse_swd(r.stdout)
    check(set(v) == {"32", "16", "avg"}, f"levels {sorted(v)}")
    check(all(math.isfinite(x) and x > 0 for x in v.values()), f"values {v}")
    check(abs(v["avg"] - (v["32"] + v["16"]) / 2) < 1e-3, f"avg is not the mean of the levels: {v}")
    again = run(exe, "eval", "--metric", "swd", "--checkpoint", ck, "--data", data, "--n", "64", "--seed", "3")
    check(again.returncode == 0 and again.stdout == r.stdout, f"not deterministic:\n{r.stdout}\n{again.stdout}")
    other = run(exe, "eval", "--metric", "swd", "--checkpoint", ck, "--data", data, "--n", "64", "--seed", "4")
    check(other.returncode == 0 and parse_swd(other.stdout) != v, "another seed gave the same numbers")
    # Two disjoint halves of one dataset are close; the dataset against uniform noise is far.
    r = run(exe, "eval", "--metric", "swd", "--data", data, "--data2", data, "--n", "100")
    check(r.returncode == 0, f"eval halves failed ({r.returncode}): {r.stdout}\n{r.stderr}")
    print(r.stdout, end="")
    halves = parse_swd(r.stdout)
    noise = write_dataset(os.path.join(tmp, "noise.h5"),
                          np.random.default_rng(2).integers(0, 256, (100, 32, 32, 1), dtype=np.uint8))
    r = run(exe, "eval", "--metric", "swd", "--data", data, "--data2", noise, "--n", "100")
    check(r.returncode == 0, f"eval vs noise failed ({r.returncode}): {r.stdout}\n{r.stderr}")
    print(r.stdout, end="")
    vs_noise = parse_swd(r.stdout)
    print(f"halves avg {halves['avg']:.4f}, vs noise avg {vs_noise['avg']:.4f}, ratio {vs_noise['avg'] / halves['avg']:.1f}")
    check(vs_noise["avg"] > 5 * halves["avg"], f"noise is not far from the data: halves {halves}, noise {vs_noise}")


def case_swd_bad_input(exe, src, tmp):
    import numpy as np
    data = write_dataset(os.path.join(tmp, "discs.h5"), discs(40, 32, 1, 1))
    rgb = write_dataset(os.path.join(tmp, "rgb.h5"), np.zeros((40, 32, 32, 3), np.uint8))
    big = write_dataset(os.path.join(tmp, "big.h5"), np.zeros((40, 64, 64, 1), np.uint8))
    small = write_dataset(os.path.join(tmp, "small.h5"), np.zeros((40, 8, 8, 1), np.uint8))
    ck = tiny_checkpoint(exe, src, tmp)

    def expect_exit_2(args, must_contain):
        r = run(exe, "eval", *args)
        check(r.returncode == 2, f"eval {args}: exit {r.returncode}, want 2\n{r.stdout}\n{r.stderr}")
        for word in must_contain:
            check(word in r.stderr, f"eval {args}: {word!r} not in the message: {r.stderr}")
        check("SWDx1e3" not in r.stdout, f"eval {args} printed numbers: {r.stdout}")

    swd = ["--metric", "swd"]
    expect_exit_2(["--metric", "fid", "--checkpoint", ck, "--data", data], ["unknown metric", "fid", "swd"])
    expect_exit_2(swd + ["--checkpoint", ck, "--data", data, "--n", "0"], ["--n 0", "at least 1"])
    expect_exit_2(swd + ["--checkpoint", ck, "--data", data, "--n", "-5"], ["--n -5"])
    expect_exit_2(swd + ["--checkpoint", ck, "--data", data, "--n", "41"], ["--n 41", "40 images", data])
    expect_exit_2(swd + ["--checkpoint", ck, "--data", rgb], ["32x32x1", "32x32x3", rgb])
    expect_exit_2(swd + ["--checkpoint", ck, "--data", big], ["32x32x1", "64x64x1", big])
    expect_exit_2(swd + ["--checkpoint", ck, "--data", small, "--n", "4"], ["8x8", "16x16", small])
    expect_exit_2(swd + ["--data", data], ["exactly one"])
    expect_exit_2(swd + ["--checkpoint", ck, "--data", data, "--data2", data], ["exactly one"])
    expect_exit_2(swd + ["--data", data, "--data2", data, "--n", "21"], ["same file", "42"])
    expect_exit_2(swd + ["--data", data, "--data2", rgb, "--n", "4"], ["32x32x3", "32x32x1"])
    expect_exit_2(swd + ["--checkpoint", ck, "--data", os.path.join(tmp, "missing.h5")], ["missing.h5"])
    expect_exit_2(swd + ["--checkpoint", os.path.join(tmp, "nope.h5"), "--data", data], ["nope.h5"])
    r = run(exe, "eval", "--checkpoint", ck, "--data", data)
    check(r.returncode == 2 and "--metric" in r.stderr, f"eval without --metric: exit {r.returncode}: {r.stderr}")


def main():
    return script_main(lambda a, tmp: globals()["case_" + a.case](a.exe, a.source, tmp), "gt_eval")


if __name__ == "__main__":
    sys.exit(main())
