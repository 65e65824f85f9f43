"""How the Python tests start MPI jobs: mpirun's arguments and environment for a shared 2-core container, in one place."""
import os

# Root in containers needs Open MPI's consent; shared-memory transfers without ptrace-based single copy
# (which containers often forbid); one OpenMP and OpenBLAS thread per rank unless the test says otherwise.
ENV = {
    "OMPI_ALLOW_RUN_AS_ROOT": "1",
    "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
    "OMPI_MCA_btl_vader_single_copy_mechanism": "none",
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
}


def sanitizer_args():
    """In the sanitized build (GANTRAIN_SANITIZED=1), ranks skip LeakSanitizer's check at exit: its tracer,
    which stops every thread of the process to scan them, crashes there ("Tracer caught signal 11" while
    processing the main thread of a rank started with --bind-to none; seen on 2026-12-06, Debian 12's
    gcc 12 libsanitizer) and the rank exits 1. AddressSanitizer and UBSan stay on in the ranks, and the
    same code's leaks are checked in the single-process tests (docs/testing.md)."""
    if os.environ.get("GANTRAIN_SANITIZED") != "1":
        return []
    options = ":".join(o for o in (os.environ.get("ASAN_OPTIONS", ""), "detect_leaks=0") if o)
    return ["-x", f"ASAN_OPTIONS={options}"]


def command(mpirun, np, *cmd):
    """mpirun -np NP CMD..., ranks unbound (tests share the cores) and allowed to outnumber them."""
    return [mpirun, "--oversubscribe", "--bind-to", "none", *sanitizer_args(), "-np", str(np), *cmd]


def mpmd(mpirun, *apps):
    """One job of several programs: apps are (np, [cmd...]) pairs, joined with ':' as mpirun wants."""
    out = [mpirun, "--oversubscribe", "--bind-to", "none", *sanitizer_args()]
    for i, (np, cmd) in enumerate(apps):
        if i:
            out.append(":")
        out += ["-np", str(np), *cmd]
    return out


def environment(**extra):
    """The process environment with ENV (and extra) on top."""
    return dict(os.environ, **ENV, **extra)
