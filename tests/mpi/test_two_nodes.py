#!/usr/bin/python3
"""Training over two "nodes" that are both this machine: mpirun with a hostfile of two names and an rsh agent
(fake_node_rsh.sh) that starts each name's orted here in its own UTS namespace; gantrain must see two hosts and their
local ranks and train the same model as on one node. Skips (77) where the fake nodes cannot be started."""
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "common"))
sys.path.insert(0, HERE)
import mpirun  # noqa: E402  (tests/common/mpirun.py)
from gt_test import SKIP, check, script_main  # noqa: E402  (tests/common/gt_test.py)
from test_mpi import INVARIANCE_REL, STEPS, Job, bit_identical, load_h5, worst_relative_difference  # noqa: E402

NODES = ("gtnode-a", "gtnode-b")
AGENT = os.path.join(HERE, "fake_node_rsh.sh")


def two_node_command(job, hostfile, per_node, *cmd, extra=()):
    """mpirun over the two fake nodes, per_node ranks on each, MPI between them over TCP on the loopback interface."""
    return [job.mpirun, "--oversubscribe", "--bind-to", "none", *mpirun.sanitizer_args(), "--hostfile", hostfile,
            "--mca", "plm_rsh_agent", AGENT, "--mca", "btl_tcp_if_include", "lo", "--mca", "oob_tcp_if_include", "lo",
            *extra, "--map-by", f"ppr:{per_node}:node", "-np", str(per_node * len(NODES)), *cmd]


def run(cmd, timeout=60):
    t0 = time.time()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=mpirun.environment())
    r.seconds = time.time() - t0
    return r


def rank_lines(stdout):
    return [line.strip() for line in stdout.splitlines() if line.startswith("  rank ")]


def check_banner(stdout, per_node, what):
    """rank 0's list of the ranks: ranks 0..per_node-1 on gtnode-a, the next on gtnode-b, local rank i of per_node."""
    lines = rank_lines(stdout)
    check(len(lines) == per_node * len(NODES), f"{what}: per-rank lines:\n{stdout}")
    for r, line in enumerate(lines):
        host, local = NODES[r // per_node], r % per_node
        check(line.startswith(f"rank {r}: {host} (pid ") and f", local rank {local} of {per_node})" in line,
              f"{what}: rank {r} should be on {host} as local rank {local} of {per_node}: {line!r}")
    print(f"{what}: " + " | ".join(lines))


def case_two_nodes_np2_np4(job):
    hostfile = os.path.join(job.tmp, "hosts")
    with open(hostfile, "w") as f:
        f.write("".join(f"{name} slots=2\n" for name in NODES))
    # Can the fake nodes start here? (a UTS namespace per node: root or user namespaces; mpirun's rsh launcher)
    probe = run(two_node_command(job, hostfile, 1, "uname", "-n"), timeout=30)
    names = sorted(probe.stdout.split())
    if probe.returncode != 0 or names != list(NODES):
        why = (probe.stderr.strip().splitlines() or [f"exit {probe.returncode}, printed {names}"])[0]
        print(f"skip: two fake nodes cannot be started on this machine ({why})")
        return SKIP
    for per_node in (1, 2):
        np = per_node * len(NODES)
        one = job.run(mpirun.command(job.mpirun, np, *job.train_args(f"one_node_np{np}")), env=mpirun.ENV)
        check(one.returncode == 0, f"np {np} on one node failed ({one.returncode}): {one.stdout}\n{one.stderr}")
        check(all(f"local rank {r} of {np})" in one.stdout for r in range(np)), f"np {np} one node:\n{one.stdout}")
        two = run(two_node_command(job, hostfile, per_node, *job.train_args(f"two_nodes_np{np}")))
        check(two.returncode == 0, f"np {np} on two nodes failed ({two.returncode}): {two.stdout}\n{two.stderr}")
        check(two.stderr.strip() == "", f"np {np} on two nodes: stderr not empty: {two.stderr!r}")
        check(f"ranks: {np} (mpi communicator)" in two.stdout, f"np {np} on two nodes: ranks line:\n{two.stdout}")
        check_banner(two.stdout, per_node, f"np {np} on two nodes")
        check(f"step {STEPS:6d}/{STEPS}" in two.stdout, f"np {np} on two nodes: no final step:\n{two.stdout}")
        a, b = load_h5(job.checkpoint(f"one_node_np{np}")), load_h5(job.checkpoint(f"two_nodes_np{np}"))
        same = bit_identical(a, b)
        rel, where = worst_relative_difference(a, b)
        print(f"np {np}: two nodes vs one node: {'bit-identical' if same else f'worst {rel:.3g} ({where})'}; "
              f"{two.seconds:.1f} s")
        # 2 ranks add two terms (a + b = b + a): bit for bit. More ranks may sum in another order where the library
        # chooses its algorithms by topology: within the rank-count invariance bound (mpi.invariance_np1_np2_np4).
        if np == 2:
            check(same, f"np 2 on two nodes is not bit-identical to np 2 on one node (worst {rel:.3g} at {where})")
        check(rel <= INVARIANCE_REL, f"np {np} on two nodes differs from one node by {rel:.3g} at {where}")
    # The fake nodes are nodes to Open MPI too: no shared memory between them, so without TCP the ranks cannot talk.
    r = run(two_node_command(job, hostfile, 1, *job.train_args("shm_only"), extra=("--mca", "btl", "self,vader")))
    check(r.returncode != 0, f"ranks on different fake nodes reached each other through shared memory:\n{r.stdout}")
    print(f"shared memory only across the fake nodes: exit {r.returncode}, as on two machines")


def main():
    return script_main(lambda a, tmp: globals()["case_" + a.case](Job(a, tmp)), "gt_two_nodes", mpirun=True)


if __name__ == "__main__":
    sys.exit(main())
