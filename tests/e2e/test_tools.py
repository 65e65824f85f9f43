#!/usr/bin/python3
"""End-to-end tests of the Python tools that watch a run: tools/export_torch.py and tools/plot_metrics.py."""
import importlib
import json
import math
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "common"))
from gt_test import check, checkpoint_tensors, reseal_checkpoint, run, script_main, skip  # noqa: E402

PY = sys.executable  # /usr/bin/python3 under ctest (Debian's torch, h5py, matplotlib)
# The exported G must give gantrain's own samples within this multiple of the noise floor, the largest
# difference between torch's float32 and float64 evaluation of the same network on the same z: both
# gantrain's CPU engine and torch's float32 kernels round differently from exact arithmetic, by about
# that much each. Measured on the tiny run (torch 1.13, 2 cores): floor 2.2e-10 (G) and 1.4e-10 (G_ema) with
# images up to 7e-4; gantrain vs float64 1.44x and 1.45x the floor. A 1e-3 relative change of one weight
# of G's last layer moves the output by 9e4x the tolerance, train-mode BN by 1e8x: both are checked.
FLOOR_MULTIPLE = 8


def need(*modules):
    """None, or skip()'s code when one of the modules is missing."""
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as e:
            return skip(str(e))
    return None


def tool(src, name, *args):
    return subprocess.run([PY, os.path.join(src, "tools", name), *args], capture_output=True, text=True, timeout=300)


def tiny_run(exe, src, tmp, name="x"):
    """A 5-step tiny run with one checkpoint at the end; returns its run folder."""
    out = os.path.join(tmp, "runs")
    r = run(exe, "train", "--config", os.path.join(src, "config/tiny.yaml"), f"run.out_dir={out}", f"run.name={name}",
            "train.max_steps=5", "checkpoint.every_steps=5", "log.sample_every_steps=0")
    check(r.returncode == 0, f"tiny train failed: {r.stdout}\n{r.stderr}")
    return os.path.join(out, name)


def expect_exit_2(r, words, what):
    check(r.returncode == 2, f"{what}: exit {r.returncode}, expected 2; stderr: {r.stderr!r}")
    check(len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr, f"{what}: not one line: {r.stderr!r}")
    for w in words:
        check(w in r.stderr, f"{what}: stderr lacks {w!r}: {r.stderr!r}")


# ---- export_torch ------------------------------------------------------------------------------------

def load_exported(out_dir, which):
    import torch
    path = os.path.join(out_dir, f"{which}.pt")
    check(os.path.isfile(path), f"{path} was not written")
    return torch.load(path)


def check_bitwise(state, ckpt_tensors, group):
    """The state_dict holds exactly the checkpoint's /group tensors (parameters and BN buffers), bit for bit."""
    import numpy as np
    expected = {k[len(group) + 1:]: v for k, v in ckpt_tensors.items() if k.startswith(group + "/")}
    check(set(state) == set(expected), f"{group}: names differ: {sorted(set(state) ^ set(expected))}")
    check(any(k.endswith("running_var") for k in state) and any(k.endswith("num_batches_tracked") for k in state),
          f"{group}: the BatchNorm buffers are missing: {sorted(state)}")
    for name, value in expected.items():
        t = state[name].numpy()
        check(t.dtype == value.dtype and t.shape == np.shape(value), f"{group}/{name}: {t.dtype}{t.shape} vs "
              f"{value.dtype}{np.shape(value)}")
        check(t.tobytes() == np.ascontiguousarray(value).tobytes(), f"{group}/{name}: bytes differ from the checkpoint")
    return len(expected)


def compare_with_gantrain_samples(netG, samples_path, label):
    """max|gantrain - torch float32| against the float32-vs-float64 noise floor of the same network and z."""
    import copy
    import h5py
    import numpy as np
    import torch
    with h5py.File(samples_path, "r") as f:
        z, images = f["z"][()], f["images"][()]
    zt = torch.from_numpy(z).view(z.shape[0], z.shape[1], 1, 1)
    netG.eval()
    with torch.no_grad():
        g32 = netG(zt).numpy()
        g64 = copy.deepcopy(netG).double()(zt.double()).numpy()
    check(images.shape == g32.shape, f"{label}: gantrain images {images.shape}, torch {g32.shape}")
    floor = float(np.max(np.abs(g32 - g64)))
    # A floor of exactly 0 would make any difference fail: hold it to one float32 ulp of the largest value at least.
    floor = max(floor, float(np.spacing(np.float32(np.max(np.abs(g64))))))
    ours64 = float(np.max(np.abs(images - g64)))
    ours32 = float(np.max(np.abs(images - g32)))
    tol = FLOOR_MULTIPLE * floor
    print(f"{label}: max|torch32 - torch64| (noise floor) {floor:.3g}; max|gantrain - torch64| {ours64:.3g} "
          f"({ours64 / floor:.2f}x floor); max|gantrain - torch32| {ours32:.3g}; tolerance {tol:.3g} "
          f"({FLOOR_MULTIPLE}x floor); max|image| {float(np.max(np.abs(g64))):.3g}")
    check(ours64 <= tol, f"{label}: gantrain's samples differ from the exported G by {ours64:.3g} > {tol:.3g}")
    check(ours32 <= tol, f"{label}: gantrain's samples differ from the float32 exported G by {ours32:.3g} > {tol:.3g}")
    # Teeth: the same network in train mode (batch statistics instead of the running ones) is far outside.
    netG.train()
    with torch.no_grad():
        other = float(np.max(np.abs(netG(zt).numpy() - g64)))
    netG.eval()
    # And a change of 1e-3 of one weight of G's last layer (its largest) shows too.
    nudged = copy.deepcopy(netG)
    last = [m for m in nudged.main if isinstance(m, torch.nn.ConvTranspose2d)][-1]
    with torch.no_grad():
        flat = last.weight.view(-1)
        i = int(flat.abs().argmax())
        flat[i] += 1e-3 * flat[i].abs()
        nudge = float(np.max(np.abs(nudged(zt).numpy() - g64)))
    print(f"{label}: G with one weight moved by 1e-3 of itself differs by {nudge:.3g} ({nudge / tol:.3g}x the "
          "tolerance)")
    check(nudge > tol, f"{label}: a 1e-3 change of one weight stays within the tolerance {tol:.3g}: no teeth")
    print(f"{label}: train-mode BN differs by {other:.3g} ({other / tol:.3g}x the tolerance)")
    check(other > 100 * tol, f"{label}: train mode differs by only {other:.3g}: the tolerance {tol:.3g} has no teeth")
    return images, z


def case_export_torch_matches_sample(exe, src, tmp):
    missing = need("torch", "h5py", "numpy", "yaml", "xxhash")
    if missing:
        return missing
    import numpy as np
    import torch
    sys.path.insert(0, os.path.join(src, "tools"))
    from torch_dcgan import Discriminator, Generator
    run_dir = tiny_run(exe, src, tmp)
    ckpt = os.path.join(run_dir, "checkpoints", "ckpt_00000005.h5")
    out = os.path.join(tmp, "export")
    r = tool(src, "export_torch.py", ckpt, "--out", out)
    check(r.returncode == 0, f"export failed: {r.stdout}\n{r.stderr}")
    print(r.stdout.strip())
    for which in ("G", "D"):
        check(f"wrote {os.path.join(out, which + '.pt')}" in r.stdout, f"{which}.pt not reported: {r.stdout}")
    check(not os.path.exists(os.path.join(out, "G_ema.pt")) and "G_ema" not in r.stdout,
          f"a G_ema.pt for a run without EMA: {os.listdir(out)}")
    check(sorted(os.listdir(out)) == ["D.pt", "G.pt"], f"unexpected files: {os.listdir(out)}")

    tensors = checkpoint_tensors(ckpt)
    sd_g, sd_d = load_exported(out, "G"), load_exported(out, "D")
    n = check_bitwise(sd_g, tensors, "G/params") + check_bitwise(sd_d, tensors, "D/params")
    print(f"{n} tensors equal the checkpoint's bit for bit")
    # Five steps of training moved BN's running statistics and counted its batches: the buffers are the trained ones.
    check(int(sd_g["main.1.num_batches_tracked"]) == 5, f"num_batches_tracked {sd_g['main.1.num_batches_tracked']}")
    check(float(sd_g["main.1.running_var"].sub(1).abs().max()) > 0, "running_var is still its initial 1")

    # Fresh modules of the tiny geometry (config/tiny.yaml: nz 8, widths 4, 1x32x32) take them strictly.
    netG, netD = Generator(8, 4, 1, 32), Discriminator(4, 1, 32)
    netG.load_state_dict(sd_g, strict=True)
    netD.load_state_dict(sd_d, strict=True)
    samples = os.path.join(tmp, "s.h5")
    r = run(exe, "sample", "--checkpoint", ckpt, "--n", "8", "--seed", "3", "--out", samples)
    check(r.returncode == 0, f"sample failed: {r.stdout}\n{r.stderr}")
    images, _ = compare_with_gantrain_samples(netG, samples, "G")
    netD.eval()
    with torch.no_grad():
        logits = netD(torch.from_numpy(images)).numpy()
    print(f"D logits of the samples: {np.array2string(logits, precision=4)}")
    check(logits.shape == (8,) and np.all(np.isfinite(logits)), f"D logits {logits}")
    check(float(np.ptp(logits)) > 0, "D gives every sample the same logit")


def add_g_ema(src_ckpt, dst_ckpt):
    """A copy of the checkpoint with /G_ema/params: G's tensors (HDF5's copy keeps their chunking and Fletcher32,
    so gantrain still accepts the file) with the float ones moved a little, so G_ema is not G; then resealed."""
    import h5py
    import numpy as np
    shutil.copyfile(src_ckpt, dst_ckpt)
    rng = np.random.default_rng(7)
    with h5py.File(dst_ckpt, "r+") as f:
        f.copy(f["G/params"], "G_ema/params")
        for name, ds in f["G_ema/params"].items():
            if ds.dtype == np.float32 and ds.shape != ():
                ds[...] = (ds[()] + 0.01 * rng.standard_normal(ds.shape)).astype(np.float32)


def case_export_torch_g_ema(exe, src, tmp):
    # A G_ema made by hand (G's tensors copied into /G_ema/params with h5py and perturbed, then the digest
    # resealed) exercises the export's edge cases; tests/e2e/test_ema.py checks the ones training writes.
    missing = need("torch", "h5py", "numpy", "yaml", "xxhash")
    if missing:
        return missing
    sys.path.insert(0, os.path.join(src, "tools"))
    from torch_dcgan import Generator
    run_dir = tiny_run(exe, src, tmp)
    ckpt = os.path.join(run_dir, "checkpoints", "ckpt_00000005.h5")
    ema = os.path.join(tmp, "ema.h5")
    add_g_ema(ckpt, ema)
    out = os.path.join(tmp, "export")
    # Edited but not resealed: the digest no longer matches and the export refuses it, as gantrain would.
    r = tool(src, "export_torch.py", ema, "--out", out)
    expect_exit_2(r, ["ema.h5"], "unsealed edit")  # h5py's edit grew the file: "bytes were added", or the digest
    check("bytes were added" in r.stderr or "digest" in r.stderr, f"unsealed edit: {r.stderr!r}")
    check(not os.path.exists(out), f"{out} was made for a refused checkpoint")
    reseal_checkpoint(ema)
    r = run(exe, "info", ema)
    check(r.returncode == 0, f"gantrain info refuses the checkpoint with G_ema: {r.stdout}\n{r.stderr}")
    r = tool(src, "export_torch.py", ema, "--out", out)
    check(r.returncode == 0, f"export failed: {r.stdout}\n{r.stderr}")
    print(r.stdout.strip())
    check(f"wrote {os.path.join(out, 'G_ema.pt')}" in r.stdout, f"G_ema.pt not reported: {r.stdout}")
    check(sorted(os.listdir(out)) == ["D.pt", "G.pt", "G_ema.pt"], f"files: {os.listdir(out)}")
    tensors = checkpoint_tensors(ema)
    sd_ema, sd_g = load_exported(out, "G_ema"), load_exported(out, "G")
    check_bitwise(sd_ema, tensors, "G_ema/params")
    check_bitwise(sd_g, tensors, "G/params")
    check(not sd_ema["main.0.weight"].equal(sd_g["main.0.weight"]), "G_ema.pt holds G's weights")
    netE = Generator(8, 4, 1, 32)
    netE.load_state_dict(sd_ema, strict=True)
    samples = os.path.join(tmp, "s_ema.h5")
    r = run(exe, "sample", "--checkpoint", ema, "--ema", "--n", "8", "--seed", "3", "--out", samples)
    check(r.returncode == 0, f"sample --ema failed: {r.stdout}\n{r.stderr}")
    compare_with_gantrain_samples(netE, samples, "G_ema")
    # And G (not G_ema) is far from gantrain's --ema samples: the comparison tells the two apart.
    netG = Generator(8, 4, 1, 32)
    netG.load_state_dict(sd_g, strict=True)
    try:
        compare_with_gantrain_samples(netG, samples, "G against the G_ema samples")
    except AssertionError as e:
        print(f"as it must, G fails against the G_ema samples: {e}")
    else:
        check(False, "G's output matches gantrain's G_ema samples: the G_ema comparison has no teeth")


def case_export_torch_bad_input(exe, src, tmp):
    missing = need("torch", "h5py", "numpy", "yaml", "xxhash")
    if missing:
        return missing
    import h5py
    import numpy as np
    out = os.path.join(tmp, "export")
    expect_exit_2(tool(src, "export_torch.py", os.path.join(tmp, "nope.h5"), "--out", out), ["nope.h5", "no such file"],
                  "missing file")
    text = os.path.join(tmp, "text.h5")
    with open(text, "w") as f:
        f.write("not an hdf5 file\n")
    expect_exit_2(tool(src, "export_torch.py", text, "--out", out), ["text.h5", "not a gantrain checkpoint"], "text")
    dataset = os.path.join(tmp, "dataset.h5")
    with h5py.File(dataset, "w") as f:
        f["images"] = np.zeros((2, 32, 32, 1), np.uint8)
    expect_exit_2(tool(src, "export_torch.py", dataset, "--out", out), ["dataset.h5", "not a gantrain checkpoint"],
                  "a dataset")
    ckpt = os.path.join(tiny_run(exe, src, tmp), "checkpoints", "ckpt_00000005.h5")
    with open(ckpt, "rb") as f:
        data = f.read()
    truncated = os.path.join(tmp, "truncated.h5")
    with open(truncated, "wb") as f:
        f.write(data[:len(data) // 2])
    expect_exit_2(tool(src, "export_torch.py", truncated, "--out", out), ["truncated.h5", "truncated"], "truncated")
    flipped = os.path.join(tmp, "flipped.h5")
    with open(flipped, "wb") as f:
        f.write(data[:-100] + bytes([data[-100] ^ 1]) + data[-99:])
    expect_exit_2(tool(src, "export_torch.py", flipped, "--out", out), ["flipped.h5", "digest"], "one bit flipped")
    # A model torch_dcgan cannot build: the strict load refuses a tensor of another shape (resealed, so only that).
    reshaped = os.path.join(tmp, "reshaped.h5")
    shutil.copyfile(ckpt, reshaped)
    with h5py.File(reshaped, "r+") as f:
        del f["D/params/main.0.weight"]
        f["D/params/main.0.weight"] = np.zeros((4, 1, 3, 3), np.float32)
    reseal_checkpoint(reshaped)
    expect_exit_2(tool(src, "export_torch.py", reshaped, "--out", out), ["reshaped.h5", "main.0.weight", "D"],
                  "a tensor of another shape")
    check(not os.path.exists(out), f"{out} was made although every export was refused")


# ---- plot_metrics ------------------------------------------------------------------------------------

def png_size(path):
    import matplotlib.image
    pixels = matplotlib.image.imread(path)
    check(pixels.ndim == 3 and pixels.shape[2] in (3, 4), f"{path}: pixels {pixels.shape}")
    return pixels.shape[1], pixels.shape[0], pixels


def expected_size(panels):
    return 2 * 600, 300 * math.ceil(panels / 2)


def plot_ok(src, args, panels, what):
    r = tool(src, "plot_metrics.py", *args)
    check(r.returncode == 0, f"{what}: plot failed: {r.stdout}\n{r.stderr}")
    print(f"{what}: {r.stdout.strip()}" + (f" | {r.stderr.strip()}" if r.stderr.strip() else ""))
    check(f"{panels} panels" in r.stdout, f"{what}: expected {panels} panels: {r.stdout}")
    return r


def case_plot_metrics(exe, src, tmp):
    missing = need("matplotlib", "numpy")
    if missing:
        return missing
    import numpy as np
    run_dir = tiny_run(exe, src, tmp)
    metrics = os.path.join(run_dir, "metrics.jsonl")
    with open(metrics) as f:
        lines = f.read().splitlines()
    check(len(lines) == 5, f"the tiny run wrote {len(lines)} metrics lines")
    keys = set(json.loads(lines[0]))
    # The trainer's families: losses, D outputs, grad norms, images/s, learning rates, time per step (no swd): 6 panels.
    for k in ("d_loss", "g_loss", "d_real", "d_fake", "d_grad_norm", "g_grad_norm", "images_per_sec", "lr_g", "lr_d"):
        check(k in keys, f"metrics lack {k}: {sorted(keys)}")
    r = plot_ok(src, [run_dir], 6, "tiny run")
    png = os.path.join(run_dir, "plots.png")
    check(r.stderr.strip() == "", f"warnings on a complete file: {r.stderr}")
    w, h, pixels = png_size(png)
    check((w, h) == expected_size(6), f"{png} is {w}x{h}, expected {expected_size(6)}")
    check(float(np.std(pixels[..., :3])) > 0.01, "the plot is blank")

    # swd and another numeric key add their panels; a null (non-finite) value is a gap, not an error.
    extended = os.path.join(tmp, "extended.jsonl")
    with open(extended, "w") as f:
        for i, line in enumerate(lines):
            rec = json.loads(line)
            rec["swd"] = 0.5 / (i + 1)
            rec["fid"] = None if i == 2 else 100.0 - i
            rec["note"] = "text"  # not numeric: no panel
            f.write(json.dumps(rec) + "\n")
    out = os.path.join(tmp, "ext.png")
    r = plot_ok(src, [extended, "--out", out], 8, "with swd and fid")
    check("sliced Wasserstein" in r.stdout and "fid" in r.stdout, f"panels: {r.stdout}")
    w, h, _ = png_size(out)
    check((w, h) == expected_size(8), f"{out} is {w}x{h}, expected {expected_size(8)}")

    # The SWD as the trainer writes it: lines of their own at some steps (swd, swd_32, swd_16), merged
    # with the step's regular line; its levels share its panel, and --only keeps that panel alone.
    swd_file = os.path.join(tmp, "swd.jsonl")
    with open(swd_file, "w") as f:
        for i, line in enumerate(lines):
            f.write(line + "\n")
            if i % 2 == 0:
                step = json.loads(line)["step"]
                f.write(json.dumps({"step": step, "swd": 90.0 - i, "swd_32": 120.0 - i, "swd_16": 60.0 - i}) + "\n")
    r = plot_ok(src, [swd_file, "--out", os.path.join(tmp, "swd_all.png")], 7, "swd lines of their own")
    check("swd_32" not in r.stdout, f"the SWD's levels got panels of their own: {r.stdout}")
    out = os.path.join(tmp, "swd_only.png")
    r = plot_ok(src, [swd_file, "--out", out, "--only", "swd"], 1, "--only swd")
    check("sliced Wasserstein" in r.stdout, f"panels: {r.stdout}")
    w, h, pixels = png_size(out)
    check((w, h) == (600, 300), f"{out} is {w}x{h}, expected one panel of 600x300")
    check(float(np.std(pixels[..., :3])) > 0.01, "the SWD plot is blank")
    expect_exit_2(tool(src, "plot_metrics.py", swd_file, "--out", os.path.join(tmp, "none.png"), "--only", "fid"),
                  ["swd.jsonl", "fid"], "--only with no such key")

    # A run killed mid-write leaves a truncated last line: skipped with a warning, the rest plotted.
    garbled = os.path.join(tmp, "garbled", "metrics.jsonl")
    os.makedirs(os.path.dirname(garbled))
    with open(garbled, "w") as f:
        f.write("\n".join(lines[:4]) + "\n" + lines[4][:len(lines[4]) // 2])
    r = plot_ok(src, [os.path.dirname(garbled)], 6, "truncated last line")
    check("warning" in r.stderr and "last line 5" in r.stderr, f"no warning for the truncated line: {r.stderr!r}")
    w, h, _ = png_size(os.path.join(os.path.dirname(garbled), "plots.png"))
    check((w, h) == expected_size(5), f"garbled: {w}x{h}")

    # Errors: exit 2 with one line naming the file, and no PNG written.
    bad_out = os.path.join(tmp, "bad.png")
    expect_exit_2(tool(src, "plot_metrics.py", os.path.join(tmp, "absent.jsonl"), "--out", bad_out), ["absent.jsonl"],
                  "missing file")
    empty = os.path.join(tmp, "empty.jsonl")
    open(empty, "w").close()
    expect_exit_2(tool(src, "plot_metrics.py", empty, "--out", bad_out), ["empty.jsonl", "empty"], "empty file")
    middle = os.path.join(tmp, "middle.jsonl")
    with open(middle, "w") as f:
        f.write(lines[0] + "\n{\"step\": 2, garbage\n" + lines[2] + "\n")
    expect_exit_2(tool(src, "plot_metrics.py", middle, "--out", bad_out), ["middle.jsonl:2"], "garbled middle line")
    only_cut = os.path.join(tmp, "only_cut.jsonl")
    with open(only_cut, "w") as f:
        f.write(lines[0][:20])
    expect_exit_2(tool(src, "plot_metrics.py", only_cut, "--out", bad_out), ["only_cut.jsonl", "no metrics lines"],
                  "only a truncated line")
    check(not os.path.exists(bad_out), f"{bad_out} was written for bad input")


def main():
    return script_main(lambda a, tmp: globals()["case_" + a.case](a.exe, a.source, tmp), "gt_tools", modules=())


if __name__ == "__main__":
    sys.exit(main())
