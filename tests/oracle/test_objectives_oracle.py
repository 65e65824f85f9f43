#!/usr/bin/python3
"""PyTorch oracle for the GAN objectives: one whole step (n_critic critic updates, then the G update) of
each objective through torch and through `gt_oracle_tool gan-step`, on the same weights, batches and noise.

Cases (one ctest test each, see tests/oracle/CMakeLists.txt):
  wgan_clip_ncritic3        WGAN: -D(x) + D(G(z)) for D, -D(G(z)) for G, D's weights clamped to +-0.01
                            after each of 3 critic updates, fresh noise for the G update
  hinge_drift_ncritic2      hinge: relu(1 - D(x)) + relu(1 + D(G(z))), G -D(G(z)), the drift term
                            epsilon * mean(D(x)^2), 2 critic updates, G on the last critic update's fakes
  nonsaturating_drift_ncritic2
                            BCE with logits (the DCGAN objective) with drift, 2 critic updates, fresh G noise
  wgangp_layernorm_ncritic2 WGAN-GP: the Wasserstein terms plus lambda * mean((||grad D(x_hat)|| - 1)^2) at
                            x_hat = e x + (1 - e) G(z) (torch autograd with create_graph=True), the drift
                            term, a layer-norm critic, 2 critic updates
  wgangp_nonorm_lazy3       WGAN-GP with a critic without normalization and lazy regularization: the
                            penalty on critic batches 0 and 2 of 3 (gp_every 2), scaled by 2, fresh G noise
  accumulate4_batchnorm     the DCGAN objective with train.micro_batch 2 (4 micro-batches accumulated per
                            update, K 2) against torch's accumulation loop: batch norm per micro-batch
  accumulate4_nonorm_whole_batch
                            WGAN-GP with drift, G without normalization and a layer-norm critic, 4
                            micro-batches accumulated, against torch's single pass over the whole batch

The interpolation weights e are gantrain's (the tool writes the ones it drew from run.seed), so both sides
interpolate the same way.

The reference loop is the WGAN paper's (and pytorch/examples' DCGAN for n_critic 1): critic iteration k
takes its own real batch and noise; the G update goes through the updated D on fakes of its own noise
(train.g_fresh_noise) or on the last iteration's fakes. SGD with momentum updates both networks: its step is a smooth function of the gradients, so the
parameters after the step measure the objective's gradients (Adam and RMSProp, which normalize a
near-zero gradient to a full step, are covered by test_dcgan_oracle.py's optimizer cases).

Tolerance: torch runs the step twice, in float64 (the reference) and in float32. Per tensor, the error of
ours against float64 must stay within FLOOR_MULTIPLE times float32 torch's own error against float64 (the
noise floor of single precision on this very step), plus ABS_FLOOR times the tensor's largest value for
tensors where torch32 happens to match float64 almost exactly (for the scalars, SCALAR_SIZE_TOL times the
mean |logit| they are computed from).

Usage: /usr/bin/python3 test_objectives_oracle.py --tool build/tests/oracle/gt_oracle_tool CASE...
Exit status: 0 pass, 1 mismatch, 77 skipped (torch/h5py missing; a failure when GANTRAIN_TEST_REQUIRE_ALL=1).
"""
import copy
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_dcgan_oracle import (case_main, Report, compare_exact, make_nets, read_group, run_tool,  # noqa: E402
                               write_meta, write_tensors)
import h5py  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

FLOOR_MULTIPLE = 8.0
ABS_FLOOR = 1e-6
# Scalars (losses and mean D outputs): also 1e-5 of the mean |logit| they are computed from. A critic's
# mean score cancels (WGAN: mean 7e-6 of scores near 1e-4), so float32 torch can land closer to float64
# by luck than the rounding of the scores allows: ours under the sanitizers' -O1 code was 1.9e-10 off
# where float32 torch was 9.5e-12 off. A wrong sign or formula moves these scalars by their own size.
SCALAR_SIZE_TOL = 1e-5

MODEL = dict(resolution=32, channels=1, nz=16, g_width=8, d_width=8, batch=8)
SGD = dict(lr=0.05, momentum=0.5)
CASES = {
    "wgan_clip_ncritic3": dict(objective="wgan", drift=0.0, clip=0.01, n_critic=3, fresh=True, seed=11),
    "hinge_drift_ncritic2": dict(objective="hinge", drift=0.25, clip=0.0, n_critic=2, fresh=False, seed=12),
    "nonsaturating_drift_ncritic2": dict(objective="nonsaturating", drift=0.1, clip=0.0, n_critic=2, fresh=True,
                                         seed=13),
    "wgangp_layernorm_ncritic2": dict(objective="wgan", drift=0.001, clip=0.0, n_critic=2, fresh=False, seed=14,
                                      d_norm="layer", gp=10.0, gp_every=1),
    "wgangp_nonorm_lazy3": dict(objective="wgan", drift=0.0, clip=0.0, n_critic=3, fresh=True, seed=15,
                                d_norm="none", gp=10.0, gp_every=2),
    # The large-batch plan: 4 micro-batches of 2 accumulated. With batch norm (statistics per micro-batch)
    # against torch's accumulation loop; without any (G without norm, a layer-norm critic, the penalty)
    # against torch's one pass over the whole batch: accumulation must change nothing but rounding.
    "accumulate4_batchnorm": dict(objective="nonsaturating", drift=0.0, clip=0.0, n_critic=2, fresh=False, seed=16,
                                  micro=2, torch_micro=2),
    "accumulate4_nonorm_whole_batch": dict(objective="wgan", drift=0.001, clip=0.0, n_critic=2, fresh=False,
                                           seed=17, d_norm="layer", g_norm="none", gp=10.0, gp_every=1, micro=2,
                                           torch_micro=0),
}
RUN_SEED = 7  # run.seed of the tool's config: keys the interpolation weights


def term(objective, role, x, drift):
    """One term of the objective over D's logits x (a mean over the batch), as the papers define it."""
    x = x.reshape(-1)
    if objective == "nonsaturating":
        v = F.binary_cross_entropy_with_logits(x, torch.full_like(x, 0.0 if role == "d_fake" else 1.0))
    elif objective == "wgan":
        v = x.mean() if role == "d_fake" else -x.mean()
    elif role == "d_real":
        v = F.relu(1 - x).mean()
    elif role == "d_fake":
        v = F.relu(1 + x).mean()
    else:
        v = -x.mean()
    if role == "d_real" and drift:
        v = v + drift * (x * x).mean()
    return v


def reported(objective, x):
    return torch.sigmoid(x).mean().item() if objective == "nonsaturating" else x.mean().item()


def gradient_penalty(netD, real, fake, e, weight):
    """WGAN-GP's penalty at x_hat = e x + (1 - e) G(z), with the graph kept for the double backward."""
    e = e.view(-1, 1, 1, 1)
    x_hat = (e * real + (1 - e) * fake.detach()).requires_grad_(True)
    (g,) = torch.autograd.grad(netD(x_hat).sum(), x_hat, create_graph=True)
    return weight * ((g.flatten(1).norm(dim=1) - 1) ** 2).mean()


def reference_step(netG, netD, reals, zs, c, mixes=None, micro=0):
    """The whole step in torch; returns the scalars (D's of the last critic iteration). micro > 0: every
    critic iteration and the G update accumulate gradients over micro-batches of that many rows (torch's
    usual accumulation loop: each term a micro-batch mean times its share, batch norm per micro-batch), and
    the G update makes each micro-batch's fakes again from the last iteration's noise, as gantrain does."""
    optD = torch.optim.SGD(netD.parameters(), lr=SGD["lr"], momentum=SGD["momentum"])
    optG = torch.optim.SGD(netG.parameters(), lr=SGD["lr"], momentum=SGD["momentum"])
    n = reals[0].shape[0]
    m = micro or n
    parts = [slice(j, j + m) for j in range(0, n, m)]
    share = m / n
    penalty_value = 0.0
    for k in range(c["n_critic"]):
        netD.zero_grad()
        loss_real = loss_fake = 0.0
        d_real = d_fake = size_real = size_fake = 0.0
        penalized = c.get("gp", 0) > 0 and k % c["gp_every"] == 0  # lazy: every gp_every-th batch, scaled by it
        if penalized:
            penalty_value = 0.0
        for part in parts:
            out_real = netD(reals[k][part])
            lr_ = term(c["objective"], "d_real", out_real, c["drift"]) * share
            lr_.backward()
            fake = netG(zs[k][part].view(m, -1, 1, 1))
            out_fake = netD(fake.detach())
            lf_ = term(c["objective"], "d_fake", out_fake, c["drift"]) * share
            lf_.backward()
            if penalized:
                p = gradient_penalty(netD, reals[k][part], fake, mixes[k][part], c["gp"]) * share
                (c["gp_every"] * p).backward()
                penalty_value += p.item()
            loss_real += lr_.item()
            loss_fake += lf_.item()
            d_real += reported(c["objective"], out_real.detach()) * share
            d_fake += reported(c["objective"], out_fake.detach()) * share
            size_real += out_real.detach().abs().mean().item() * share
            size_fake += out_fake.detach().abs().mean().item() * share
        optD.step()
        if c["clip"] > 0:
            with torch.no_grad():
                for p in netD.parameters():
                    p.clamp_(-c["clip"], c["clip"])
    netG.zero_grad()
    z_g = zs[c["n_critic"]] if c["fresh"] else zs[c["n_critic"] - 1]
    loss_g = size_g = 0.0
    for part in parts:
        if c["fresh"] or len(parts) > 1:  # else the last critic iteration's fakes, graph and all
            fake = netG(z_g[part].view(m, -1, 1, 1))
        out_g = netD(fake)
        lg_ = term(c["objective"], "g_fake", out_g, c["drift"]) * share
        lg_.backward()
        loss_g += lg_.item()
        size_g += out_g.detach().abs().mean().item() * share
    optG.step()
    # The size of what each scalar sums: a critic's mean score can be far smaller than its scores (they
    # cancel), and its rounding follows the scores, so the scalars' absolute floor is taken from them.
    size = {"d_real": size_real, "d_fake": size_fake, "g_loss": size_g}
    size["d_loss"] = size["d_real"] + size["d_fake"]
    size["d_penalty"] = 0.0
    return {"d_loss": loss_real + loss_fake + penalty_value, "g_loss": loss_g, "d_penalty": penalty_value,
            "d_real": d_real, "d_fake": d_fake, "size": size}


def config_text(c):
    return "\n".join([
        "# written by tests/oracle/test_objectives_oracle.py",
        "run:", f"  seed: {RUN_SEED}",
        "model:", f"  d_norm: {c.get('d_norm', 'batch')}", f"  g_norm: {c.get('g_norm', 'batch')}",
        "train:", f"  n_critic: {c['n_critic']}", f"  g_fresh_noise: {'true' if c['fresh'] else 'false'}",
        f"  micro_batch: {c.get('micro', 0)}",
        "loss:", f"  objective: {c['objective']}", f"  drift: {float(c['drift'])!r}", f"  clip_critic: {float(c['clip'])!r}",
        f"  gp_weight: {float(c.get('gp', 0.0))!r}", f"  gp_every: {c.get('gp_every', 1)}",
        "optim:",
        "  g:", "    name: sgd", f"    lr: {SGD['lr']!r}", f"    momentum: {SGD['momentum']!r}",
        "  d:", "    name: sgd", f"    lr: {SGD['lr']!r}", f"    momentum: {SGD['momentum']!r}",
    ]) + "\n"


def floor_bound(ref64, ref32, size=0.0, size_tol=ABS_FLOOR):
    """A tensor's bound: FLOOR_MULTIPLE times float32 torch's error against float64, plus ABS_FLOOR of its
    largest value (or size_tol of `size`); with that floor and largest value."""
    floor = float(np.max(np.abs(ref32 - ref64))) if ref64.size else 0.0
    ref_max = float(np.max(np.abs(ref64))) if ref64.size else 0.0
    return FLOOR_MULTIPLE * floor + max(ABS_FLOOR * ref_max, size_tol * size), floor, ref_max


def compare_to_floor(report, name, ours, ref64, ref32, size=0.0, size_tol=ABS_FLOOR):
    """size (with size_tol): the magnitude the value's rounding follows when that exceeds the value itself."""
    ours = np.asarray(ours, np.float64).reshape(ref64.shape)
    err = float(np.max(np.abs(ours - ref64))) if ref64.size else 0.0
    bound, floor, ref_max = floor_bound(ref64, ref32, size, size_tol)
    ok = bool(np.all(np.isfinite(ours))) and err <= bound
    report.add(name, tuple(ref64.shape), err, ref_max, err / max(ref_max, 1e-30), bound, ok,
               f"float32 torch {floor:.1e}")


def run_case(tool, name, workdir):
    c = CASES[name]
    m = MODEL
    netG, netD, gen = make_nets(m, c["seed"], d_norm=c.get("d_norm", "batch"), g_norm=c.get("g_norm", "batch"))
    K, N = c["n_critic"], m["batch"]
    Z = K + (1 if c["fresh"] else 0)
    real = torch.rand((K * N, m["channels"], m["resolution"], m["resolution"]), generator=gen) * 2 - 1
    z = torch.randn((Z * N, m["nz"]), generator=gen)

    in_path, out_path = os.path.join(workdir, f"{name}_in.h5"), os.path.join(workdir, f"{name}_out.h5")
    with h5py.File(in_path, "w") as f:
        write_meta(f, resolution=m["resolution"], nz=m["nz"], g_width=m["g_width"], d_width=m["d_width"],
                   channels=m["channels"])
        write_tensors(f, "G/params", netG.state_dict())
        write_tensors(f, "D/params", netD.state_dict())
        write_tensors(f, "inputs", {"real": real, "z": z})
        f["meta"].attrs["config"] = config_text(c)

    # Ours first: torch takes the interpolation weights it drew.
    print(run_tool(tool, ["gan-step", in_path, out_path]).strip())
    mix = None
    if c.get("gp", 0) > 0:
        with h5py.File(out_path, "r") as f:
            mix = torch.from_numpy(np.array(f["outputs/mix"][()]))
    results = {}
    for dtype in (torch.float64, torch.float32):
        g, d = copy.deepcopy(netG).to(dtype), copy.deepcopy(netD).to(dtype)
        reals = [real[k * N:(k + 1) * N].to(dtype) for k in range(K)]
        zs = [z[k * N:(k + 1) * N].to(dtype) for k in range(Z)]
        mixes = [mix[k * N:(k + 1) * N].to(dtype) for k in range(K)] if mix is not None else None
        scalars = reference_step(g, d, reals, zs, c, mixes, micro=c.get("torch_micro", 0))
        results[dtype] = (scalars, {"G": g.state_dict(), "D": d.state_dict()})

    report = Report(f"{name}: {c}")
    (s64, nets64), (s32, nets32) = results[torch.float64], results[torch.float32]
    with h5py.File(out_path, "r") as f:
        ours = read_group(f, "outputs")
        keys = ("d_loss", "g_loss", "d_real", "d_fake") + (("d_penalty",) if mix is not None else ())
        for key in keys:
            compare_to_floor(report, f"outputs/{key}", ours[key], np.array([s64[key]]), np.array([s32[key]]),
                             size=s64["size"][key], size_tol=SCALAR_SIZE_TOL)
        for prefix in ("D", "G"):
            params = read_group(f, f"{prefix}/params")
            for key, ref in nets64[prefix].items():
                label = f"{prefix}/params/{key}"
                if key not in params:
                    report.missing(label, "not in our output")
                elif key.endswith("num_batches_tracked"):
                    compare_exact(report, label, params[key], ref.numpy())
                else:
                    compare_to_floor(report, label, params[key], ref.numpy().astype(np.float64),
                                     nets32[prefix][key].numpy().astype(np.float64))
    if c["clip"] > 0:  # the clamp must bind somewhere, or this case does not test it
        bound = sum(int(np.count_nonzero(np.abs(v.numpy()) == c["clip"])) for k, v in nets32["D"].items()
                    if not k.endswith(("running_mean", "running_var", "num_batches_tracked")))
        report.add("D weights at +-clip (torch float32)", "-", 0.0, float(bound), 0.0, "> 0", bound > 0)
    return report


def main():
    return case_main(__doc__, CASES, run_case, "gt_objectives_")


if __name__ == "__main__":
    sys.exit(main())
