#!/usr/bin/python3
"""Checks of bench/scaling/perf_model.py and bench_model_layers: the networks' counts against their closed forms, the
model's bucket rule against the bucketer's, the collective formulas, and invariants of the step model.

Usage: test_perf_model.py --layers-exe build/bench/bench_model_layers --source . --tmp DIR
"""
import argparse
import json
import math
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import perf_model as pm  # noqa: E402


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def layers(exe, source, tmp, name, *args):
    out = os.path.join(tmp, name + ".json")
    subprocess.run([exe, "--json", out, *args], check=True, cwd=source, capture_output=True)
    with open(out) as f:
        return json.load(f)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers-exe", required=True)
    ap.add_argument("--source", required=True)
    ap.add_argument("--tmp", required=True)
    a = ap.parse_args()
    os.makedirs(a.tmp, exist_ok=True)
    dc = layers(a.layers_exe, a.source, a.tmp, "dcgan64", "--config", "config/dcgan_celeba64.yaml")
    dc4 = layers(a.layers_exe, a.source, a.tmp, "dcgan64_b4", "--config", "config/dcgan_celeba64.yaml",
                 "dist.bucket_mb=4")
    ph = dc["phases"][0]
    G, D = ph["G"], ph["D"]
    # The reference DCGAN-64: `gantrain info`'s parameter counts, and G's multiply-adds per image in closed form
    # (ConvT 100->1024 at 4x4, three 4x4 stride-2 ConvTs doubling the size and halving the width, ConvT 128->3).
    check(G["params"] == 12658432 and D["params"] == 11036160, f"params {G['params']} {D['params']}")
    # A transposed convolution scatters cout x 4 x 4 from each of its cin x hin x hin inputs.
    g_macs = sum(cin * cout * 16 * hin * hin for cin, cout, hin in
                 [(100, 1024, 1), (1024, 512, 4), (512, 256, 8), (256, 128, 16), (128, 3, 32)])
    check(sum(l["macs"] for l in G["layers"]) == g_macs, f"G macs {sum(l['macs'] for l in G['layers'])} vs {g_macs}")
    check([l["bn_channels"] for l in G["layers"] if l["bn_channels"]] == [1024, 512, 256, 128], "G's batch norms")
    check([l["bn_channels"] for l in D["layers"] if l["bn_channels"]] == [256, 512, 1024], "D's batch norms")
    # Every parameter element belongs to exactly one layer's range.
    for net in (G, D):
        covered = sorted((l["param_begin"], l["param_end"]) for l in net["layers"] if l["param_begin"] >= 0)
        check(covered[0][0] == 0 and covered[-1][1] == net["flat_size"], "layers cover the flat buffer")
        check(all(a[1] <= b[0] for a, b in zip(covered, covered[1:])), "layer ranges overlap")
    # The model re-cuts buckets by the bucketer's rule: the same as the tool's at 4 MiB.
    re4 = pm.with_bucket_mb(dc, 4)
    for n in ("G", "D"):
        check(re4["phases"][0][n]["buckets"] == dc4["phases"][0][n]["buckets"], f"{n}'s 4 MiB buckets differ")
    # Collective formulas.
    check(math.isclose(pm.ring_allreduce(1e9, 8, 0, 1e9), 1.75), "ring bytes term")
    check(math.isclose(pm.ring_allreduce(0, 8, 1e-6, 1e9), 14e-6), "ring latency term")
    check(math.isclose(pm.tree_allreduce(0, 64, 1e-6, 1e9), 12e-6), "tree latency term")
    check(pm.ring_allreduce(1e9, 1, 1, 1) == 0 and pm.Links(1, 1, 1, 1).all_reduce(1e9) == 0, "one rank moves nothing")
    prof = pm.PROFILES["h100_sxm_ndr"]
    links = lambda p: pm.Links(max(1, p // 8), min(p, 8), prof["intra_alpha"], prof["intra_bw"],  # noqa: E731
                               prof["inter_alpha"], prof["inter_bw"], prof["launch"])
    check(links(64).all_reduce(1e8) > links(8).all_reduce(1e8), "more nodes cost more")
    check(links(8).all_reduce(2e7) < links(8).all_reduce(4e7), "more bytes cost more")
    # Step invariants on the reference model.
    comp = pm.gpu_compute(prof, "bf16")
    opt = pm.optimizer_seconds(ph, prof)
    for P in (8, 64, 512):
        for b in (16, 128):
            kw = dict(optimizer_s=opt)
            t_over = pm.step_time(ph, b, comp, links(P), overlap=True, **kw)
            t_none = pm.step_time(ph, b, comp, links(P), overlap=False, **kw)
            t_bf16 = pm.step_time(ph, b, comp, links(P), overlap=True, grad_bytes=2, **kw)
            t_nobn = pm.step_time(ph, b, comp, links(P), overlap=True, sync_bn=False, **kw)
            check(t_over["step_s"] <= t_none["step_s"] + 1e-12, f"overlap slower than none at {P} x {b}")
            check(math.isclose(t_none["exposed_comm_s"], t_none["allreduce_total_s"]), "no overlap exposes all")
            check(t_bf16["exposed_comm_s"] <= t_over["exposed_comm_s"], "bf16 exposes more")
            check(t_nobn["sync_bn_s"] == 0 and t_over["sync_bn_s"] > 0, "sync BN cost")
            check(t_over["bn_reductions"] == 2 * 4 + 2 * 3 * 3 + 3 * 3 + 4, "39 BN reductions per step")
    one = pm.step_time(ph, 128, comp, pm.Links(1, 1, 0, 1), optimizer_s=opt)
    check(one["exposed_comm_s"] == 0 and one["sync_bn_s"] == 0 and one["step_s"] == one["compute_s"], "one GPU")
    # Weak efficiency rises with the batch per GPU.
    rows = pm.predict_dcgan(dc, prof, "bf16", [64], [1024, 2048, 4096, 8192], 4, True)
    effs = [r["weak_efficiency_overlap"] for r in rows]
    check(effs == sorted(effs), f"efficiency not rising with the batch: {effs}")
    # Calibration from a single-GPU throughput measurement: rows made by a known compute model are fitted back
    # to it; a file of another model is refused.
    truth = dict(prof, achieved=0.3, batch_half=12)
    tcomp = pm.gpu_compute(truth, "bf16")
    topt = pm.optimizer_seconds(ph, truth)
    fake = {"config": {"model": {"resolution": 64, "nz": 100}}, "device": {"name": "synthetic"},
            "rows": [{"batch": b, "precision": "bf16",
                      "median_ms": pm.step_time(ph, b, tcomp, pm.Links(1, 1, 0, 1), optimizer_s=topt)["step_s"] * 1e3}
                     for b in (16, 64, 256, 1024)]}
    fitted, table = pm.calibrate(prof, "bf16", dc, fake)
    check((fitted["achieved"], fitted["batch_half"]) == (0.3, 12), f"calibration found {fitted['achieved']}, "
          f"{fitted['batch_half']}")
    check(all(math.isclose(r["model_ms"], r["measured_ms"], rel_tol=1e-9) for r in table), "calibrated model")
    fake["config"]["model"]["resolution"] = 32
    try:
        pm.calibrate(prof, "bf16", dc, fake)
        check(False, "a throughput file of another model was accepted")
    except SystemExit as e:
        check("not the layers file's" in str(e), str(e))
    print(f"perf_model checks passed: 64-GPU weak efficiencies {[round(e, 3) for e in effs]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
