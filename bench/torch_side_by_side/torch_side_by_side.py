#!/usr/bin/env python3
"""PyTorch and gantrain side by side: the same DCGAN training step on the same GPU in one run, one table.

PyTorch modes: eager_fp32 (TF32 off), eager_tf32, amp_bf16_cl (autocast bf16, channels_last),
compile_bf16_cl (torch.compile of the amp_bf16_cl step). Each mode's failure (out of memory, a compile
error, torch.compile missing) is recorded in its row; the table always comes out. The step is that of
bench/cpu_vs_torch/torch_step.py with the same model (tools/torch_dcgan.py): D on real and on
fake.detach(), optD.step, G through the updated D on the same fakes, optG.step; BCEWithLogitsLoss; Adam
lr 2e-4, betas (0.5, 0.999) (fused on CUDA where torch has it). Timed with CUDA events around the whole step, median of --steps.

Then bench_throughput (--bench PATH) runs gantrain's engine for the same batches and --precisions, and
one table prints rows (batch, mode) with images/s, ms/step, MFU and speed relative to the fastest
PyTorch mode at that batch. Model FLOPs are counted here from forward hooks with bench_throughput's
formula, 2 * (3 Gf - G1 + 8 Df - 2 D1), and checked against bench_throughput's own count.

Without a CUDA device the script says so and exits 0; with --allow-cpu it times the eager modes on
the CPU instead (tiny settings), so that the script and its JSON can be tested anywhere.

Time-boxed runs (bench/gpu/gpu_check.sh --perf): --deadline-s N gives the whole script N seconds from its
start; a mode that would start with less than its need left (--compile-need-s for torch.compile, which
compiles and autotunes for minutes; --mode-need-s for the others) is recorded as skipped, out of time. The
JSON is written after every mode, so a run cut short still leaves the rows it timed.

Usage: torch_side_by_side.py --bench build/bench/bench_throughput | --gantrain-json FILE
           [--batches 128,256,512,1024] [--modes ...] [--compile-batches 1024] [--compile-mode MODE]
           [--precisions fp32,tf32,bf16] [--steps 20] [--warmup 5] [--results-dir DIR]
           [--json FILE] [--allow-cpu] [--device auto|cuda|cpu] [--nz 100 --ngf 128 --ndf 128 --res 64]
           [--deadline-s N] [--compile-need-s 150] [--mode-need-s 20] [--gp 10]

--gp L times WGAN-GP's step instead, on both sides: the critic loss -D(x) + D(G(z)) plus L times the gradient
penalty at interpolates (PyTorch: torch.autograd.grad with create_graph=True; gantrain: its double backward), a
layer-norm critic (GroupNorm(1, C)), Adam lr 1e-4 betas (0, 0.9); torch.compile is skipped (no double
backward) and no MFU is given (the FLOP count is the DCGAN step's).
"""
import argparse
import copy
import datetime
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

STARTED = time.monotonic()  # --deadline-s counts from here: importing torch takes seconds

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(REPO, "tools"))
from torch_dcgan import Discriminator, Generator, dcgan_weights_init  # noqa: E402

TORCH_MODES = ["eager_fp32", "eager_tf32", "amp_bf16_cl", "compile_bf16_cl"]
MODE_MATH = {"eager_fp32": "fp32", "eager_tf32": "tf32", "amp_bf16_cl": "bf16", "compile_bf16_cl": "bf16"}
# Dense peaks of the H100 SXM datasheet (the H200 has the same), TFLOP/s; bench_throughput's defaults.
H100_PEAKS = {"fp32": 66.9, "tf32": 494.7, "bf16": 989.4}


def conv_macs(model, input_shape):
    """Multiply-adds of each Conv2d/ConvTranspose2d of one forward of a batch, in order (hooks on a CPU copy)."""
    macs = []

    def hook(module, inputs, output):
        w = module.weight.numel()  # out*in*k*k or in*out*k*k
        if isinstance(module, nn.Conv2d):
            macs.append(output.shape[0] * output.shape[2] * output.shape[3] * w)
        else:  # ConvTranspose2d: each input position scatters an out*k*k patch
            x = inputs[0]
            macs.append(x.shape[0] * x.shape[2] * x.shape[3] * w)

    hooks = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    with torch.no_grad():
        model.eval()(torch.zeros(*input_shape))
    for h in hooks:
        h.remove()
    model.train()
    return macs


def step_flops(cfg, batch):
    """bench_throughput's count: G fwd, D fwd+bwd on real and on fake, D fwd + data-grad bwd for G, G bwd.
    None for the WGAN-GP step (--gp), whose penalty pass is not counted: no MFU there, images/s only."""
    if cfg.gp > 0:
        return None
    g = conv_macs(Generator(cfg.nz, cfg.ngf, cfg.channels, cfg.res), (1, cfg.nz, 1, 1))
    d = conv_macs(Discriminator(cfg.ndf, cfg.channels, cfg.res), (1, cfg.channels, cfg.res, cfg.res))
    gf, g1, df, d1 = sum(g) * batch, g[0] * batch, sum(d) * batch, d[0] * batch
    return 2 * (3 * gf - g1 + 8 * df - 2 * d1)


def build_step(mode, cfg, batch, dev):
    """Models, optimizers and a closure doing one training step in the mode; compile errors surface on first call."""
    torch.manual_seed(0)
    cuda = dev.type == "cuda"
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = mode != "eager_fp32"
        torch.backends.cudnn.allow_tf32 = mode != "eager_fp32"
        torch.backends.cudnn.benchmark = True
    bf16 = MODE_MATH[mode] == "bf16"
    fmt = torch.channels_last if bf16 else torch.contiguous_format
    netG = Generator(cfg.nz, cfg.ngf, cfg.channels, cfg.res).to(dev)
    penalty = cfg.gp > 0  # WGAN-GP: a layer-norm critic, Adam (0, 0.9), as bench_throughput --gp
    netD = Discriminator(cfg.ndf, cfg.channels, cfg.res, d_norm="layer" if penalty else "batch").to(dev)
    netG.apply(dcgan_weights_init)
    netD.apply(dcgan_weights_init)
    netG, netD = netG.to(memory_format=fmt), netD.to(memory_format=fmt)
    adam = {"lr": 1e-4, "betas": (0.0, 0.9)} if penalty else {"lr": 2e-4, "betas": (0.5, 0.999)}
    try:  # fused Adam (torch >= 2.0 on CUDA) is PyTorch's fastest; older torch has the plain one
        optG = torch.optim.Adam(netG.parameters(), **adam, fused=cuda)
        optD = torch.optim.Adam(netD.parameters(), **adam, fused=cuda)
    except TypeError:
        optG = torch.optim.Adam(netG.parameters(), **adam)
        optD = torch.optim.Adam(netD.parameters(), **adam)
    G, D = netG, netD
    if mode.startswith("compile"):
        G = torch.compile(netG, mode=cfg.compile_mode, dynamic=False)
        D = torch.compile(netD, mode=cfg.compile_mode, dynamic=False)
    crit = nn.BCEWithLogitsLoss()
    real = (torch.rand(batch, cfg.channels, cfg.res, cfg.res, device=dev) * 2 - 1).contiguous(memory_format=fmt)
    ones, zeros = torch.ones(batch, device=dev), torch.zeros(batch, device=dev)
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if bf16 else None

    def ctx():
        return autocast() if autocast else torch.autocast(dev.type, enabled=False)

    def wgangp_step():
        """WGAN-GP: -D(x) + D(G(z)) + gp (||grad D(x_hat)|| - 1)^2 with create_graph=True, then G on -D(G(z))."""
        z = torch.randn(batch, cfg.nz, 1, 1, device=dev)
        netD.zero_grad(set_to_none=True)
        with ctx():
            err_real = -D(real).float().mean()
        err_real.backward()
        with ctx():
            fake = G(z)
            err_fake = D(fake.detach()).float().mean()
        err_fake.backward()
        e = torch.rand(batch, 1, 1, 1, device=dev)
        x_hat = (e * real + (1 - e) * fake.detach()).requires_grad_(True)
        with ctx():
            scores = D(x_hat).float()
        (g,) = torch.autograd.grad(scores.sum(), x_hat, create_graph=True)
        gp = cfg.gp * ((g.float().flatten(1).norm(dim=1) - 1) ** 2).mean()
        gp.backward()
        optD.step()
        netG.zero_grad(set_to_none=True)
        with ctx():
            err_g = -D(fake).float().mean()
        err_g.backward()
        optG.step()
        return err_real + err_fake + gp, err_g

    def step():
        z = torch.randn(batch, cfg.nz, 1, 1, device=dev)
        netD.zero_grad(set_to_none=True)
        with ctx():
            err_real = crit(D(real).float(), ones)
        err_real.backward()
        with ctx():
            fake = G(z)
            err_fake = crit(D(fake.detach()).float(), zeros)
        err_fake.backward()
        optD.step()
        netG.zero_grad(set_to_none=True)
        with ctx():
            err_g = crit(D(fake).float(), ones)
        err_g.backward()
        optG.step()
        return err_real + err_fake, err_g

    return wgangp_step if penalty else step


def time_mode(mode, cfg, batch, dev):
    """Per-step milliseconds after warm-up: CUDA events on the GPU, perf_counter on the CPU."""
    step = build_step(mode, cfg, batch, dev)
    warmup = cfg.warmup + (3 if mode.startswith("compile") else 0)  # compilation and autotuning happen here
    for _ in range(warmup):
        step()
    cuda = dev.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
    times = []
    for _ in range(cfg.steps):
        if cuda:
            start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            d_loss, g_loss = step()
            stop.record()
            stop.synchronize()
            times.append(start.elapsed_time(stop))
        else:
            t0 = time.perf_counter()
            d_loss, g_loss = step()
            times.append((time.perf_counter() - t0) * 1e3)
        if not (torch.isfinite(d_loss) and torch.isfinite(g_loss)):
            raise RuntimeError("non-finite losses")
    return times


def unavailable_reason(mode, dev, cfg=None):
    """Why a mode cannot run here, or None."""
    if cfg is not None and cfg.gp > 0 and mode.startswith("compile"):
        return "unavailable with --gp (torch.compile does not compile a double backward)"
    if mode.startswith("compile") and not hasattr(torch, "compile"):
        return f"unavailable (torch {'.'.join(torch.__version__.split('.')[:2])})"
    if dev.type == "cpu" and MODE_MATH[mode] != "fp32" and mode != "eager_tf32":
        return "skipped (CPU run: eager modes only)"
    return None


def out_of_time(cfg, mode):
    """Why the mode must not start under --deadline-s, or None."""
    if not cfg.deadline_s:
        return None
    need = cfg.compile_need_s if mode.startswith("compile") else cfg.mode_need_s
    left = cfg.deadline_s - (time.monotonic() - cfg.started)
    if left < need:
        return f"skipped (out of time: {max(left, 0):.0f} s of --deadline-s {cfg.deadline_s:g} left, needs about {need:g} s)"
    return None


def run_torch(cfg, batches, dev, after_mode=None):
    """Rows of every (mode, batch); after_mode(rows) is called after each mode (the JSON is written there)."""
    rows = []
    for mode in cfg.modes:
        for batch in batches:
            row = {"side": "torch", "mode": mode, "batch": batch, "math": MODE_MATH[mode]}
            reason = unavailable_reason(mode, dev, cfg)
            if not reason and mode.startswith("compile") and cfg.compile_batches and batch not in cfg.compile_batches:
                reason = "skipped (not in --compile-batches)"
            if not reason:
                reason = out_of_time(cfg, mode)
            if reason:
                row["error"] = reason
            else:
                try:
                    row["ms"] = time_mode(mode, cfg, batch, dev)
                except Exception as e:  # out of memory, a compile failure: record it, go on with the table
                    row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]
                if dev.type == "cuda":
                    torch.cuda.empty_cache()
            rows.append(row)
            status = row.get("error") or f"{statistics.median(row['ms']):.2f} ms/step"
            print(f"torch {mode} batch {batch}: {status}", flush=True)
        if after_mode:
            after_mode(rows)
    return rows


def load_gantrain_json(cfg, batches):
    """A bench_throughput JSON made earlier (gpu_check.sh runs it once for both): it must be this model."""
    doc = json.load(open(cfg.gantrain_json))
    model = doc["config"]["model"]
    want = {"nz": cfg.nz, "g_width": cfg.ngf, "d_width": cfg.ndf, "resolution": cfg.res, "channels": cfg.channels}
    if any(model.get(k) != v for k, v in want.items()):
        raise SystemExit(f"torch_side_by_side: {cfg.gantrain_json} is for model {model}, not {want}")
    doc["rows"] = [r for r in doc["rows"] if r["batch"] in batches]
    return doc


def gantrain_rows(doc):
    rows = []
    for r in doc["rows"]:
        row = {"side": "gantrain", "mode": f"gantrain_{r['precision']}", "batch": r["batch"], "math": r["precision"],
               "engine": r.get("engine", "")}
        if "error" in r:
            row["error"] = r["error"][:300]
        else:
            row["ms"] = r["all_ms"]
        rows.append(row)
    return rows


def run_gantrain(cfg, batches, device, commit, peaks):
    """bench_throughput's rows, or one error row per precision when it cannot run."""
    if cfg.gantrain_json:
        doc = load_gantrain_json(cfg, batches)
        return gantrain_rows(doc), doc
    precisions = cfg.precisions if device == "cuda" else ["fp32"]  # the CPU engine is fp32 only
    if not cfg.bench or not os.path.exists(cfg.bench):
        return [{"side": "gantrain", "mode": f"gantrain_{p}", "batch": b, "math": p,
                 "error": f"no bench_throughput at '{cfg.bench}' (--bench)"} for p in precisions for b in batches], None
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "throughput.json")
        cmd = [cfg.bench, "--device", device, "--batch", ",".join(map(str, batches)), "--precision",
               ",".join(precisions), "--nz", str(cfg.nz), "--g-width", str(cfg.ngf), "--d-width", str(cfg.ndf),
               "--resolution", str(cfg.res), "--channels", str(cfg.channels), "--warmup", str(cfg.warmup),
               "--steps", str(cfg.steps), "--commit", commit, "--json", out]
        if cfg.gp > 0:
            cmd += ["--gp", str(cfg.gp)]
        if device == "cpu":  # the same thread count as torch's (a CPU test run)
            cmd += ["--threads", str(torch.get_num_threads())]
        if peaks:
            cmd += ["--peak-tflops", ",".join(f"{k}={v}" for k, v in peaks.items())]
        print("running:", " ".join(cmd), flush=True)
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=cfg.bench_timeout)
            log = proc.stdout + proc.stderr
            rc = proc.returncode
        except subprocess.TimeoutExpired as e:
            log, rc = f"timed out after {cfg.bench_timeout} s: {e}", None
        print(log, flush=True)
        doc = json.load(open(out)) if os.path.exists(out) else None
    if doc is None:
        why = f"bench_throughput exited with {rc}: {log.strip().splitlines()[-1] if log.strip() else 'no output'}"
        return [{"side": "gantrain", "mode": f"gantrain_{p}", "batch": b, "math": p, "error": why[:300]}
                for p in precisions for b in batches], None
    return gantrain_rows(doc), doc


def finish_rows(rows, flops, peaks):
    """Median, images/s, MFU (same FLOP count and peaks for both sides) and speed vs the fastest torch mode."""
    for r in rows:
        if "error" in r:
            continue
        ms = statistics.median(r["ms"])
        f = flops[r["batch"]]
        r.update(median_ms=ms, min_ms=min(r["ms"]), max_ms=max(r["ms"]), images_per_s=r["batch"] / (ms * 1e-3),
                 step_flops=f, model_tflops=f / (ms * 1e-3) / 1e12 if f is not None else None)
        r["mfu"] = r["model_tflops"] / peaks[r["math"]] if r["math"] in peaks and f is not None else None
    for batch in sorted({r["batch"] for r in rows}):
        timed = [r for r in rows if r["batch"] == batch and r["side"] == "torch" and "error" not in r]
        best = max(timed, key=lambda r: r["images_per_s"]) if timed else None
        for r in rows:
            if r["batch"] == batch and "error" not in r:
                r["fastest_torch_mode"] = best["mode"] if best else None
                r["speed_vs_fastest_torch"] = r["images_per_s"] / best["images_per_s"] if best else None


def print_table(rows, header):
    print()
    for line in header:
        print("# " + line)
    print(f"{'batch':>6} {'mode':<18} {'images/s':>10} {'ms/step':>9} {'MFU':>7} {'vs fastest torch':>17}")
    for batch in sorted({r["batch"] for r in rows}):
        for r in [r for r in rows if r["batch"] == batch]:
            if "error" in r:
                print(f"{batch:>6} {r['mode']:<18} {r['error']}")
                continue
            mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "-"
            speed = f"{r['speed_vs_fastest_torch']:.2f}x" if r["speed_vs_fastest_torch"] is not None else "-"
            print(f"{batch:>6} {r['mode']:<18} {r['images_per_s']:>10.0f} {r['median_ms']:>9.2f} {mfu:>7} {speed:>17}")


def git_commit():
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=REPO, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        return out or "unknown"
    except Exception:  # no git on the GPU machine, or not a checkout
        return "unknown"


def slug(text):
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-") or "unknown"


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bench", default="", help="path of bench_throughput (gantrain's side)")
    ap.add_argument("--gantrain-json", default="", help="use this bench_throughput JSON instead of running --bench")
    ap.add_argument("--batches", default="128,256,512,1024")
    ap.add_argument("--modes", default=",".join(TORCH_MODES))
    ap.add_argument("--precisions", default="fp32,tf32,bf16", help="gantrain precisions (bench_throughput)")
    ap.add_argument("--compile-batches", default="", help="batches for compile_bf16_cl (default: all; each compiles anew)")
    ap.add_argument("--compile-mode", default="max-autotune-no-cudagraphs",
                    help="torch.compile mode: max-autotune-no-cudagraphs or default")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    # The reference run's model (config/dcgan_celeba64.yaml); bench_throughput is given the same.
    ap.add_argument("--nz", type=int, default=100)
    ap.add_argument("--ngf", type=int, default=128)
    ap.add_argument("--ndf", type=int, default=128)
    ap.add_argument("--res", type=int, default=64, choices=[32, 64, 128])
    ap.add_argument("--channels", type=int, default=3)
    ap.add_argument("--peak-tflops", default="", help="'bf16=989.4,tf32=494.7,fp32=66.9' (default: those on H100/H200)")
    ap.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"])
    ap.add_argument("--allow-cpu", action="store_true", help="without a GPU, time the eager modes on the CPU")
    ap.add_argument("--threads", type=int, default=0, help="CPU run: torch threads (0 = torch's default)")
    ap.add_argument("--bench-timeout", type=float, default=400, help="seconds for bench_throughput")
    ap.add_argument("--commit", default="", help="revision to record (default: git describe)")
    ap.add_argument("--deadline-s", type=float, default=0,
                    help="seconds the whole script may take (0: no limit); modes that cannot fit are skipped")
    ap.add_argument("--compile-need-s", type=float, default=150,
                    help="with --deadline-s: seconds torch.compile's mode needs to start (compile + autotune + timing)")
    ap.add_argument("--mode-need-s", type=float, default=20,
                    help="with --deadline-s: seconds an eager or AMP mode needs to start")
    ap.add_argument("--gp", type=float, default=0,
                    help="time WGAN-GP's step instead (this penalty weight, create_graph=True, layer-norm critic); "
                         "gantrain's side runs bench_throughput --gp; no MFU")
    ap.add_argument("--results-dir", default=os.path.join(REPO, "bench", "results"))
    ap.add_argument("--json", default="", help="write here instead of <results-dir>/torch_side_by_side_<date>_<gpu>_<commit>.json")
    cfg = ap.parse_args()
    cfg.started = STARTED
    cfg.modes = [m for m in cfg.modes.split(",") if m]
    cfg.precisions = [p for p in cfg.precisions.split(",") if p]
    try:
        cfg.compile_batches = {int(b) for b in cfg.compile_batches.split(",") if b}
    except ValueError:
        ap.error(f"--compile-batches: '{cfg.compile_batches}' is not a list of integers")
    for m in cfg.modes:
        if m not in TORCH_MODES:
            ap.error(f"--modes: '{m}' is not one of {', '.join(TORCH_MODES)}")
    for p in cfg.precisions:
        if p not in H100_PEAKS:
            ap.error(f"--precisions: '{p}' is not one of fp32, tf32, bf16")
    if cfg.steps < 1 or cfg.warmup < 0:
        ap.error("--steps must be at least 1 and --warmup at least 0")
    return cfg


def parse_peaks(text):
    peaks = {}
    for item in [i for i in text.split(",") if i]:
        key, _, value = item.partition("=")
        if key not in H100_PEAKS or not value:
            raise SystemExit(f"torch_side_by_side: --peak-tflops: '{item}' is not precision=TFLOP/s")
        peaks[key] = float(value)
    return peaks


def main():
    cfg = parse_args()
    try:
        batches = [int(b) for b in cfg.batches.split(",") if b]
    except ValueError:
        raise SystemExit(f"torch_side_by_side: --batches: '{cfg.batches}' is not a list of integers")
    if cfg.gantrain_json:
        load_gantrain_json(cfg, batches)  # a wrong model fails now, not after minutes of PyTorch timing
    have_cuda = torch.cuda.is_available()
    device = cfg.device if cfg.device != "auto" else ("cuda" if have_cuda else "cpu")
    if device == "cuda" and not have_cuda:
        print("torch_side_by_side: --device cuda, but torch sees no CUDA device")
        return 1
    if device == "cpu" and not cfg.allow_cpu:
        print("torch_side_by_side: torch sees no CUDA device; nothing to time (--allow-cpu times the eager modes "
              "on the CPU instead, for testing)")
        return 0
    dev = torch.device(device)
    if device == "cpu" and cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    name = torch.cuda.get_device_name(0) if device == "cuda" else "cpu"
    if cfg.peak_tflops:
        peaks, peak_source = parse_peaks(cfg.peak_tflops), f"--peak-tflops {cfg.peak_tflops}"
    elif device == "cuda" and any(k in name for k in ("H100", "H200")):
        peaks, peak_source = dict(H100_PEAKS), "H100 SXM datasheet, dense"
    else:
        peaks, peak_source = {}, f"none known for {name}: pass --peak-tflops"
    commit = cfg.commit or git_commit()
    date = datetime.datetime.now(datetime.timezone.utc)
    flops = {b: step_flops(cfg, b) for b in batches}
    header = [f"{name}, torch {torch.__version__}" + (f", cuDNN {torch.backends.cudnn.version()}" if device == "cuda" else
                                                      f", {torch.get_num_threads()} threads (CPU test run)"),
              f"commit {commit}, {date.isoformat(timespec='seconds')}",
              f"DCGAN nz {cfg.nz}, ngf {cfg.ngf}, ndf {cfg.ndf}, {cfg.res}x{cfg.res}x{cfg.channels}; "
              f"{cfg.warmup} warm-up steps, median of {cfg.steps}",
              ("step FLOPs = 2 * (3 Gf - G1 + 8 Df - 2 D1) (docs/performance.md); "
               f"{flops[batches[0]] / batches[0] / 1e9:.3f} GFLOP per image") if cfg.gp <= 0 else
              (f"WGAN-GP step: critic loss + {cfg.gp:g} * gradient penalty (create_graph=True), layer-norm critic, "
               "Adam (0, 0.9); no FLOP count (no MFU)"),
              f"MFU peaks: {peaks or 'none'} ({peak_source})",
              "vs fastest torch: images/s over the fastest PyTorch mode's at the same batch"]
    print("\n".join("# " + h for h in header), flush=True)

    path = cfg.json or os.path.join(cfg.results_dir,
                                    f"torch_side_by_side_{date.strftime('%Y-%m-%d_%H%M%S')}_{slug(name)}_{slug(commit)}.json")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)

    def write(torch_rows, g_rows, g_doc, complete):
        rows = copy.deepcopy(torch_rows) + copy.deepcopy(g_rows)
        # The two FLOP counts (hooks here, layer walk in bench_throughput) must agree, or MFU means two things.
        flops_agree = None
        if g_doc is not None and cfg.gp <= 0:
            theirs = {f["batch"]: f["step_flops"] for f in g_doc["flop_count"]["per_batch"]}
            flops_agree = all(theirs.get(b) == flops[b] for b in batches)
            if not flops_agree and complete:
                print(f"WARNING: FLOP counts differ: torch hooks {flops}, bench_throughput {theirs}")
        finish_rows(rows, flops, peaks)
        doc = {"benchmark": "torch_side_by_side " + ("wgangp_train_step" if cfg.gp > 0 else "dcgan_train_step"),
               "gp_weight": cfg.gp, "date": date.isoformat(timespec="seconds"),
               "device": name, "host": os.uname().nodename, "commit": commit, "torch_version": torch.__version__,
               "cudnn_version": torch.backends.cudnn.version() if device == "cuda" else None,
               "model": {"nz": cfg.nz, "ngf": cfg.ngf, "ndf": cfg.ndf, "resolution": cfg.res, "channels": cfg.channels},
               "warmup_steps": cfg.warmup, "timed_steps": cfg.steps, "compile_mode": cfg.compile_mode,
               "flop_formula": "2 * (3 Gf - G1 + 8 Df - 2 D1)", "step_flops": {str(b): flops[b] for b in batches},
               "flop_counts_agree": flops_agree, "peak_tflops": peaks, "peak_source": peak_source,
               "gantrain_engine": g_doc["rows"][0].get("engine") if g_doc and g_doc["rows"] else None,
               "complete": complete, "rows": rows}
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(doc, f, indent=2)
            f.write("\n")
        os.replace(tmp, path)  # a run killed mid-write leaves the previous file whole
        return rows

    # gantrain's rows first when they come from a JSON, so that every partial file holds them.
    g_rows, g_doc = run_gantrain(cfg, batches, device, commit, peaks) if cfg.gantrain_json else ([], None)
    torch_rows = run_torch(cfg, batches, dev, after_mode=lambda r: write(r, g_rows, g_doc, complete=False))
    if not cfg.gantrain_json:
        g_rows, g_doc = run_gantrain(cfg, batches, device, commit, peaks)
    rows = write(torch_rows, g_rows, g_doc, complete=True)
    print_table(rows, header)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
