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


def command(mpirun, np, *cmd):
    """mpirun -np NP CMD..., ranks unbound (tests share the cores) and allowed to outnumber them."""
    return [mpirun, "--oversubscribe", "--bind-to", "none", "-np", str(np), *cmd]


def mpmd(mpirun, *apps):
    """One job of several programs: apps are (np, [cmd...]) pairs, joined with ':' as mpirun wants."""
    out = [mpirun, "--oversubscribe", "--bind-to", "none"]
    for i, (np, cmd) in enumerate(apps):
        if i:
            out.append(":")
        out += ["-np", str(np), *cmd]
    return out


def environment(**extra):
    """The process environment with ENV (and extra) on top."""
    return dict(os.environ, **ENV, **extra)
