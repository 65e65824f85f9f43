#!/usr/bin/python3
"""slurm/cpu.sbatch on a one-node Slurm cluster started on this machine (munged, slurmctld, slurmd as root, in a
temporary directory, on free ports): a 2-task job that finishes, and a job stopped by USR1 that is requeued, resumes
and ends bit-identical to the same run uninterrupted."""
import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "common"))
from gt_test import SKIP, check, skip  # noqa: E402  (tests/common/gt_test.py)

PREFIX = "gantrain-slurm-"  # temporary cluster directories: /tmp/gantrain-slurm-XXXX
# The long run of the requeue case: 2 ranks, 1 thread each, about 20 steps/s on the 2-core test VM.
LONG = ["train.max_steps=600", "train.epochs=1000", "train.batch_size=32", "model.g_width=16", "model.d_width=16",
        "log.every_steps=10", "log.sample_every_steps=0", "checkpoint.every_steps=100"]
SIGNAL_AFTER_STEP = 150
# A requeued job may start again once its credential has expired: 120 s by default, 10 s on this test cluster.
CRED_EXPIRE_S = 10


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def cluster_processes():
    """(pid, cluster directory) of every process of a test cluster: the daemons, slurmstepd and the jobs' processes
    all have SLURM_CONF=<cluster dir>/slurm.conf in their environment."""
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = f.read().split(b"\0")
        except OSError:
            continue
        conf = next((e[len(b"SLURM_CONF="):].decode(errors="replace") for e in env if e.startswith(b"SLURM_CONF=")), "")
        if os.path.basename(os.path.dirname(conf)).startswith(PREFIX):
            out.append((int(pid), os.path.dirname(conf)))
    return out


def kill(pid, why):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        log(f"killing {pid} ({why}): {cmd[:150]}")
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass


def kill_stale_clusters():
    """Processes of an earlier run of this test that died before tearing down: a cluster is stale when the test
    process that owns it (owner.pid in its directory) is gone."""
    for pid, cluster_dir in cluster_processes():
        try:
            with open(os.path.join(cluster_dir, "owner.pid")) as f:
                os.kill(int(f.read()), 0)
            continue  # another test's cluster, alive
        except (OSError, ValueError):
            kill(pid, f"left by a stale test cluster in {cluster_dir}")


class Cluster:
    """munged, slurmctld and slurmd in the foreground as our children, everything under tmp."""

    def __init__(self, tmp, ncpus):
        self.tmp = tmp
        self.procs = []
        self.conf = os.path.join(tmp, "slurm.conf")
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_", "SRUN_"))}
        self.env["SLURM_CONF"] = self.conf
        self.host = socket.gethostname().split(".")[0]
        self.ncpus = ncpus

    def start(self):
        t = self.tmp
        os.chmod(t, 0o755)  # munged wants the socket's directories searchable by all
        for d in ("munge", "munge_run", "state", "spool", "log", "tmpfs"):
            os.makedirs(os.path.join(t, d))
        os.chmod(os.path.join(t, "munge"), 0o700)
        with open(os.path.join(t, "owner.pid"), "w") as f:
            f.write(str(os.getpid()))
        key = os.path.join(t, "munge", "munge.key")
        with open(key, "wb") as f:
            f.write(os.urandom(1024))
        os.chmod(key, 0o600)
        sock = os.path.join(t, "munge_run", "munge.sock")
        self.daemon(["munged", "-F", f"--socket={sock}", f"--key-file={key}", f"--seed-file={t}/munge/seed",
                     f"--pid-file={t}/munge_run/munged.pid", f"--log-file={t}/log/munged.log"], "munged")
        self.wait_for(lambda: os.path.exists(sock), 20, "munged's socket")
        with open(self.conf, "w") as f:
            f.write(f"""# One-node test cluster of tests/slurm/test_slurm.py
ClusterName=gttest
SlurmctldHost={self.host}
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={sock},cred_expire={CRED_EXPIRE_S}
StateSaveLocation={t}/state
SlurmdSpoolDir={t}/spool
SlurmctldPidFile={t}/slurmctld.pid
SlurmdPidFile={t}/slurmd.pid
SlurmctldLogFile={t}/log/slurmctld.log
SlurmdLogFile={t}/log/slurmd.log
# srun --mpi=pmix makes spmix_appdir_UID_JOB.STEP here: one left in /tmp by a killed job breaks the job of the
# same id in the next test cluster.
TmpFS={t}/tmpfs
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
ReturnToService=2
JobRequeue=1
MinJobAge=600
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc={t}/log/jobcomp.txt
NodeName={self.host} CPUs={self.ncpus} State=UNKNOWN
PartitionName=test Nodes={self.host} Default=YES MaxTime=INFINITE State=UP
""")
        self.daemon(["slurmctld", "-D", "-f", self.conf], "slurmctld")
        self.daemon(["slurmd", "-D", "-f", self.conf], "slurmd")
        self.wait_for(lambda: self.slurm("sinfo", "-h", "-o", "%t", check_rc=False).strip() == "idle", 60,
                      "the node to be idle in sinfo")

    def daemon(self, cmd, name):
        out = open(os.path.join(self.tmp, "log", f"{name}.out"), "w")
        self.procs.append((name, subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=self.env)))

    def stop(self):
        if not self.procs:
            return
        subprocess.run(["scancel", "--full", "--user=root"], env=self.env, capture_output=True, timeout=30)
        t0 = time.time()  # let cancelled jobs end while slurmd still runs
        while time.time() - t0 < 20 and self.slurm("squeue", "-h", check_rc=False).strip():
            time.sleep(0.5)
        for name, p in reversed(self.procs):  # slurmd, slurmctld, munged
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        self.procs = []
        t0 = time.time()  # slurmstepd and job processes end on their own shortly after; the rest are killed
        while time.time() - t0 < 15 and any(d == self.tmp for _, d in cluster_processes()):
            time.sleep(0.5)
        for pid, d in cluster_processes():
            if d == self.tmp:
                kill(pid, "still running after the cluster stopped")

    def slurm(self, *cmd, check_rc=True, cwd=None, extra_env=None, stderr=False):
        env = dict(self.env, **(extra_env or {}))
        r = subprocess.run(list(cmd), capture_output=True, text=True, env=env, cwd=cwd, timeout=60)
        if check_rc:
            check(r.returncode == 0, f"{' '.join(cmd)} failed ({r.returncode}): {r.stdout}{r.stderr}")
        return r.stdout + (r.stderr if stderr else "")

    def wait_for(self, cond, timeout, what):
        t0 = time.time()
        while not cond():
            for name, p in self.procs:
                check(p.poll() is None, f"{name} exited with {p.returncode}: see {self.tmp}/log/{name}.*\n" +
                      tail(os.path.join(self.tmp, "log", f"{name}.out")))
            check(time.time() - t0 < timeout, f"timed out after {timeout} s waiting for {what}")
            time.sleep(0.5)

    def job(self, jid):
        """scontrol's fields of a job (kept MinJobAge = 600 s after it ends), {} once gone."""
        out = self.slurm("scontrol", "-o", "show", "job", str(jid), check_rc=False)
        return dict(re.findall(r"(\w+)=(\S*)", out))


def tail(path, n=40):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return f"({path} missing)"


class Jobs:
    """Submits slurm/cpu.sbatch like a user, from the checkout, with the test's binary and output directory."""

    def __init__(self, cluster, args, tmp, launcher):
        self.c, self.src, self.exe, self.tmp, self.launcher = cluster, args.source, args.exe, tmp, launcher
        self.runs = os.path.join(tmp, "runs")
        os.makedirs(self.runs)

    def submit(self, name, *overrides, sbatch_options=()):
        env = {"GANTRAIN_ROOT": self.src, "GANTRAIN": self.exe, "GANTRAIN_CONFIG": "config/tiny.yaml",
               "GANTRAIN_OUT_DIR": self.runs, "GANTRAIN_LAUNCHER": self.launcher,
               "OMPI_MCA_btl_vader_single_copy_mechanism": "none"}
        out = self.c.slurm("sbatch", "--parsable", "-J", name, "-o", self.output_pattern(), *sbatch_options,
                           os.path.join(self.src, "slurm/cpu.sbatch"), *overrides, cwd=self.src, extra_env=env)
        jid = out.strip().split(";")[0]
        log(f"submitted job {jid} ({name}, {self.launcher}): {' '.join(overrides)}")
        return jid

    def output_pattern(self):
        return os.path.join(self.tmp, "slurm-%j.out")

    def output(self, jid):
        return tail(os.path.join(self.tmp, f"slurm-{jid}.out"), 10**6)

    def wait_done(self, jid, timeout):
        """Waits until the job has ended for good (not pending again after a requeue); returns scontrol's fields."""
        done = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE")
        self.c.wait_for(lambda: self.c.job(jid).get("JobState") in done, timeout,
                        f"job {jid} to end; its output so far:\n{self.output(jid)[-4000:]}")
        return self.c.job(jid)

    def run_dir(self, name):
        return os.path.join(self.runs, name)

    def checkpoint(self, name, step):
        return os.path.join(self.runs, name, "checkpoints", f"ckpt_{step:08d}.h5")

    def last_metrics_step(self, name):
        lines = tail(os.path.join(self.run_dir(name), "metrics.jsonl"), 2).strip().splitlines()
        m = re.search(r'"step":\s*(\d+)', lines[-1]) if lines else None
        return int(m.group(1)) if m else 0


def check_finished(jobs, jid, fields, name, step):
    out = jobs.output(jid)
    check(fields.get("JobState") == "COMPLETED" and fields.get("ExitCode") == "0:0",
          f"job {jid} ended {fields.get('JobState')} with exit code {fields.get('ExitCode')}; output:\n{out[-4000:]}")
    check("training finished (exit code 0)" in out, f"job {jid}'s output does not say training finished:\n{out[-4000:]}")
    check(os.path.isfile(jobs.checkpoint(name, step)), f"no final checkpoint {jobs.checkpoint(name, step)}")


def case_batch_2tasks(jobs):
    """(a) slurm/cpu.sbatch with 2 tasks on tiny: completes, exit 0, final checkpoint in runs/NAME."""
    for launcher in ([jobs.launcher, "mpirun"] if jobs.launcher != "mpirun" else ["mpirun"]):
        jobs.launcher = launcher
        name = f"batch2_{launcher}"
        t0 = time.time()
        jid = jobs.submit(name, "train.max_steps=8")
        fields = jobs.wait_done(jid, 120)
        check_finished(jobs, jid, fields, name, 8)
        check("2 tasks" in jobs.output(jid) and "ranks: 2" in jobs.output(jid), "the job did not run 2 ranks")
        log(f"job {jid} ({launcher}) completed in {time.time() - t0:.1f} s with ckpt_00000008.h5")


def load_nets(path):
    import h5py
    out = {}
    with h5py.File(path, "r") as f:
        for net in ("G", "D"):
            f[net].visititems(lambda n, o: out.__setitem__(f"{net}/{n}", o[()]) if isinstance(o, h5py.Dataset) else None)
    return out


def case_requeue_resume(jobs):
    """(b) USR1 to the batch shell mid-run: the ranks stop with a checkpoint (exit 3), the script requeues the job,
    the requeued job resumes in the same run directory and finishes; its final G/ and D/ equal, bit for bit, those
    of the same run uninterrupted."""
    import numpy as np
    name, ref = "requeued", "uninterrupted"
    t0 = time.time()
    jid = jobs.submit(name, *LONG)
    jobs.c.wait_for(lambda: jobs.last_metrics_step(name) >= SIGNAL_AFTER_STEP, 180,
                    f"step {SIGNAL_AFTER_STEP} in {name}/metrics.jsonl; output:\n" + jobs.output(jid)[-3000:])
    jobs.c.slurm("scancel", "--signal=USR1", "--batch", jid)
    log(f"scancel --signal=USR1 --batch {jid} after step {jobs.last_metrics_step(name)} ({time.time() - t0:.1f} s)")

    def requeued():
        f = jobs.c.job(jid)
        return f.get("Restarts") == "1" or f.get("JobState") in ("FAILED", "COMPLETED", "CANCELLED")
    jobs.c.wait_for(requeued, 120, f"job {jid} to be requeued")
    out = jobs.output(jid)
    fields = jobs.c.job(jid)
    check(fields.get("Restarts") == "1", f"job {jid} was not requeued ({fields.get('JobState')}):\n{out[-4000:]}")
    m = re.search(r"stopping after step (\d+) with a checkpoint", out)
    check(m and "requeueing job" in out, f"the first run did not stop with a checkpoint and requeue:\n{out[-4000:]}")
    stopped = int(m.group(1))
    check(os.path.isfile(jobs.checkpoint(name, stopped)), f"no checkpoint at the stop, {jobs.checkpoint(name, stopped)}")
    log(f"stopped after step {stopped} with {os.path.basename(jobs.checkpoint(name, stopped))}, exit 3, requeued "
        f"(Restarts=1, {fields.get('JobState')}, eligible {fields.get('EligibleTime')})")

    # The same run without interruption, while the requeued job waits to be eligible again.
    rid = jobs.submit(ref, *LONG)
    check_finished(jobs, rid, jobs.wait_done(rid, 300), ref, 600)
    log(f"uninterrupted job {rid} completed ({time.time() - t0:.1f} s)")

    fields = jobs.wait_done(jid, 300)
    out = jobs.output(jid)
    log(f"job {jid} ended {fields.get('JobState')}, exit code {fields.get('ExitCode')}, Restarts={fields.get('Restarts')}"
        f" ({time.time() - t0:.1f} s)")
    check("restart 1" in out, f"the requeued job's output has no 'restart 1' (SLURM_RESTART_COUNT):\n{out[-3000:]}")
    after = out[out.index("restart 1"):]
    elsewhere = [d for d in os.listdir(jobs.runs) if d.startswith(name + ".")]
    check(not elsewhere, f"the requeued job did not resume: it started a new run in {', '.join(elsewhere)} "
          f"(gantrain without checkpoint.resume auto?); its output:\n{after[:3000]}")
    train_log = tail(os.path.join(jobs.run_dir(name), "train.log"), 10**6)
    check(re.search(r"resum", after, re.I) and re.search(r"resum", train_log, re.I),
          f"neither the requeued job's output nor train.log mentions resuming:\n{after[:3000]}")
    check_finished(jobs, jid, fields, name, 600)

    a, b = load_nets(jobs.checkpoint(name, 600)), load_nets(jobs.checkpoint(ref, 600))
    check(sorted(a) == sorted(b), f"the checkpoints hold different tensors: {sorted(set(a) ^ set(b))}")
    differ = [k for k in sorted(a) if not np.array_equal(a[k], b[k])]
    check(not differ, f"resumed vs uninterrupted: {len(differ)} of {len(a)} tensors differ, e.g. {differ[:5]}")
    log(f"the resumed run's final G/ and D/ ({len(a)} tensors) equal the uninterrupted run's bit for bit")

    # The same command once more: the run is finished, so it says so and exits 0 without training.
    again = jobs.submit(name, *LONG)
    fields = jobs.wait_done(again, 120)
    out = jobs.output(again)
    check(fields.get("JobState") == "COMPLETED" and re.search(r"is finished", out),
          f"resubmitting the finished run: {fields.get('JobState')}, output:\n{out[-3000:]}")
    check(os.path.isfile(jobs.checkpoint(name, 600)) and not os.path.exists(jobs.run_dir(name + ".1")),
          "resubmitting the finished run wrote a new run")
    log(f"resubmitted finished run: job {again} completed without training ({time.time() - t0:.1f} s in all)")


def case_time_limit_signal(jobs):
    """(c) The script's own stop path: a 2-minute job with --signal=B:USR1@110 gets USR1 from Slurm 10-40 s after it
    starts (slurmctld checks time limits every 30 s or so), stops with a checkpoint and is requeued."""
    name = "time_limit"
    t0 = time.time()
    jid = jobs.submit(name, *[o for o in LONG if not o.startswith("train.max_steps")], "train.max_steps=100000",
                      sbatch_options=("--time=2", "--signal=B:USR1@110"))

    def requeued_or_ended():
        f = jobs.c.job(jid)
        return f.get("Restarts") == "1" or f.get("JobState") not in ("PENDING", "RUNNING")
    jobs.c.wait_for(requeued_or_ended, 150, f"job {jid} to be signalled and requeued")
    # Slurm can change the job's state before the batch script's last lines reach the output file: give
    # them up to 30 s (a job that was never signalled still fails the check below).
    deadline = time.time() + 30
    while time.time() < deadline and "requeueing job" not in jobs.output(jid):
        time.sleep(0.5)
    out = jobs.output(jid)
    m = re.search(r"stopping after step (\d+) with a checkpoint", out)
    check(jobs.c.job(jid).get("Restarts") == "1" and "USR1 received" in out and m and "requeueing job" in out,
          f"job {jid} was not stopped by the time-limit signal and requeued:\n{out[-4000:]}")
    check(os.path.isfile(jobs.checkpoint(name, int(m.group(1)))), "no checkpoint at the stop")
    log(f"job {jid}: USR1 from --signal=B:USR1@110, stopped after step {m.group(1)} with a checkpoint, requeued "
        f"({time.time() - t0:.1f} s)")
    jobs.c.slurm("scancel", jid)


CASES = {"batch_2tasks": case_batch_2tasks, "requeue_resume": case_requeue_resume,
         "time_limit_signal": case_time_limit_signal}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--exe", required=True)
    ap.add_argument("--source", required=True)
    ap.add_argument("--case", required=True, choices=sorted(CASES))
    ap.add_argument("--keep", action="store_true", help="keep the cluster's directory (logs, runs) afterwards")
    args = ap.parse_args()
    args.exe, args.source = os.path.abspath(args.exe), os.path.abspath(args.source)

    if os.geteuid() != 0:
        print("skip: the test cluster's slurmd and munged run as root; run as root")
        return SKIP
    missing = [t for t in ("munged", "slurmctld", "slurmd", "sbatch", "scontrol", "srun") if not shutil.which(t)]
    if missing:
        return skip(f"{', '.join(missing)} (Debian packages slurm-wlm munge; bash scripts/install_deps.sh)")
    try:
        import h5py  # noqa: F401
        import numpy  # noqa: F401
    except ImportError as e:
        return skip(f"{e.name} for /usr/bin/python3 (python3-h5py python3-numpy)")

    kill_stale_clusters()
    tmp = tempfile.mkdtemp(prefix=PREFIX)
    cluster = Cluster(tmp, max(2, os.cpu_count() or 1))
    ok = False
    try:
        t0 = time.time()
        cluster.start()
        mpi_list = cluster.slurm("srun", "--mpi=list", check_rc=False, stderr=True)
        launcher = "srun" if re.search(r"\bpmix\b", mpi_list) else "mpirun"
        if launcher == "mpirun":
            log("srun --mpi=list shows no pmix: the jobs launch with mpirun inside the allocation instead")
        log(f"cluster up in {time.time() - t0:.1f} s ({cluster.host}, {cluster.ncpus} CPUs, {tmp})")
        CASES[args.case](Jobs(cluster, args, tmp, launcher))
        ok = True
        log(f"{args.case}: passed in {time.time() - t0:.1f} s")
    finally:
        if not ok:
            for name in ("slurmctld.log", "slurmd.log"):
                print(f"--- last lines of {name}:\n{tail(os.path.join(tmp, 'log', name), 15)}")
        cluster.stop()
        if ok and not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"kept {tmp}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
