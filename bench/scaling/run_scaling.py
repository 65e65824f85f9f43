#!/usr/bin/python3
"""Strong and weak scaling of gantrain's training step over MPI ranks (CPU engine here; the same command runs the CUDA
engine with --device cuda), one command: JSON and PNG plots.

For each model and each rank count P it runs `gantrain train` for --steps steps and reads metrics.jsonl: images/s over
the steps after --warmup, and the step's split into compute (G forward, D forward+backward, G backward, optimizer, the
step's other work), exposed communication (ms_comm_wait: the gradient all-reduce not hidden behind backward) and data
wait (ms_data). Strong scaling keeps the global batch (--batch), weak scaling the per-rank batch (--batch / 1 rank).
Efficiency: strong = T(1) / (P T(P)) in step time, weak = images/s(P) / (P images/s(1)).

Models:
  dcgan64   config/dcgan_celeba64.yaml's DCGAN-64 (the reference model's layers) at widths --width (128 is the
            reference; 32 by default, so that a CPU runs it in minutes), synthetic images
  dcgan32   config/demo.yaml's DCGAN (32x32 greyscale, widths 32) on synthetic images
  progan16  config/progan_tiny.yaml's 16x16 stable phase (its earlier phases one step each), WGAN-GP

Besides the scaling rows, every per-rank batch that strong scaling uses is also run on one rank ("single" rows):
the measured single-rank compute at that batch, the input bench/scaling/perf_model.py predicts from.

A machine with fewer cores than the largest P runs oversubscribed: those rows say so ("oversubscribed": true) and are
kept apart from the fitted ones (a rank then shares a core, so its time is not a scaling measurement).

Usage: bench/scaling/run_scaling.py --exe build/gantrain [--ranks 1,2,4] [--models dcgan64,progan16] [--batch 64]
                                    [--steps 30] [--warmup 10] [--threads 1] [--out bench/results/scaling_DATE]
Exit status: 0, 1 when a run failed (its error in the JSON), 2 bad usage.
"""
import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(SOURCE, "tests", "common"))
import mpirun  # noqa: E402  (tests/common/mpirun.py: the job's arguments and environment)

COMPUTE = ["ms_g_forward", "ms_d_forward_backward", "ms_g_backward", "ms_optimizer", "ms_step_other"]


def model_args(name, batch, steps, width=32):
    """The train command's config and overrides for a model at a global batch."""
    if name == "dcgan64":
        return (os.path.join(SOURCE, "config/dcgan_celeba64.yaml"),
                ["data.source=synthetic", "data.synthetic_count=4096", f"model.g_width={width}",
                 f"model.d_width={width}", f"train.batch_size={batch}", f"train.max_steps={steps}",
                 "train.max_minutes=0", "train.epochs=100"])
    if name == "dcgan32":
        return (os.path.join(SOURCE, "config/demo.yaml"),
                ["data.source=synthetic", "data.synthetic_count=4096", f"train.batch_size={batch}",
                 f"train.max_steps={steps}", "train.max_minutes=0", "train.epochs=100"])
    if name == "progan16":
        return (os.path.join(SOURCE, "config/progan_tiny.yaml"),
                [f"progan.phase_length=[1, 1, {steps}]", f"progan.batch={batch}", f"train.max_steps={3 + steps + steps}",
                 "data.synthetic_count=4096"])
    raise SystemExit(f"run_scaling.py: unknown model {name!r} (dcgan64, dcgan32, progan16)")


def measure(args, model, ranks, batch, tmp):
    config, overrides = model_args(model, batch, args.steps, args.width)
    name = f"{model}_p{ranks}_b{batch}"
    cmd = [args.exe, "train", "--config", config, f"run.out_dir={tmp}", f"run.name={name}", "run.device=" + args.device,
           f"run.threads={args.threads}", "log.every_steps=1", "log.sample_every_steps=0", "log.tensorboard=false",
           "checkpoint.every_steps=0", "checkpoint.every_minutes=0", *overrides]
    env = mpirun.environment()
    env["OMP_NUM_THREADS"] = str(args.threads)
    if ranks > 1:
        cmd = mpirun.command(args.mpirun, ranks, *cmd)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, env=env)
    row = {"model": model, "ranks": ranks, "global_batch": batch, "per_rank_batch": batch // ranks,
           "width": args.width if model == "dcgan64" else None,
           "oversubscribed": ranks * args.threads > os.cpu_count()}
    if r.returncode != 0:
        row["error"] = (r.stderr.strip().splitlines() or ["exit %d" % r.returncode])[-1]
        return row
    lines = [json.loads(x) for x in open(os.path.join(tmp, name, "metrics.jsonl")) if '"d_loss"' in x]
    if model == "progan16":  # the 16x16 stable phase only
        lines = [x for x in lines if x.get("resolution") == 16 and x.get("alpha") == 1.0]
    timed = lines[args.warmup:]
    if not timed:
        row["error"] = "no steps after the warmup"
        return row
    mean = lambda key: sum(x.get(key, 0.0) for x in timed) / len(timed)  # noqa: E731
    row.update({"steps_timed": len(timed), "images_per_s": batch / (mean("ms_step") / 1000.0),
                "ms_step": mean("ms_step"), "ms_compute": sum(mean(k) for k in COMPUTE),
                "ms_comm_exposed": mean("ms_comm_wait"), "ms_data": mean("ms_data"), "ms_rest": mean("ms_rest"),
                "breakdown": {k: mean(k) for k in COMPUTE + ["ms_comm_wait", "ms_data", "ms_rest"]}})
    return row


def efficiencies(rows):
    """Strong: T(1) / (P T(P)); weak: (images/s(P) / P) / images/s(1), each against the same model's 1-rank row."""
    for row in rows:
        base = next((b for b in rows if b["model"] == row["model"] and b["kind"] == row["kind"] and b["ranks"] == 1
                     and "error" not in b), None)
        if base is None or "error" in row or row["kind"] == "single":
            continue
        if row["kind"] == "strong":
            row["efficiency"] = base["ms_step"] / (row["ranks"] * row["ms_step"])
        else:
            row["efficiency"] = row["images_per_s"] / (row["ranks"] * base["images_per_s"])
        row["speedup"] = row["images_per_s"] / base["images_per_s"]


def plot(rows, out_png):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    models = sorted({r["model"] for r in rows})
    fig, axes = plt.subplots(len(models), 2, figsize=(11, 3.6 * len(models)), squeeze=False)
    for i, model in enumerate(models):
        for kind, marker in (("strong", "o-"), ("weak", "s--")):
            pts = sorted((r for r in rows if r["model"] == model and r["kind"] == kind and "error" not in r),
                         key=lambda r: r["ranks"])
            if not pts:
                continue
            ranks = [p["ranks"] for p in pts]
            axes[i][0].plot(ranks, [p["images_per_s"] for p in pts], marker, label=f"{kind} scaling")
            ideal = [pts[0]["images_per_s"] * p for p in ranks]
            axes[i][0].plot(ranks, ideal, ":", color="grey", label=f"ideal ({kind})")
            axes[i][1].plot(ranks, [p.get("efficiency", float("nan")) for p in pts], marker, label=kind)
            for p in pts:
                if p["oversubscribed"]:
                    axes[i][0].annotate("oversubscribed", (p["ranks"], p["images_per_s"]), fontsize=7)
        axes[i][0].set_title(f"{model}: images/s")
        axes[i][0].set_xlabel("ranks")
        axes[i][0].legend(fontsize=7)
        axes[i][1].set_title(f"{model}: efficiency")
        axes[i][1].set_xlabel("ranks")
        axes[i][1].axhline(1.0, color="grey", linestyle=":")
        axes[i][1].set_ylim(0, 1.2)
        axes[i][1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_png, dpi=90)


def report_row(row):
    print(f"{row['model']:9s} {row['kind']:6s} P={row['ranks']} batch {row['global_batch']:5d}: " +
          (f"{row['images_per_s']:8.1f} img/s, step {row['ms_step']:7.2f} ms (compute "
           f"{row['ms_compute']:.2f}, exposed comm {row['ms_comm_exposed']:.2f}, data "
           f"{row['ms_data']:.2f})" + (" [oversubscribed]" if row["oversubscribed"] else "")
           if "error" not in row else "failed: " + row["error"]), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--exe", required=True)
    ap.add_argument("--mpirun", default="mpirun")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--ranks", default="1,2,4")
    ap.add_argument("--models", default="dcgan64,progan16")
    ap.add_argument("--width", type=int, default=32, help="dcgan64's g_width and d_width (128: the reference)")
    ap.add_argument("--batch", type=int, default=64, help="global batch of strong scaling; weak: this per rank")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1, help="threads per rank")
    ap.add_argument("--timeout", type=int, default=600)
    ap.add_argument("--out", default=os.path.join(SOURCE, "bench/results",
                                                  "scaling_" + datetime.date.today().isoformat()))
    args = ap.parse_args()
    try:
        ranks = [int(x) for x in args.ranks.split(",")]
    except ValueError:
        ap.error(f"--ranks {args.ranks!r}: a comma-separated list of rank counts")
    if 1 not in ranks or min(ranks) < 1:
        ap.error("--ranks must include 1 (the base of the efficiencies)")
    if args.warmup >= args.steps:
        ap.error("--warmup must be less than --steps")
    if not shutil.which(args.mpirun) and max(ranks) > 1:
        ap.error(f"{args.mpirun} not found")
    os.makedirs(args.out, exist_ok=True)
    rows, failed = [], False
    tmp = tempfile.mkdtemp(prefix="gt_scaling_")
    try:
        for model in args.models.split(","):
            for p in ranks:
                for kind, batch in (("strong", args.batch), ("weak", args.batch * p)):
                    if kind == "weak" and p == 1:
                        row = dict(next(r for r in rows if r["model"] == model and r["ranks"] == 1), kind="weak")
                    else:
                        row = measure(args, model, p, batch, tmp)
                        row["kind"] = kind
                    failed = failed or "error" in row
                    rows.append(row)
                    report_row(row)
            # One rank at each per-rank batch of the strong rows: the compute the model starts from.
            for p in ranks:
                if p > 1 and args.batch % p == 0:
                    row = measure(args, model, 1, args.batch // p, tmp)
                    row["kind"] = "single"
                    failed = failed or "error" in row
                    rows.append(row)
                    report_row(row)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    efficiencies(rows)
    report = {"benchmark": "bench/scaling/run_scaling.py", "date_utc": datetime.datetime.utcnow().isoformat() + "Z",
              "device": args.device, "cpu_count": os.cpu_count(), "threads_per_rank": args.threads,
              "steps": args.steps, "warmup": args.warmup, "rows": rows}
    with open(os.path.join(args.out, "scaling.json"), "w") as f:
        json.dump(report, f, indent=1)
    try:
        plot(rows, os.path.join(args.out, "scaling.png"))
    except ImportError as e:
        print(f"no plots: {e}")
    for row in rows:
        if "efficiency" in row:
            print(f"{row['model']:9s} {row['kind']:6s} P={row['ranks']}: speedup {row['speedup']:.2f}, "
                  f"efficiency {row['efficiency']:.2f}" + (" (oversubscribed)" if row["oversubscribed"] else ""))
    print(f"wrote {os.path.join(args.out, 'scaling.json')} and scaling.png")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
