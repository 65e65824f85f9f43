#!/usr/bin/python3
"""End-to-end tests of G_ema, the moving average of G's weights (ema.*): the average checkpoint by checkpoint
bit for bit against its formula in float32, its schedule (beta, half-life, ramp-up), the generator that
`sample` and `eval` use by default, and a resume that turns it on."""
import math
import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "common"))
from gt_test import check, checkpoint_tensors, script_main  # noqa: E402  (tests/common/gt_test.py)

BATCH = 8  # config/tiny.yaml


def train(exe, src, out, name, *overrides, steps=6):
    args = [exe, "train", "--config", os.path.join(src, "config/tiny.yaml"), f"run.out_dir={out}", f"run.name={name}",
            f"train.max_steps={steps}", "log.every_steps=1", "log.sample_every_steps=0", "checkpoint.every_steps=1",
            "checkpoint.keep_last=0", *overrides]
    r = subprocess.run(args, capture_output=True, text=True, timeout=300)
    check(r.returncode == 0, f"{name}: exit {r.returncode}: {r.stdout}\n{r.stderr}")
    return r


def ckpt(out, name, step):
    return os.path.join(out, name, "checkpoints", f"ckpt_{step:08d}.h5")


def one_minus_beta(step, beta=0.0, half_life=0.0, rampup=0.0):
    """docs/objectives.md: 1 - beta of the update after `step` G updates, in double, rounded once to float32."""
    import numpy as np
    if beta > 0:
        return np.float32(1.0 - beta)
    h = half_life
    if rampup > 0:
        h = min(h, step * BATCH * rampup)
    return np.float32(-math.expm1(math.log(0.5) * BATCH / max(h, 1e-8)))


def check_average(out, name, steps, **schedule):
    """G_ema at every step from the one before and G of that step: average + w * (G - average), each
    operation rounded to float32 (optim_math::ema_value), bit for bit; buffers are G's."""
    import numpy as np
    previous = None
    moved = 0
    for step in range(1, steps + 1):
        t = checkpoint_tensors(ckpt(out, name, step))
        ema = {k[len("G_ema/params/"):]: v for k, v in t.items() if k.startswith("G_ema/params/")}
        g = {k[len("G/params/"):]: v for k, v in t.items() if k.startswith("G/params/")}
        check(sorted(ema) == sorted(g), f"{name} step {step}: G_ema's tensors {sorted(set(ema) ^ set(g))} differ from G's")
        if previous is not None:
            w = one_minus_beta(step, **schedule)
            for key, value in ema.items():
                if "running" in key or "num_batches" in key:
                    check(np.array_equal(value, g[key]), f"{name} step {step}: G_ema's {key} is not G's")
                    continue
                want = previous[key] + w * (g[key] - previous[key])  # float32 numpy: each operation rounded
                check(want.dtype == np.float32 and np.array_equal(value, want),
                      f"{name} step {step}: {key} differs from the average's formula (w {w}) by "
                      f"{float(np.max(np.abs(value - want))):.3g}")
                moved += int(np.count_nonzero(value != g[key]))
        previous = ema
    check(moved > 0, f"{name}: G_ema equals G everywhere: the average never lagged")
    return moved


def case_average(exe, src, tmp):
    out = os.path.join(tmp, "runs")
    for name, overrides, schedule in [
            ("beta", ["ema.beta=0.9"], dict(beta=0.9)),
            ("half_life", ["ema.half_life_images=40", "ema.rampup=0.5"], dict(half_life=40.0, rampup=0.5)),
            ("critic", ["ema.half_life_images=100", "loss.objective=hinge", "train.n_critic=2"], dict(half_life=100.0))]:
        r = train(exe, src, out, name, *overrides)
        check("ema: G_ema = beta G_ema + (1 - beta) G" in r.stdout, f"{name}: no ema line:\n{r.stdout}")
        moved = check_average(out, name, 6, **schedule)
        print(f"{name}: G_ema of steps 2..6 bit for bit the formula's ({moved} values differ from G's)")
    # The ramp-up has teeth: without it the first steps' weights are far smaller.
    check(one_minus_beta(2, half_life=40.0, rampup=0.5) > 3 * one_minus_beta(2, half_life=40.0),
          "the ramp-up does not change the early weights")


def case_sample_and_eval_default(exe, src, tmp):
    import h5py
    import numpy as np
    out = os.path.join(tmp, "runs")
    train(exe, src, out, "ema", "ema.beta=0.5", steps=4)
    train(exe, src, out, "plain", steps=4)
    ema_ckpt, plain_ckpt = ckpt(out, "ema", 4), ckpt(out, "plain", 4)

    def sample(path, *flags):
        dst = os.path.join(tmp, f"s{len(os.listdir(tmp))}.h5")
        r = subprocess.run([exe, "sample", "--checkpoint", path, "--n", "6", "--seed", "2", "--out", dst, *flags],
                           capture_output=True, text=True, timeout=60)
        return r, dst

    r, default = sample(ema_ckpt)
    check(r.returncode == 0 and "samples of G_ema" in r.stdout, f"default sample: {r.stdout}{r.stderr}")
    r, forced = sample(ema_ckpt, "--ema")
    check(r.returncode == 0, f"--ema: {r.stderr}")
    r, raw = sample(ema_ckpt, "--no-ema")
    check(r.returncode == 0 and "samples of G from" in r.stdout, f"--no-ema: {r.stdout}{r.stderr}")
    with h5py.File(default) as a, h5py.File(forced) as b, h5py.File(raw) as c:
        check(np.array_equal(a["images"][()], b["images"][()]), "the default sample is not G_ema's")
        check(not np.array_equal(a["images"][()], c["images"][()]), "--no-ema gives G_ema's images")
    r, plain = sample(plain_ckpt)
    check(r.returncode == 0 and "samples of G from" in r.stdout, f"no G_ema: {r.stdout}{r.stderr}")
    for path, flags, words in [(plain_ckpt, ["--ema"], ["no averaged generator", "ckpt_00000004.h5"]),
                               (ema_ckpt, ["--ema", "--no-ema"], ["--ema and --no-ema"])]:
        r, _ = sample(path, *flags)
        check(r.returncode == 2 and all(w in r.stderr for w in words), f"{flags}: {r.returncode} {r.stderr}")
    print("sample: G_ema by default, --no-ema G, --ema without G_ema refused (exit 2)")
    # eval: the same default; its report names the generator.
    data = os.path.join(tmp, "data.h5")
    with h5py.File(data, "w") as f:
        rng = np.random.default_rng(0)
        f.create_dataset("images", data=rng.integers(0, 255, (64, 32, 32, 1), dtype=np.uint8))
    base = [exe, "eval", "--metric", "swd", "--checkpoint", ema_ckpt, "--data", data, "--n", "32", "--seed", "1"]
    r = subprocess.run(base, capture_output=True, text=True, timeout=120)
    check(r.returncode == 0 and "G_ema" in r.stdout, f"eval default: {r.stdout}{r.stderr}")
    r = subprocess.run(base + ["--no-ema"], capture_output=True, text=True, timeout=120)
    check(r.returncode == 0 and "G_ema" not in r.stdout, f"eval --no-ema: {r.stdout}{r.stderr}")
    r = subprocess.run(base + ["--train-noise"], capture_output=True, text=True, timeout=120)
    check(r.returncode == 0 and "G_ema" not in r.stdout, f"eval --train-noise measures G as training does: {r.stdout}")
    print("eval: G_ema by default, G with --no-ema or --train-noise")


def case_resume_turns_it_on(exe, src, tmp):
    """A run without G_ema resumed with ema.* on: the average starts from G at the checkpoint, said in the log."""
    out = os.path.join(tmp, "runs")
    train(exe, src, out, "late", steps=3)
    r = train(exe, src, out, "late", "ema.beta=0.9", steps=5)
    check("G_ema starts from G" in r.stdout and "config changed since the checkpoint: ema.beta: 0.0 -> 0.9" in r.stdout,
          f"resume with ema: {r.stdout}")
    t = checkpoint_tensors(ckpt(out, "late", 5))
    check(any(k.startswith("G_ema/params/") for k in t), "no G_ema after the resume")
    print("a resume that turns ema.* on starts G_ema from G and says so")


def main():
    return script_main(lambda a, tmp: globals()["case_" + a.case](a.exe, a.source, tmp), "gt_ema")


if __name__ == "__main__":
    sys.exit(main())
