#!/usr/bin/python3
"""Device-buffer communicators through mpirun -np 2 (MPI staged through pinned memory, NCCL), training with run.device cuda over 2 ranks; GPU cases exit 77 (skipped) without a GPU, and fail instead where GANTRAIN_EXPECT_GPU=1."""
import argparse
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "common"))
import mpirun as mpi_launch  # noqa: E402  (tests/common/mpirun.py)

SKIP = 77


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def gpu_expected():
    """GANTRAIN_EXPECT_GPU=1 (bench/gpu/gpu_check.sh sets it): a machine without a usable GPU is a failure, not a skip."""
    return os.environ.get("GANTRAIN_EXPECT_GPU", "") not in ("", "0")


def probe(test_exe):
    """What the machine has, as test_mpi_gpu --probe reports it: {'gpus': N, 'nccl': bool, 'reason': str}. A probe
    that crashes or prints no count is a failure: read as "0 GPUs" it would turn every GPU case into a skip."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMPI_COMM_WORLD", "PMIX_", "PMI_"))}
    r = subprocess.run([test_exe, "--probe"], capture_output=True, text=True, timeout=60, env=env)
    said = (r.stdout + r.stderr).strip()
    check(r.returncode == 0, f"test_mpi_gpu --probe exited {r.returncode}: {said[-2000:]}")
    info = {"reason": ""}
    for line in r.stdout.splitlines():
        key, _, value = line.partition(" ")
        if key == "gpus":
            info["gpus"] = int(value)
        elif key == "nccl":
            check(value in ("yes", "no"), f"test_mpi_gpu --probe: 'nccl {value}' is neither yes nor no")
            info["nccl"] = value == "yes"
        elif key == "reason":
            info["reason"] = value
    check("gpus" in info and "nccl" in info, f"test_mpi_gpu --probe printed no 'gpus' or 'nccl' line: {said[-2000:]}")
    return info


def no_gpu(machine):
    """The case cannot run: a skip (77), or, where a GPU is expected, a failure naming the CUDA error."""
    check(not gpu_expected(), f"GANTRAIN_EXPECT_GPU is set, but the probe found no usable GPU: {machine['reason']}")
    print(f"skipped: no usable GPU ({machine['reason']})")
    return SKIP


def mpirun(args, np, *cmd):
    return mpi_launch.command(args.mpirun, np, *cmd)


def run(cmd, timeout=240):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    sys.stdout.write(r.stdout[-6000:])
    sys.stderr.write(r.stderr[-6000:])
    return r


def run_gtest_np2(args, gtest_filter):
    r = run(mpirun(args, 2, args.test_exe, f"--gtest_filter={gtest_filter}"))
    check(r.returncode == 0, f"mpirun -np 2 test_mpi_gpu --gtest_filter={gtest_filter} exited {r.returncode}")
    check("[  PASSED  ]" in r.stdout, "rank 0 did not report the tests as passed")
    check("[  SKIPPED ]" not in r.stdout, "a test skipped")
    return r


def case_staged_np2(args, machine):
    """2 ranks, sharing one GPU when there is one: MPI on device buffers staged through pinned host memory."""
    if machine["gpus"] == 0:
        return no_gpu(machine)
    run_gtest_np2(args, "StagedMpi.*")
    return 0


def case_nccl_np2(args, machine):
    """2 NCCL ranks: every collective with 2+ GPUs; with 1 GPU, the error naming the node and the counts."""
    if machine["gpus"] == 0:
        return no_gpu(machine)
    if not machine["nccl"]:
        check(not gpu_expected(), "GANTRAIN_EXPECT_GPU is set, but test_mpi_gpu was built without NCCL")
        print("skipped: built without NCCL")
        return SKIP
    r = run_gtest_np2(args, "NcclMpi.*")
    if machine["gpus"] < 2:
        check("expected error on this node" in r.stdout, "the one-GPU node did not report the NCCL placement error")
    return 0


# Bound on the worst per-tensor difference (max |a - b| / max |a|) between 1 and 2 ranks after 6 fp32 steps:
# the CPU engine measures ~1e-6 after 20 steps; cuDNN's and our sums add a little.
RANKS_REL = 1e-3


def worst_model_difference(path_a, path_b):
    """Worst relative difference over the G/ and D/ tensors (parameters, buffers, optimizer state), measured
    as the CPU invariance test measures it (test_mpi.py, beside this file)."""
    from test_mpi import load_h5, worst_relative_difference
    models = [{k: v for k, v in load_h5(p).items() if k.startswith(("G/", "D/"))} for p in (path_a, path_b)]
    check(models[0], "no G/ or D/ tensors in the checkpoint")
    return worst_relative_difference(*models)


def case_train_refuses_nccl_np2(args, machine):
    """gantrain train with dist.backend: nccl and run.device: cpu on 2 ranks: one agreed message saying that NCCL
    needs run.device cuda, exit code 2 on every rank, nothing written. Runs with or without a GPU."""
    with tempfile.TemporaryDirectory(prefix="gt_nccl_") as tmp:
        out_dir = os.path.join(tmp, "runs")
        r = run(mpirun(args, 2, args.exe, "train", "--config", os.path.join(args.source, "config/tiny.yaml"),
                       f"run.out_dir={out_dir}", "run.name=nccl", "run.device=cpu", "dist.backend=nccl",
                       "dist.timeout_s=60"), timeout=120)
        check(r.returncode == 2, f"exit code {r.returncode}, expected 2")
        errors = [line for line in (r.stdout + r.stderr).splitlines() if "gantrain: error:" in line]
        check(len(errors) == 1, f"{len(errors)} error lines, expected exactly one: {errors}")
        check("dist.backend is nccl" in errors[0] and "run.device is cpu" in errors[0],
              f"the error does not name dist.backend and run.device: {errors[0]}")
        check(not os.path.exists(out_dir), "a run directory was written")
    return 0


def case_train_cuda_np2(args, machine):
    """gantrain train with run.device: cuda on 2 ranks. Without a GPU: one agreed error naming the node, exit 2,
    nothing written. With GPUs: dist.backend auto trains (NCCL with 2+ GPUs, staged through MPI when the ranks
    share one) and matches one process on one GPU; with one GPU, dist.backend nccl is the placement error."""
    with tempfile.TemporaryDirectory(prefix="gt_cuda_") as tmp:
        out_dir = os.path.join(tmp, "runs")
        base = [args.exe, "train", "--config", os.path.join(args.source, "config/tiny.yaml"), f"run.out_dir={out_dir}",
                "run.device=cuda", "dist.timeout_s=60", "train.max_steps=6"]
        if machine["gpus"] == 0:
            check(not gpu_expected(), f"GANTRAIN_EXPECT_GPU is set, but the probe found no usable GPU: {machine['reason']}")
            r = run(mpirun(args, 2, *base, "run.name=nogpu"), timeout=120)
            check(r.returncode == 2, f"exit code {r.returncode}, expected 2")
            errors = [line for line in (r.stdout + r.stderr).splitlines() if "gantrain: error:" in line]
            check(len(errors) == 1, f"{len(errors)} error lines, expected exactly one: {errors}")
            check("run.device is cuda" in errors[0] and "has no usable GPU" in errors[0], errors[0])
            check(not os.path.exists(out_dir), "a run directory was written")
            return 0
        # fp32: the 2-rank run must match one process on one GPU up to summation order (as on the CPU,
        # tests/mpi/test_mpi.py; per-rank batch norm would differ by 0.1 to 1).
        r = run(mpirun(args, 2, *base, "run.name=auto", "run.precision=fp32"), timeout=240)
        check(r.returncode == 0, f"dist.backend auto on {machine['gpus']} GPU(s): exit code {r.returncode}")
        two = os.path.join(out_dir, "auto", "checkpoints", "ckpt_00000006.h5")
        check(os.path.exists(two), "no final checkpoint")
        r = run([*base, "run.name=single", "run.precision=fp32"], timeout=240)
        check(r.returncode == 0, f"one process on the GPU: exit code {r.returncode}")
        rel, where = worst_model_difference(os.path.join(out_dir, "single", "checkpoints", "ckpt_00000006.h5"), two)
        print(f"2 ranks vs 1 on the GPU: worst relative difference {rel:.3g} ({where}), bound {RANKS_REL:g}")
        check(rel <= RANKS_REL, f"2 ranks differ from 1 by {rel:.3g} at {where}")
        if machine["gpus"] < 2:
            r = run(mpirun(args, 2, *base, "run.name=nccl", "dist.backend=nccl"), timeout=120)
            check(r.returncode == 2, f"exit code {r.returncode}, expected 2")
            check("runs 2 ranks but they see only 1 GPU" in r.stdout + r.stderr, "no NCCL placement error")
    return 0


CASES = {"staged_np2": case_staged_np2, "nccl_np2": case_nccl_np2, "train_refuses_nccl_np2": case_train_refuses_nccl_np2,
         "train_cuda_np2": case_train_cuda_np2}


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--test-exe", required=True, help="test_mpi_gpu")
    p.add_argument("--exe", required=True, help="gantrain")
    p.add_argument("--mpirun", required=True)
    p.add_argument("--source", required=True)
    p.add_argument("--case", required=True, choices=sorted(CASES))
    args = p.parse_args()
    machine = probe(args.test_exe)
    print(f"machine: {machine}")
    sys.exit(CASES[args.case](args, machine))


if __name__ == "__main__":
    main()
