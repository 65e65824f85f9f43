#!/usr/bin/env python3
"""Smoke test of torch_side_by_side.py on the CPU: runs it with --allow-cpu on a tiny model and checks its JSON.

Usage: check_side_by_side.py --bench PATH/bench_throughput --json OUT.json [--gp 10]
(--gp: the WGAN-GP step on both sides: no FLOP count, torch.compile skipped.)
Exits 77 (ctest: skipped) when this python has no torch.
"""
import argparse
import json
import os
import subprocess
import sys

try:
    import torch
except ImportError as e:
    print(f"SKIP: {sys.executable} has no torch ({e})")
    sys.exit(77)

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bench", required=True)
    ap.add_argument("--json", required=True)
    ap.add_argument("--gp", type=float, default=0)
    args = ap.parse_args()
    if os.path.exists(args.json):
        os.remove(args.json)
    batches = [4, 8]
    cmd = [sys.executable, os.path.join(HERE, "torch_side_by_side.py"), "--allow-cpu", "--device", "cpu",
           "--bench", args.bench, "--batches", ",".join(map(str, batches)), "--res", "32", "--ngf", "16",
           "--ndf", "16", "--steps", "2", "--warmup", "1", "--threads", "1", "--commit", "smoke-test",
           "--json", args.json] + (["--gp", str(args.gp)] if args.gp else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    print(proc.stdout + proc.stderr)
    assert proc.returncode == 0, f"torch_side_by_side.py exited with {proc.returncode}"
    doc = json.load(open(args.json))

    for key in ("date", "device", "commit", "torch_version", "model", "step_flops", "peak_source", "rows"):
        assert doc.get(key) not in (None, ""), f"JSON field {key} missing or empty"
    assert doc["commit"] == "smoke-test", doc["commit"]
    assert doc["device"] == "cpu"
    gp = args.gp > 0
    assert doc["benchmark"].endswith("wgangp_train_step" if gp else "dcgan_train_step"), doc["benchmark"]
    # The hook count here and bench_throughput's layer walk are two implementations of one formula (the
    # WGAN-GP step has no FLOP count: nothing to compare).
    assert doc["flop_counts_agree"] is (None if gp else True), f"FLOP counts: {doc['flop_counts_agree']}"

    rows = {(r["mode"], r["batch"]): r for r in doc["rows"]}
    expected_modes = ["eager_fp32", "eager_tf32", "amp_bf16_cl", "compile_bf16_cl", "gantrain_fp32"]
    assert set(rows) == {(m, b) for m in expected_modes for b in batches}, sorted(rows)
    for b in batches:
        for mode in ("eager_fp32", "eager_tf32", "gantrain_fp32"):
            r = rows[(mode, b)]
            assert "error" not in r, f"{mode} batch {b} failed: {r['error']}"
            assert len(r["ms"]) == 2 and all(t > 0 for t in r["ms"]), r["ms"]
            assert abs(r["images_per_s"] - b / (r["median_ms"] * 1e-3)) < 1e-6 * r["images_per_s"]
            if gp:
                assert r["step_flops"] is None and r["model_tflops"] is None, r
            else:
                assert r["step_flops"] == int(doc["step_flops"][str(b)])
            assert r["mfu"] is None  # no peak is known for a CPU
        assert rows[("amp_bf16_cl", b)]["error"].startswith("skipped"), rows[("amp_bf16_cl", b)]
        if gp:
            want = "unavailable with --gp (torch.compile does not compile a double backward)"
            assert rows[("compile_bf16_cl", b)]["error"] == want, rows[("compile_bf16_cl", b)]
        elif not hasattr(torch, "compile"):
            want = f"unavailable (torch {'.'.join(torch.__version__.split('.')[:2])})"
            assert rows[("compile_bf16_cl", b)]["error"] == want, rows[("compile_bf16_cl", b)]
        # Speeds are relative to the fastest timed PyTorch mode at the batch, which therefore reads 1.
        timed = [rows[(m, b)] for m in ("eager_fp32", "eager_tf32")]
        best = max(timed, key=lambda r: r["images_per_s"])
        assert best["speed_vs_fastest_torch"] == 1.0 and all(r["fastest_torch_mode"] == best["mode"] for r in timed)
        g = rows[("gantrain_fp32", b)]
        assert abs(g["speed_vs_fastest_torch"] - g["images_per_s"] / best["images_per_s"]) < 1e-9
    print(f"check_side_by_side: {args.json} passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
