#!/usr/bin/env python3
"""PyTorch's DCGAN-64 training step on the GPU: the baseline gantrain's CUDA backend is measured against.

Modes: eager_fp32 (TF32 off), eager_tf32, amp_bf16_cl (autocast bf16, channels_last), compile_bf16_cl
(torch.compile of the same). The step is bench/cpu_vs_torch/torch_step.py's (D on real and on
fake.detach(), optD.step, G through the updated D, optG.step; BCEWithLogitsLoss; Adam lr 2e-4, betas
(0.5, 0.999), fused=True: PyTorch's fastest Adam) with the model built by the same functions.

Model FLOPs per image (stated, not measured): 2 * multiply-adds of the convolutions; a backward counts as
two forwards (data and weight gradients), so a step is 9 D forwards (three D passes with backward) plus
3 G forwards (one G pass with backward). Utilization is against the dense peak of the mode's math
(H100/H200 SXM datasheet: bf16 989.4, tf32 494.7, fp32 66.9 TFLOP/s), or none for other GPUs.

Usage: python3 torch_dcgan_gpu.py [--batches 128,256,512,1024] [--modes ...] [--steps 20] [--warmup 5]
                                  [--compile-batches 256,1024] [--json FILE]
Prints a table last; writes every number to --json.
"""
import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys

import torch
import torch.nn as nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "cpu_vs_torch"))
from torch_step import dcgan_weights_init, make_discriminator, make_generator  # noqa: E402

NZ, NGF, NDF, NC, RES = 100, 64, 64, 3, 64
PEAK_TFLOPS = {"bf16": 989.4, "tf32": 494.7, "fp32": 66.9}  # H100/H200 SXM, dense


def conv_macs_per_image(model, input_shape):
    """Multiply-adds of every Conv2d/ConvTranspose2d in one forward of one image (hooks on a CPU copy)."""
    macs = []

    def hook(module, inputs, output):
        x = inputs[0]
        if isinstance(module, nn.Conv2d):
            positions = output.shape[2] * output.shape[3]
        else:  # ConvTranspose2d: each input position scatters a K*K*OC patch
            positions = x.shape[2] * x.shape[3]
        k = module.kernel_size[0] * module.kernel_size[1]
        macs.append(positions * module.in_channels * module.out_channels * k)

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    with torch.no_grad():
        model.eval()(torch.zeros(1, *input_shape))
    for h in handles:
        h.remove()
    model.train()
    return sum(macs)


def step_flops_per_image():
    g_macs = conv_macs_per_image(make_generator(NZ, NGF, NC, RES), (NZ, 1, 1))
    d_macs = conv_macs_per_image(make_discriminator(NDF, NC, RES), (NC, RES, RES))
    return 2.0 * (9 * d_macs + 3 * g_macs), g_macs, d_macs


def time_mode(mode, batch, steps, warmup):
    torch.manual_seed(0)
    dev = torch.device("cuda")
    torch.backends.cuda.matmul.allow_tf32 = mode != "eager_fp32"
    torch.backends.cudnn.allow_tf32 = mode != "eager_fp32"
    torch.backends.cudnn.benchmark = True
    netG = make_generator(NZ, NGF, NC, RES).to(dev)
    netD = make_discriminator(NDF, NC, RES).to(dev)
    netG.apply(dcgan_weights_init)
    netD.apply(dcgan_weights_init)
    bf16 = mode in ("amp_bf16_cl", "compile_bf16_cl")
    fmt = torch.channels_last if bf16 else torch.contiguous_format
    netG, netD = netG.to(memory_format=fmt), netD.to(memory_format=fmt)
    optG = torch.optim.Adam(netG.parameters(), lr=2e-4, betas=(0.5, 0.999), fused=True)
    optD = torch.optim.Adam(netD.parameters(), lr=2e-4, betas=(0.5, 0.999), fused=True)
    G, D = netG, netD
    if mode == "compile_bf16_cl":
        G, D = torch.compile(netG, dynamic=False), torch.compile(netD, dynamic=False)
    crit = nn.BCEWithLogitsLoss()
    real = (torch.rand(batch, NC, RES, RES, device=dev) * 2 - 1).contiguous(memory_format=fmt)
    ones, zeros = torch.ones(batch, device=dev), torch.zeros(batch, device=dev)

    def step():
        z = torch.randn(batch, NZ, 1, 1, device=dev)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
            netD.zero_grad(set_to_none=True)
            err_real = crit(D(real).float(), ones)
        err_real.backward()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
            fake = G(z)
            err_fake = crit(D(fake.detach()).float(), zeros)
        err_fake.backward()
        optD.step()
        netG.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
            err_g = crit(D(fake).float(), ones)
        err_g.backward()
        optG.step()

    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    times = []
    for _ in range(steps):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        step()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop))
    return times


def git_commit():
    try:
        here = os.path.dirname(os.path.abspath(__file__))
        return subprocess.run(["git", "describe", "--always", "--dirty"], cwd=here, capture_output=True, text=True,
                              timeout=10).stdout.strip() or "unknown"
    except Exception:  # no git on the GPU machine, or not a checkout
        return "unknown"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", default="128,256,512,1024")
    ap.add_argument("--modes", default="eager_fp32,eager_tf32,amp_bf16_cl,compile_bf16_cl")
    ap.add_argument("--compile-batches", default="256,1024", help="batches for compile_bf16_cl (each compiles anew)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("torch_dcgan_gpu: torch sees no CUDA device; nothing to time")
        return 0
    name = torch.cuda.get_device_name(0)
    known_peak = any(k in name for k in ("H100", "H200"))
    flops_per_image, g_macs, d_macs = step_flops_per_image()
    print(f"# {name}, torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}; "
          f"G {g_macs / 1e6:.1f} M MACs, D {d_macs / 1e6:.1f} M MACs per image forward; "
          f"step {flops_per_image / 1e9:.3f} GFLOP per image", flush=True)
    batches = [int(b) for b in args.batches.split(",") if b]
    compile_batches = {int(b) for b in args.compile_batches.split(",") if b}
    results = []
    for mode in [m for m in args.modes.split(",") if m]:
        math = "bf16" if "bf16" in mode else ("tf32" if mode == "eager_tf32" else "fp32")
        for batch in batches:
            if mode == "compile_bf16_cl" and batch not in compile_batches:
                continue
            warmup = args.warmup + (3 if mode.startswith("compile") else 0)
            try:
                times = time_mode(mode, batch, args.steps, warmup)
            except Exception as e:  # an out-of-memory or compile failure: record it and go on
                print(f"{mode} batch {batch}: failed: {e}", flush=True)
                results.append({"mode": mode, "batch": batch, "error": str(e)})
                torch.cuda.empty_cache()
                continue
            ms = statistics.median(times)
            tflops = flops_per_image * batch / (ms * 1e-3) / 1e12
            row = {"mode": mode, "batch": batch, "math": math, "median_ms": ms, "min_ms": min(times),
                   "max_ms": max(times), "images_per_s": batch / (ms * 1e-3), "model_tflops": tflops,
                   "mfu": tflops / PEAK_TFLOPS[math] if known_peak else None}
            results.append(row)
            print(f"{mode} batch {batch}: {ms:.2f} ms/step, {row['images_per_s']:.0f} images/s", flush=True)
            torch.cuda.empty_cache()
    print(f"\n{'mode':<18} {'batch':>6} {'ms/step':>9} {'images/s':>10} {'TFLOP/s':>8} {'MFU':>6}")
    for r in results:
        if "error" in r:
            print(f"{r['mode']:<18} {r['batch']:>6} failed")
            continue
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "-"
        print(f"{r['mode']:<18} {r['batch']:>6} {r['median_ms']:>9.2f} {r['images_per_s']:>10.0f} "
              f"{r['model_tflops']:>8.1f} {mfu:>6}")
    if args.json:
        doc = {"benchmark": "torch_dcgan64_gpu_step", "date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
               "gpu": name, "torch_version": torch.__version__, "cudnn_version": torch.backends.cudnn.version(),
               "commit": git_commit(), "model": {"nz": NZ, "ngf": NGF, "ndf": NDF, "nc": NC, "resolution": RES},
               "flops_per_image": flops_per_image, "flop_count": "2 * MACs * (9 D forwards + 3 G forwards)",
               "peak_tflops": PEAK_TFLOPS if known_peak else None, "steps": args.steps, "warmup": args.warmup,
               "results": results}
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=2)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
