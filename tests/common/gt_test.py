"""What every Python test of gantrain shares: check, skip (exit 77, or a failure under the test command), run, and
reading a checkpoint's tensors with h5py."""
import os
import subprocess

SKIP = 77


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def skip(reason):
    """77 (ctest: skipped) with the reason; under scripts/test.sh (GANTRAIN_TEST_REQUIRE_ALL=1), which installs every
    test dependency, a missing one is a failure instead."""
    if os.environ.get("GANTRAIN_TEST_REQUIRE_ALL") == "1":
        raise AssertionError(f"required by the test command, but missing: {reason}")
    print(f"skip: {reason}")
    return SKIP


def run(exe, *args, **kw):
    """exe args... with text output captured (timeout 300 s unless given)."""
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=kw.pop("timeout", 300), **kw)


def checkpoint_tensors(path):
    """Every dataset of a checkpoint (parameters, buffers, optimizer state) by its path, as numpy arrays."""
    import h5py
    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return out


def fnv1a64(text):
    """64-bit FNV-1a of text's UTF-8 bytes, as src/core/hash.h (the digests of /meta's text attributes)."""
    h = 14695981039346656037
    for byte in text.encode():
        h = ((h ^ byte) * 1099511628211) % (1 << 64)
    return h


DIGEST_BLOCK = 512  # src/io/checkpoint.cpp: the user block that holds a format-3 checkpoint's size and digest


def reseal_checkpoint(path):
    """After an edit on purpose (h5py r+), rewrite a format-3 checkpoint's digest block for the file as it now is,
    as gt::reseal_checkpoint does: otherwise any edit makes the checkpoint "corrupt"."""
    import xxhash
    with open(path, "rb") as f:
        data = f.read()
    magic = b"gantrain checkpoint\n"
    if not data.startswith(magic):
        raise AssertionError(f"{path} has no digest block to reseal")
    text = (magic + b"format 3\nbytes %d\nxxh3_128 %s\n" %
            (len(data), xxhash.xxh3_128(data[DIGEST_BLOCK:]).hexdigest().encode()))
    with open(path, "wb") as f:
        f.write(text.ljust(DIGEST_BLOCK, b"\0") + data[DIGEST_BLOCK:])


def script_main(run_case, prefix, mpirun=False, modules=("h5py", "numpy")):
    """The command line every test script shares: --exe, --source, --case NAME (and --mpirun). Checks what the
    cases need (the Python modules, mpirun), then calls run_case(args, tmp) in a fresh temporary folder that is
    removed afterwards. Returns the exit code: 0, or SKIP (77) from skip() or from a case that returned it."""
    import argparse
    import importlib
    import shutil
    import tempfile
    ap = argparse.ArgumentParser()
    ap.add_argument("--exe", required=True)
    ap.add_argument("--source", required=True)
    ap.add_argument("--case", required=True)
    if mpirun:
        ap.add_argument("--mpirun", required=True)
    args = ap.parse_args()
    if mpirun and not shutil.which(args.mpirun):
        return skip(f"{args.mpirun} not found")
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as e:
            return skip(str(e))
    tmp = tempfile.mkdtemp(prefix=f"{prefix}_{args.case}_")
    try:
        rc = run_case(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if rc == SKIP:
        return SKIP
    print("ok")
    return 0
