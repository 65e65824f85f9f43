#!/usr/bin/python3
"""Times the DCGAN training step of bench_cpu_step.cpp in PyTorch on the CPU: warm-up, median of N steps, JSON out.

The step is the classic PyTorch DCGAN one (D on real and on fake.detach(), optD.step, then G through the
updated D, optG.step) with BCEWithLogitsLoss and Adam(lr 2e-4, betas (0.5, 0.999)); the model is
tools/torch_dcgan.py's, the one tests/oracle/test_dcgan_oracle.py checks against gantrain's layers.

Usage: /usr/bin/python3 torch_step.py [--threads N] [--batch 128] [--steps 10] [--warmup 3] [--json FILE]
"""
import argparse
import json
import os
import statistics
import sys
import time

import torch
import torch.nn as nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools"))
from torch_dcgan import Discriminator, Generator, dcgan_weights_init  # noqa: E402


def time_steps(args):
    torch.manual_seed(args.seed)
    netG = Generator(args.nz, args.g_width, args.channels, args.resolution)
    netD = Discriminator(args.d_width, args.channels, args.resolution)
    netG.apply(dcgan_weights_init)
    netD.apply(dcgan_weights_init)
    optG = torch.optim.Adam(netG.parameters(), lr=2e-4, betas=(0.5, 0.999))
    optD = torch.optim.Adam(netD.parameters(), lr=2e-4, betas=(0.5, 0.999))
    crit = nn.BCEWithLogitsLoss()
    real = torch.rand(args.batch, args.channels, args.resolution, args.resolution) * 2 - 1
    ones, zeros = torch.ones(args.batch), torch.zeros(args.batch)

    times_ms = []
    for step in range(args.warmup + args.steps):
        z = torch.randn(args.batch, args.nz, 1, 1)
        start = time.perf_counter()
        netD.zero_grad()
        errD_real = crit(netD(real), ones)
        errD_real.backward()
        fake = netG(z)
        errD_fake = crit(netD(fake.detach()), zeros)
        errD_fake.backward()
        optD.step()
        netG.zero_grad()
        errG = crit(netD(fake), ones)
        errG.backward()
        optG.step()
        stop = time.perf_counter()
        if not (torch.isfinite(errD_real + errD_fake) and torch.isfinite(errG)):
            raise RuntimeError(f"step {step} gave non-finite losses")
        if step >= args.warmup:
            times_ms.append((stop - start) * 1000.0)
    return times_ms


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resolution", type=int, default=32, choices=[32, 64, 128])
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--nz", type=int, default=64)
    parser.add_argument("--g-width", type=int, default=32)
    parser.add_argument("--d-width", type=int, default=32)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--threads", type=int, default=0, help="CPU threads, 0 = all cores")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", help="write the figures to this JSON file")
    args = parser.parse_args()

    threads = args.threads if args.threads > 0 else os.cpu_count()
    torch.set_num_threads(threads)
    times_ms = time_steps(args)
    median = statistics.median(times_ms)
    label = (f"dcgan r{args.resolution} c{args.channels} nz{args.nz} g{args.g_width} d{args.d_width} "
             f"b{args.batch}")
    print("# PyTorch CPU: one DCGAN training step (G forward, D step on real+fake, G step; Adam)")
    print(f"# torch {torch.__version__}, warm-up {args.warmup} steps, then {args.steps} timed steps; "
          "images/s from the median")
    print(f"{'config':<34} {'threads':>8} {'median ms':>10} {'min ms':>10} {'max ms':>10} {'images/s':>10}")
    print(f"{label:<34} {torch.get_num_threads():>8} {median:10.2f} {min(times_ms):10.2f} {max(times_ms):10.2f} "
          f"{args.batch / (median / 1000.0):10.1f}")
    if args.json:
        result = {
            "benchmark": "dcgan_train_step", "backend": "torch-cpu", "torch_version": torch.__version__,
            "config": {"resolution": args.resolution, "channels": args.channels, "nz": args.nz,
                       "g_width": args.g_width, "d_width": args.d_width, "batch": args.batch,
                       "optimizer": "adam", "label": label},
            "threads": torch.get_num_threads(), "warmup_steps": args.warmup, "timed_steps": args.steps,
            "ms_per_step": {"median": median, "min": min(times_ms), "max": max(times_ms), "all": times_ms},
            "images_per_second": args.batch / (median / 1000.0),
            "env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")},
        }
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
            f.write("\n")


if __name__ == "__main__":
    main()
