#!/usr/bin/python3
"""The CPU engine's results bit for bit: SHA-256 of every tensor of the final checkpoint of fixed runs, against digests stored in the repository.

A refactor of the training code must not change one bit of what the CPU engine computes. The runs:
  tiny         config/tiny.yaml as it is (4 steps)
  demo20       config/demo.yaml's model on Fashion-MNIST (read from the IDX files) for 20 steps
  sgd_np1      tiny with an SGD critic (momentum), Adam for G, clipping and flips, 20 steps, one process
  sgd_np2      the same over mpirun -np 2
All at one CPU thread per rank. Float results depend on the CPU kernels OpenBLAS picks for the machine
(its core name: a Zen and a Haswell kernel sum in other orders), so the stored digests carry the core
they were made on; on another core the test says so and skips (exit 77), unless --write makes new ones.

Usage: checkpoint_digests.py --exe build/gantrain --mpirun mpirun --source . [--write] [--only NAME]
Exit: 0 same bits, 1 a difference (every differing tensor listed), 77 another CPU core, 2 bad usage.
"""
import argparse
import ctypes
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "common"))
import mpirun  # noqa: E402  (tests/common/mpirun.py)

SKIP = 77
HERE = os.path.dirname(os.path.abspath(__file__))
STORE = os.path.join(HERE, "checkpoint_digests.json")
ONE_THREAD = ["run.threads=1"]
SGD = ["optim.g.name=adam", "optim.g.lr=0.0003", "optim.g.beta1=0.6", "optim.d.name=sgd", "optim.d.lr=0.05",
       "optim.d.momentum=0.9", "train.clip_grad_norm=0.05", "data.flip=true", "train.max_steps=20"]
RUNS = {  # name: (ranks, config file, overrides)
    "tiny": (0, "config/tiny.yaml", []),
    "demo20": (0, "config/demo.yaml", ["data.source=fashion-mnist", "data.path=", "train.max_steps=20",
                                       "train.max_minutes=0", "log.sample_every_steps=0"]),
    "sgd_np1": (0, "config/tiny.yaml", SGD),
    "sgd_np2": (2, "config/tiny.yaml", SGD),
}
# /meta attributes that name the run or the build rather than describe its result (and their digests).
META_SKIP = {"config", "code_version", "config_digest", "code_version_digest", "unix_time"}


def openblas_core():
    for name in ("libopenblas.so.0", "libopenblas.so"):
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        lib.openblas_get_corename.restype = ctypes.c_char_p
        return lib.openblas_get_corename().decode()
    return "unknown"


def digests(path):
    import h5py
    import numpy as np
    out = {}
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                a = np.ascontiguousarray(obj[()])
                out[name] = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode() + a.tobytes()).hexdigest()[:32]
        f.visititems(visit)
        for k, v in f["meta"].attrs.items():
            if k not in META_SKIP:
                out[f"meta.{k}"] = str(v.decode() if isinstance(v, bytes) else v)
    return out


def train(args, tmp, name):
    ranks, config, overrides = RUNS[name]
    cmd = [args.exe, "train", "--config", os.path.join(args.source, config), f"run.out_dir={tmp}", f"run.name={name}",
           "checkpoint.every_steps=0", *ONE_THREAD, *overrides]
    if ranks:
        cmd = mpirun.command(args.mpirun, ranks, *cmd)
    r = subprocess.run(cmd, capture_output=True, text=True, env=mpirun.environment(), timeout=600)
    if r.returncode != 0:
        raise RuntimeError(f"{name}: exit {r.returncode}\n{r.stdout}\n{r.stderr}")
    ckpts = sorted(os.listdir(os.path.join(tmp, name, "checkpoints")))
    return os.path.join(tmp, name, "checkpoints", ckpts[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--exe", required=True)
    ap.add_argument("--mpirun", default="mpirun")
    ap.add_argument("--source", required=True)
    ap.add_argument("--write", action="store_true", help="store this machine's digests (before a refactor)")
    ap.add_argument("--only", choices=sorted(RUNS), action="append")
    args = ap.parse_args()
    if os.environ.get("GANTRAIN_SANITIZED") == "1" and not args.write:
        # The digests are the release build's bits; a sanitized build compiles the same code at -O1, whose
        # float sums round otherwise (measured: 54-64 of ~80 entries differ). Its runs are still made and
        # read back here, so the sanitizers watch them; only the bit comparison is the release build's.
        print("sanitized build: digests are compared in the normal (release) build only; here the runs are made and "
              "read back under the sanitizers")
        tmp = tempfile.mkdtemp(prefix="gt_digests_")
        try:
            for name in (args.only or sorted(RUNS)):
                print(f"{name}: {len(digests(train(args, tmp, name)))} entries read back")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return 0
    core = openblas_core()
    stored = json.load(open(STORE)) if os.path.exists(STORE) else {"openblas_core": core, "runs": {}}
    if not args.write and stored.get("openblas_core") != core:
        print(f"skip: the stored digests were made with OpenBLAS's {stored.get('openblas_core')} kernels; this CPU "
              f"uses {core}, whose float sums differ (make new ones with --write before a change)")
        return SKIP
    names = args.only or sorted(RUNS)
    failed = []
    tmp = tempfile.mkdtemp(prefix="gt_digests_")
    try:
        for name in names:
            got = digests(train(args, tmp, name))
            if args.write:
                stored["runs"][name] = got
                print(f"{name}: {len(got)} digests stored")
                continue
            want = stored["runs"].get(name)
            if want is None:
                print(f"{name}: no stored digests (run with --write)")
                failed.append(name)
                continue
            differ = sorted(k for k in set(want) | set(got) if want.get(k) != got.get(k))
            if differ:
                failed.append(name)
                print(f"{name}: {len(differ)} of {len(want)} entries differ: {', '.join(differ[:12])}"
                      f"{' ...' if len(differ) > 12 else ''}")
            else:
                print(f"{name}: all {len(want)} tensors and /meta entries bit-identical")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if args.write:
        stored["openblas_core"] = core
        with open(STORE, "w") as f:
            json.dump(stored, f, indent=1, sort_keys=True)
            f.write("\n")
        print(f"wrote {STORE}")
        return 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
