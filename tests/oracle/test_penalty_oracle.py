#!/usr/bin/python3
"""The gradient penalty's exact gradient (WGAN-GP's double backward) against PyTorch autograd and against
central finite differences, on the same critic weights and inputs.

`gt_oracle_tool penalty` computes P = lambda * mean_i (||grad_x D(x_i)|| - 1)^2 with gantrain's CPU layers:
one forward, a backward from ones that keeps every layer's output gradient, and the double backward
(Net::backward_of_input_grad) for dP/dtheta. The references:
  autograd  torch.autograd.grad(D(x).sum(), x, create_graph=True), then P.backward(): in float64 (the
            reference) and in float32 (the noise floor of single precision on this very computation).
  finite differences  (P(theta + h e_k) - P(theta - h e_k)) / 2h of torch's float64 P for a sample of
            parameter entries k (h = 1e-6 times the parameter's scale; float64 makes the difference
            exact to ~1e-9 relative, far inside the float32 floor, and the LeakyReLU kinks are not crossed
            at that step except by a measure-zero chance).

Cases (one ctest test each, see tests/oracle/CMakeLists.txt):
  layer_norm   the DCGAN critic with LayerNorm2d (torch.nn.GroupNorm(1, C)), affines drawn away from 1 and 0
  no_norm      the DCGAN critic without normalization (its hidden convolutions carry biases)

Tolerance, per tensor (test_objectives_oracle.py's floor_bound): our error against float64 autograd within
8 times float32 torch's own error plus 1e-6 of the tensor's largest value; each finite-difference entry
within the same bound of its tensor.

Usage: /usr/bin/python3 test_penalty_oracle.py --tool build/tests/oracle/gt_oracle_tool CASE...
Exit status: 0 pass, 1 mismatch, 77 skipped (torch/h5py missing; a failure when GANTRAIN_TEST_REQUIRE_ALL=1).
"""
import copy
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_dcgan_oracle import (case_main, Report, make_nets, read_group, run_tool, write_meta,  # noqa: E402
                               write_tensors)
import h5py  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from test_objectives_oracle import compare_to_floor, floor_bound  # noqa: E402

FD_ENTRIES = 24  # finite-difference entries per case, spread over D's parameters

MODEL = dict(resolution=32, channels=3, nz=16, g_width=8, d_width=8)
CASES = {
    "layer_norm": dict(d_norm="layer", batch=6, gp_weight=10.0, seed=21),
    "no_norm": dict(d_norm="none", batch=5, gp_weight=10.0, seed=22),
}


def penalty(netD, x, weight):
    """lambda * mean (||grad_x D(x)|| - 1)^2 with the graph kept (create_graph=True), and grad_x."""
    x = x.clone().requires_grad_(True)
    scores = netD(x)
    (g,) = torch.autograd.grad(scores.sum(), x, create_graph=True)
    norms = g.flatten(1).norm(dim=1)
    return weight * ((norms - 1) ** 2).mean(), g


def autograd_reference(netD, x, weight, dtype):
    d = copy.deepcopy(netD).to(dtype)
    d.train()
    p, g = penalty(d, x.to(dtype), weight)
    d.zero_grad()
    p.backward()
    grads = {name: q.grad.detach().clone() for name, q in d.named_parameters()}
    return p.item(), g.detach(), grads


def finite_differences(netD, x, weight, entries, gen):
    """Central differences of the float64 penalty for `entries` parameter entries: [(name, flat index, value)]."""
    d = copy.deepcopy(netD).to(torch.float64)
    d.train()
    x64 = x.to(torch.float64)
    params = dict(d.named_parameters())
    names = sorted(params)
    out = []
    for k in range(entries):
        name = names[k % len(names)]
        q = params[name]
        i = int(torch.randint(q.numel(), (1,), generator=gen))
        scale = max(float(q.detach().abs().max()), 1e-2)
        h = 1e-6 * scale
        with torch.no_grad():
            old = q.view(-1)[i].item()
            q.view(-1)[i] = old + h
        plus = penalty(d, x64, weight)[0].item()
        with torch.no_grad():
            q.view(-1)[i] = old - h
        minus = penalty(d, x64, weight)[0].item()
        with torch.no_grad():
            q.view(-1)[i] = old
        out.append((name, i, (plus - minus) / (2 * h)))
    return out


def run_case(tool, name, workdir):
    c = CASES[name]
    m = MODEL
    _, netD, gen = make_nets(m, c["seed"], d_norm=c["d_norm"])
    # Inputs like interpolates: in [-1, 1], each sample its own.
    x = torch.rand((c["batch"], m["channels"], m["resolution"], m["resolution"]), generator=gen) * 2 - 1

    in_path, out_path = os.path.join(workdir, f"{name}_in.h5"), os.path.join(workdir, f"{name}_out.h5")
    with h5py.File(in_path, "w") as f:
        write_meta(f, resolution=m["resolution"], nz=m["nz"], g_width=m["g_width"], d_width=m["d_width"],
                   channels=m["channels"])
        write_tensors(f, "D/params", netD.state_dict())
        write_tensors(f, "inputs", {"x": x})
        f["meta"].attrs["config"] = (f"# written by tests/oracle/test_penalty_oracle.py\nmodel:\n  d_norm: {c['d_norm']}\n"
                                     f"loss:\n  objective: wgan\n  gp_weight: {c['gp_weight']!r}\n")
    print(run_tool(tool, ["penalty", in_path, out_path]).strip())

    p64, g64, grads64 = autograd_reference(netD, x, c["gp_weight"], torch.float64)
    p32, g32, grads32 = autograd_reference(netD, x, c["gp_weight"], torch.float32)
    report = Report(f"{name}: {c}")
    with h5py.File(out_path, "r") as f:
        outputs = read_group(f, "outputs")
        ours = read_group(f, "D/grads")
    compare_to_floor(report, "penalty", outputs["penalty"], np.array([p64]), np.array([p32]))
    compare_to_floor(report, "grad_x", outputs["grad_x"], g64.numpy(), g32.numpy().astype(np.float64))
    for key, ref in grads64.items():
        if key not in ours:
            report.missing(f"D/grads/{key}", "not in our output")
            continue
        compare_to_floor(report, f"autograd D/grads/{key}", ours[key], ref.numpy(), grads32[key].numpy().astype(np.float64))
    # Finite differences of the exact (float64) penalty, entry by entry, each within its tensor's bound.
    for key, i, fd in finite_differences(netD, x, c["gp_weight"], FD_ENTRIES, gen):
        ref64, ref32 = grads64[key].numpy(), grads32[key].numpy().astype(np.float64)
        bound, floor, ref_max = floor_bound(ref64, ref32)
        ours_i = float(np.asarray(ours[key]).reshape(-1)[i])
        err = abs(ours_i - fd)
        report.add(f"finite difference {key}[{i}]", "-", err, abs(fd), err / max(abs(fd), 1e-30), bound,
                   bool(np.isfinite(ours_i)) and err <= bound, f"autograd64 {ref64.reshape(-1)[i]:.6g}")
    # The penalty must be active: gradients far from norm 1 (else a wrong second-order term hides).
    norms = g64.flatten(1).norm(dim=1)
    report.add("gradient norms away from 1", "-", 0.0, float((norms - 1).abs().min()), 0.0, "> 1e-3",
               bool((norms - 1).abs().min() > 1e-3))
    return report


def main():
    return case_main(__doc__, CASES, run_case, "gt_penalty_")


if __name__ == "__main__":
    sys.exit(main())
