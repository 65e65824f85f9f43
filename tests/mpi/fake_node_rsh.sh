#!/bin/sh
# Open MPI's rsh agent for "nodes" that are all this machine: runs the remote command here, in its own UTS namespace named after the node.
# Usage (tests/mpi/test_two_nodes.py):
#   printf 'gtnode-a slots=2\ngtnode-b slots=2\n' > hosts
#   mpirun --hostfile hosts --mca plm_rsh_agent tests/mpi/fake_node_rsh.sh \
#          --mca btl_tcp_if_include lo --mca oob_tcp_if_include lo --map-by ppr:1:node -np 2 ./build/gantrain train ...
# mpirun finds neither name local, so it starts one orted per name through this agent (instead of ssh), and the ranks
# of each orted are one node to Open MPI (local ranks, shared memory) and, with the host name set in the namespace,
# to gantrain. Between the "nodes" MPI goes over TCP on the loopback interface. Needs unshare(1) and either root or
# unprivileged user namespaces; otherwise it prints why and exits 1 (mpirun then fails to start the job).
host=$1
shift
for ns in "--uts" "--user --map-root-user --uts"; do
  # shellcheck disable=SC2086  # $ns is a list of options
  if unshare $ns /bin/sh -c "hostname '$host'" 2>/dev/null; then
    # The rest of the arguments are the command line ssh would give the remote shell, e.g. "PATH=/usr/bin:$PATH ;
    # export PATH ; ... /usr/bin/orted -mca ...", words and all.
    exec unshare $ns /bin/sh -c "hostname '$host' || exit 1; $*"
  fi
done
echo "fake_node_rsh.sh: cannot start a UTS namespace for $host (unshare --uts, also in a user namespace, failed)" >&2
exit 1
