#!/usr/bin/python3
"""End-to-end tests of checkpoint integrity: `info` and `sample` refuse truncated, corrupt, foreign and diverged checkpoints; kills at the write's fault points never leave a bad ckpt_*.h5."""
import argparse
import os
import resource
import shutil
import signal
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "common"))
from gt_test import DIGEST_BLOCK, check, fnv1a64, reseal_checkpoint, run, skip  # noqa: E402  (tests/common/gt_test.py)

KILL_POINTS = ["ckpt_created", "ckpt_meta", "ckpt_tensors", "ckpt_synced", "ckpt_renamed"]


def train_tiny(exe, src, out_dir, *overrides, **kw):
    """config/tiny.yaml: 4 steps, checkpoints at steps 2 and 4 under OUT_DIR/tiny/checkpoints."""
    return run(exe, "train", "--config", os.path.join(src, "config/tiny.yaml"), f"run.out_dir={out_dir}", *overrides,
               **kw)


def ckpt_dir(out_dir):
    return os.path.join(out_dir, "tiny", "checkpoints")



def expect_refused(exe, args, path, must_contain):
    """Exit 2 and exactly one stderr line that names the file and the problem."""
    r = run(exe, *args)
    check(r.returncode == 2, f"{args}: exit {r.returncode}, expected 2; stdout: {r.stdout} stderr: {r.stderr}")
    lines = r.stderr.strip().splitlines()
    check(len(lines) == 1, f"{args}: expected one line of error, got: {r.stderr!r}")
    check(path in lines[0] and must_contain in lines[0], f"{args}: {lines[0]!r} lacks {path!r} or {must_contain!r}")
    check("verdict: ok" not in r.stdout, f"{args}: a refused checkpoint got 'verdict: ok': {r.stdout}")
    return lines[0]


def case_info_and_sample_refuse_bad_checkpoints(exe, src, tmp):
    try:
        import h5py
        import numpy as np
    except ImportError as e:
        return skip(f"h5py/numpy: {e}")
    r = train_tiny(exe, src, tmp)
    check(r.returncode == 0, f"train failed: {r.stderr}")
    good = os.path.join(ckpt_dir(tmp), "ckpt_00000004.h5")

    r = run(exe, "info", good)
    check(r.returncode == 0 and "verdict: ok" in r.stdout.splitlines(), f"info on the good one: {r.stdout} {r.stderr}")
    for part in ("step 4", "model dcgan 32x32x1", "nz 8", "widths G 4 D 4", "batch 8", "optim G adam", "world_size 1",
                 "seed 1234"):
        check(part in r.stdout, f"info lacks {part!r}: {r.stdout}")

    # Debian's HDF5 1.10 (through h5py) reads format 3 (HDF5 skips the 512-byte user block that holds the
    # whole-file digest), and every tensor carries HDF5's checksum.
    with h5py.File(good, "r") as f:
        check(f["meta"].attrs["format_version"] == 3 and f.userblock_size == DIGEST_BLOCK, "not format 3")
        weight = f["G/params/main.0.weight"]
        check(weight.fletcher32 and weight.chunks == weight.shape, f"weight not one checksummed chunk: {weight.chunks}")
        check(int(f["G/optim/step"][()]) == 4, "the scalar G/optim/step does not read back as 4")
        check(f["meta"].attrs["config_digest"] == fnv1a64(f["meta"].attrs["config"]), "config_digest mismatch")
        chunk = weight.id.get_chunk_info(0)

    truncated = os.path.join(tmp, "truncated.h5")
    with open(good, "rb") as f_in, open(truncated, "wb") as f_out:
        f_out.write(f_in.read(os.path.getsize(good) // 2))
    expect_refused(exe, ["info", truncated], truncated, "is truncated")

    corrupt = os.path.join(tmp, "corrupt.h5")
    shutil.copy(good, corrupt)
    with open(corrupt, "r+b") as f:
        f.seek(DIGEST_BLOCK + chunk.byte_offset + chunk.size // 2)  # HDF5 addresses count from after the user block
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0x10]))
    expect_refused(exe, ["info", corrupt], corrupt, "is corrupt: its contents do not match the digest written with it")
    # Resealed (as if the damage happened before the digest was taken), HDF5's own checksum still catches it.
    reseal_checkpoint(corrupt)
    expect_refused(exe, ["info", corrupt], corrupt, "is corrupt: checksum of /G/params/main.0.weight does not match")
    expect_refused(exe, ["sample", "--checkpoint", corrupt, "--out", os.path.join(tmp, "c.png")], corrupt, "corrupt")

    foreign = os.path.join(tmp, "foreign.h5")
    with h5py.File(foreign, "w") as f:
        f.create_dataset("G/params/main.0.weight", data=np.zeros((2, 2), np.float32))
    expect_refused(exe, ["info", foreign], foreign, "is not a gantrain checkpoint: it has no /meta group")

    # Written through HDF5, the file stays valid (the checksum is recomputed): only its weights are bad.
    nonfinite = os.path.join(tmp, "nonfinite.h5")
    shutil.copy(good, nonfinite)
    with h5py.File(nonfinite, "r+") as f:
        f["G/params/main.3.weight"][0, 0, 0, 0] = np.nan
    reseal_checkpoint(nonfinite)
    expect_refused(exe, ["info", nonfinite], nonfinite, "holds non-finite weights (/G/params/main.3.weight)")
    samples = os.path.join(tmp, "nan.png")
    expect_refused(exe, ["sample", "--checkpoint", nonfinite, "--out", samples], nonfinite,
                   "holds non-finite weights (/G/params/main.3.weight); refusing to sample")
    check(not os.path.exists(samples), "sample wrote images from non-finite weights")

    # A valid file whose embedded config does not parse (its digest updated, so only the config is wrong).
    bad_config = os.path.join(tmp, "bad_config.h5")
    shutil.copy(good, bad_config)
    with h5py.File(bad_config, "r+") as f:
        text = f["meta"].attrs["config"].replace("  nz: 8\n", "  nz_typo: 8\n")
        f["meta"].attrs["config"] = text
        f["meta"].attrs.modify("config_digest", np.uint64(fnv1a64(text)))
    reseal_checkpoint(bad_config)
    expect_refused(exe, ["info", bad_config], bad_config, "holds a config that does not parse")

    r = run(exe, "sample", "--checkpoint", good, "--n", "4", "--out", os.path.join(tmp, "good.png"))
    check(r.returncode == 0, f"sample from the good checkpoint: {r.stderr}")


def case_kill_at_each_checkpoint_fault_point(exe, src, tmp):
    """SIGKILL during the second checkpoint (step 4): the step-2 one is intact, a ckpt_*.h5 is never bad, and a
    leftover .tmp is refused unless the kill came after its fsync."""
    for point in KILL_POINTS:
        out = os.path.join(tmp, point)
        env = dict(os.environ, GANTRAIN_TEST_KILL=f"{point}:2")
        r = train_tiny(exe, src, out, env=env)
        check(r.returncode == -signal.SIGKILL, f"{point}: exit {r.returncode}, expected SIGKILL; {r.stderr}")
        names = sorted(os.listdir(ckpt_dir(out)))
        want = {"ckpt_renamed": ["ckpt_00000002.h5", "ckpt_00000004.h5"]}.get(
            point, ["ckpt_00000002.h5", "ckpt_00000004.h5.tmp"])
        check(names == want, f"{point}: checkpoints {names}, expected {want}")
        for name in names:
            path = os.path.join(ckpt_dir(out), name)
            r = run(exe, "info", path)
            complete = not name.endswith(".tmp") or point == "ckpt_synced"
            if complete:
                check(r.returncode == 0 and "verdict: ok" in r.stdout, f"{point}: info {name}: {r.stdout} {r.stderr}")
            else:
                check(r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and path in r.stderr,
                      f"{point}: info on the partial {name}: exit {r.returncode}, {r.stderr!r}")
        print(f"{point}: {names} ok")


def case_file_size_limit_names_the_checkpoint(exe, src, tmp):
    """A write over RLIMIT_FSIZE (SIGXFSZ ignored, so write() fails with EFBIG) is a one-line error naming the file."""
    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (200 * 1024, 200 * 1024))  # a tiny checkpoint is ~300 KiB
    r = train_tiny(exe, src, tmp, preexec_fn=limit)
    first = os.path.join(ckpt_dir(tmp), "ckpt_00000002.h5")
    check(r.returncode == 1, f"exit {r.returncode}, expected 1; {r.stderr}")
    lines = r.stderr.strip().splitlines()
    check(any(f"cannot write checkpoint {first}: File too large" in line for line in lines),
          f"no clear message naming {first}: {r.stderr!r}")
    check(os.listdir(ckpt_dir(tmp)) == [], f"left behind: {os.listdir(ckpt_dir(tmp))}")


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--exe", required=True)
    ap.add_argument("--source", required=True)
    ap.add_argument("--case", required=True)
    args = ap.parse_args()
    fn = globals().get(f"case_{args.case}")
    if fn is None:
        print(f"unknown case {args.case}")
        return 2
    tmp = tempfile.mkdtemp(prefix="gt_e2e_ckpt_")
    try:
        rc = fn(os.path.abspath(args.exe), os.path.abspath(args.source), tmp)
        return rc if isinstance(rc, int) else 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
