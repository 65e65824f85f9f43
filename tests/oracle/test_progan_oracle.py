#!/usr/bin/python3
"""The Progressive GAN's layers and networks (src/nn/progan.cpp) against an independent PyTorch implementation:
one phase's G and D, forward, backward and the gradient penalty's double backward, on the same weights and inputs.

`gt_oracle_tool progan` builds one phase's G and D with gantrain's CPU layers (PixelNorm, Upsample2x, AvgPool2x,
MinibatchStddev, Fade, and convolutions / linear layers with an equalized-learning-rate weight_scale) and writes
G(z), G's input and parameter gradients of sum(G(z) * dy), D(x), D's input and parameter gradients of sum(D(x)),
the penalty P = gp_weight * mean_i (||grad_x D(x)_i|| - 1)^2 and its parameter gradients (the double backward).
The reference is plain torch functional code over the state dict {name: tensor} under our names, written from the
paper's definitions (Karras et al. 2018) as gantrain states them in src/nn/progan.h:
  width(r)   max(1, min(fmap_base // r, fmap_max)) feature maps at resolution r
  equalized  every convolution / linear layer computes with weight * gain / sqrt(fan_in) (fan_in = in * k * k;
             nz for the ConvTranspose2d "b4.dense"), gain sqrt(2), sqrt(2)/4 for b4.dense, 1 for torgb<r> and
             b4.dense1; the bias unscaled; 3x3 convolutions pad 1, 1x1 pad 0
  PixelNorm  x / sqrt(mean_c x^2 + 1e-8)
  G          pixelnorm(z) -> b4.dense (4x4 transposed, stride 1) -> lrelu(0.2) -> pn -> b4.conv -> lrelu -> pn,
             per r = 8, 16, ...: nearest x2 upsample -> b<r>.conv0 -> lrelu -> pn -> b<r>.conv1 -> lrelu -> pn;
             torgb<r> 1x1 (linear output). Fading in r: a + alpha (b - a), a = upsample(torgb<r/2>(trunk)),
             b = torgb<r>(block_r(trunk)), the trunk up to r/2
  D          lrelu(fromrgb<r> 1x1), per r > 4: b<r>.conv0 (C_r -> C_r) lrelu, b<r>.conv1 (C_r -> C_r/2) lrelu,
             2x2 average pool; at 4x4 the minibatch stddev, b4.conv (C_4 + 1 -> C_4) lrelu, flatten, b4.dense0
             (16 C_4 -> C_4) lrelu, b4.dense1 (C_4 -> 1). Fading in r: a + alpha (b - a),
             a = lrelu(fromrgb<r/2>(avgpool(x))), b = block_r(lrelu(fromrgb<r>(x))), then blocks r/2 ... 4
  mbstd      groups of mbstd_group CONSECUTIVE samples; per group and (c, h, w) the biased
             sigma = sqrt(mean_i (x_i - mean)^2 + 1e-8); s_g = mean over (c, h, w); one channel filled with s_g
  penalty    autograd.grad(D(x).sum(), x, create_graph=True), then autograd.grad(P, params)
The fade-in weight is the float32 alpha the tool computes with (it reads /meta alpha, a double, as a float).
Besides autograd, D's penalty gradients are checked against central finite differences of torch's float64 P for
FD_ENTRIES parameter entries (h = 1e-6 times the parameter's scale, at least 1: see FD_SCALE_FLOOR). The penalty must be
active (every ||grad_x D(x)_i|| away from 1), and every tensor our tool wrote must have a torch reference and vice
versa (a name on one side only is a failure).

Inputs: weights N(0, 1) (our init; the runtime scale does the rest), biases N(0, 0.1) (nonzero, so the bias
gradients are tested at general values), z ~ N(0, 1), x ~ U[-1, 1], dy ~ N(0, 1), from a torch.Generator seeded
per case. The model: fmap_base 64, fmap_max 8 (widths 8, 8, 4 at 4, 8, 16), nz 8, channels 3, final resolution 16.

Cases (one ctest test each, see tests/oracle/CMakeLists.txt):
  stable4   the 4x4 phase (stable), batch 8, mbstd_group 4 (two groups)
  fade8     the 8x8 block fading in at alpha 0.3, batch 8, mbstd_group 4
  stable8   the 8x8 phase stable, batch 6, mbstd_group 2 (three groups)
  fade16    the 16x16 block fading in at alpha 0.75 (widths change there: G's b16.conv0 8 -> 4 feature maps,
            D's b16.conv1 4 -> 8), batch 4, mbstd_group 4 (a single group)

Tolerance, per tensor (test_objectives_oracle.py's floor_bound): our error against float64 torch within 8 times
float32 torch's own error plus 1e-6 of the tensor's largest value; each finite-difference entry within the same
bound of its tensor.

Usage: /usr/bin/python3 test_progan_oracle.py --tool build/tests/oracle/gt_oracle_tool [--keep DIR] [--verbose]
           CASE... | all
Exit status: 0 pass, 1 mismatch, 77 skipped (torch/h5py missing; a failure when GANTRAIN_TEST_REQUIRE_ALL=1).
"""
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_dcgan_oracle import case_main, Report, read_group, run_tool, write_meta, write_tensors  # noqa: E402
import h5py  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from test_objectives_oracle import compare_to_floor, floor_bound  # noqa: E402

FD_ENTRIES = 16  # finite-difference entries per case, spread over D's parameters
# The step is h = 1e-6 * max(max |parameter|, FD_SCALE_FLOOR). Floored at 1, the unit at which the weights are
# drawn and at which an unscaled bias acts, rather than test_penalty_oracle.py's 1e-2: the biases here (N(0, 0.1))
# would get h ~ 2e-7, where float64's rounding of P (a few ulp of P ~ 6, over 2h) alone reached 2.8 times the
# bound of fade8's small penalty bias gradients (~2e-4, bound ~2e-9) in a probe of 20 entries per tensor; with
# the floor at 1 it stayed below 0.4 times. Steps 10 times larger already crossed LeakyReLU kinks, where P jumps
# (grad_x changes discontinuously there), in that probe.
FD_SCALE_FLOOR = 1.0
SLOPE = 0.2
EPS = 1e-8
SQRT2 = math.sqrt(2.0)

MODEL = dict(final_resolution=16, nz=8, channels=3, fmap_base=64, fmap_max=8)
CASES = {
    "stable4": dict(resolution=4, fading=False, alpha=1.0, batch=8, mbstd_group=4, gp_weight=10.0, seed=31),
    "fade8": dict(resolution=8, fading=True, alpha=0.3, batch=8, mbstd_group=4, gp_weight=10.0, seed=32),
    "stable8": dict(resolution=8, fading=False, alpha=1.0, batch=6, mbstd_group=2, gp_weight=10.0, seed=33),
    "fade16": dict(resolution=16, fading=True, alpha=0.75, batch=4, mbstd_group=4, gp_weight=10.0, seed=34),
}


# ---- the networks as torch functions over {name: tensor} -----------------------------------------------------
def width(m, r):
    return max(1, min(m["fmap_base"] // r, m["fmap_max"]))


def generator_shapes(m, r, fading):
    """G's parameters for the phase at r: {name: shape}, under our names."""
    nz, ch = m["nz"], m["channels"]
    shapes = {"b4.dense.weight": (nz, width(m, 4), 4, 4), "b4.dense.bias": (width(m, 4),),
              "b4.conv.weight": (width(m, 4), width(m, 4), 3, 3), "b4.conv.bias": (width(m, 4),)}
    x = 8
    while x <= r:
        c, c_in = width(m, x), width(m, x // 2)
        shapes.update({f"b{x}.conv0.weight": (c, c_in, 3, 3), f"b{x}.conv0.bias": (c,),
                       f"b{x}.conv1.weight": (c, c, 3, 3), f"b{x}.conv1.bias": (c,)})
        x *= 2
    for x in ([r // 2, r] if fading else [r]):
        shapes.update({f"torgb{x}.weight": (ch, width(m, x), 1, 1), f"torgb{x}.bias": (ch,)})
    return shapes


def critic_shapes(m, r, fading):
    """D's parameters for the phase at r: {name: shape}, under our names."""
    ch = m["channels"]
    shapes = {}
    for x in ([r // 2, r] if fading else [r]):
        shapes.update({f"fromrgb{x}.weight": (width(m, x), ch, 1, 1), f"fromrgb{x}.bias": (width(m, x),)})
    x = r
    while x >= 8:
        c, c_out = width(m, x), width(m, x // 2)
        shapes.update({f"b{x}.conv0.weight": (c, c, 3, 3), f"b{x}.conv0.bias": (c,),
                       f"b{x}.conv1.weight": (c_out, c, 3, 3), f"b{x}.conv1.bias": (c_out,)})
        x //= 2
    c = width(m, 4)
    shapes.update({"b4.conv.weight": (c, c + 1, 3, 3), "b4.conv.bias": (c,),
                   "b4.dense0.weight": (c, 16 * c), "b4.dense0.bias": (c,),
                   "b4.dense1.weight": (1, c), "b4.dense1.bias": (1,)})
    return shapes


def draw_params(shapes, gen):
    """Weights N(0, 1) as our init; biases N(0, 0.1), away from our init's 0. Drawn in sorted name order."""
    out = {}
    for name in sorted(shapes):
        t = torch.randn(shapes[name], generator=gen, dtype=torch.float64)
        out[name] = t if name.endswith(".weight") else 0.1 * t
    return out


def conv(p, name, x, gain):
    w = p[name + ".weight"]
    k = w.shape[-1]
    return F.conv2d(x, w * (gain / math.sqrt(w.shape[1] * k * k)), p[name + ".bias"], padding=k // 2)


def linear(p, name, x, gain):
    w = p[name + ".weight"]
    return F.linear(x, w * (gain / math.sqrt(w.shape[1])), p[name + ".bias"])


def lrelu(x):
    return F.leaky_relu(x, SLOPE)


def pixel_norm(x):
    return x / torch.sqrt((x * x).mean(dim=1, keepdim=True) + EPS)


def upsample(x):
    return x.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)


def avg_pool(x):
    return F.avg_pool2d(x, 2)


def minibatch_stddev(x, group):
    """Groups of `group` consecutive samples; one more channel holding the group's mean biased deviation."""
    n, c, h, w = x.shape
    y = x.reshape(n // group, group, c, h, w)
    sigma = torch.sqrt(((y - y.mean(dim=1, keepdim=True)) ** 2).mean(dim=1) + EPS)  # [n / group, c, h, w]
    s = sigma.mean(dim=(1, 2, 3)).repeat_interleave(group)  # per sample
    return torch.cat([x, s.view(n, 1, 1, 1).expand(n, 1, h, w)], dim=1)


def generator_block(p, r, h):
    h = upsample(h)
    h = pixel_norm(lrelu(conv(p, f"b{r}.conv0", h, SQRT2)))
    return pixel_norm(lrelu(conv(p, f"b{r}.conv1", h, SQRT2)))


def generator(p, m, r, fading, alpha, z):
    w = p["b4.dense.weight"]
    h = pixel_norm(z.view(z.shape[0], m["nz"], 1, 1))
    h = F.conv_transpose2d(h, w * (SQRT2 / 4 / math.sqrt(m["nz"])), p["b4.dense.bias"])
    h = pixel_norm(lrelu(h))
    h = pixel_norm(lrelu(conv(p, "b4.conv", h, SQRT2)))
    top = r // 2 if fading else r
    x = 8
    while x <= top:
        h = generator_block(p, x, h)
        x *= 2
    if not fading:
        return conv(p, f"torgb{r}", h, 1.0)
    a = upsample(conv(p, f"torgb{r // 2}", h, 1.0))
    b = conv(p, f"torgb{r}", generator_block(p, r, h), 1.0)
    return a + alpha * (b - a)


def critic_block(p, r, h):
    h = lrelu(conv(p, f"b{r}.conv0", h, SQRT2))
    h = lrelu(conv(p, f"b{r}.conv1", h, SQRT2))
    return avg_pool(h)


def critic(p, m, c, x):
    r = c["resolution"]
    if c["fading"]:
        a = lrelu(conv(p, f"fromrgb{r // 2}", avg_pool(x), SQRT2))
        b = critic_block(p, r, lrelu(conv(p, f"fromrgb{r}", x, SQRT2)))
        h = a + c["alpha32"] * (b - a)
        top = r // 2
    else:
        h = lrelu(conv(p, f"fromrgb{r}", x, SQRT2))
        top = r
    while top >= 8:
        h = critic_block(p, top, h)
        top //= 2
    h = minibatch_stddev(h, c["mbstd_group"])
    h = lrelu(conv(p, "b4.conv", h, SQRT2)).flatten(1)
    h = lrelu(linear(p, "b4.dense0", h, SQRT2))
    return linear(p, "b4.dense1", h, 1.0).reshape(-1)


def penalty(p, m, c, x):
    """gp_weight * mean (||grad_x D(x)|| - 1)^2 with the graph kept (create_graph=True), and grad_x."""
    x = x.detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(critic(p, m, c, x).sum(), x, create_graph=True)
    return c["gp_weight"] * ((g.flatten(1).norm(dim=1) - 1) ** 2).mean(), g


def grads_of(value, params):
    """d value / d params; zeros for a parameter the value does not depend on (b4.dense1.bias in the penalty)."""
    names = sorted(params)
    gs = torch.autograd.grad(value, [params[k] for k in names], allow_unused=True)
    return {k: (torch.zeros_like(params[k]) if g is None else g).detach() for k, g in zip(names, gs)}


def reference(gp, dp, m, c, z, dy, x, dtype):
    """Every tensor the tool writes, in `dtype`, as {group: {name: numpy float64}}."""
    gp = {k: v.to(dtype).requires_grad_(True) for k, v in gp.items()}
    dp = {k: v.to(dtype).requires_grad_(True) for k, v in dp.items()}
    z = z.to(dtype).requires_grad_(True)
    fake = generator(gp, m, c["resolution"], c["fading"], c["alpha32"], z)
    g_grads = grads_of((fake * dy.to(dtype)).sum(), dict(gp, __z=z))
    grad_z = g_grads.pop("__z")

    x1 = x.to(dtype).requires_grad_(True)
    scores = critic(dp, m, c, x1)
    d_first = grads_of(scores.sum(), dict(dp, __x=x1))
    grad_x = d_first.pop("__x")

    p, g = penalty(dp, m, c, x.to(dtype))
    d_grads = grads_of(p, dp)

    def np64(t):
        return t.detach().to(torch.float64).numpy()

    return {
        "outputs": {"fake": np64(fake), "grad_z": np64(grad_z), "scores": np64(scores), "grad_x": np64(grad_x),
                    "penalty": np.array([p.item()])},
        "G/grads": {k: np64(v) for k, v in g_grads.items()},
        "D/grads_first": {k: np64(v) for k, v in d_first.items()},
        "D/grads": {k: np64(v) for k, v in d_grads.items()},
    }, np64(g)


def finite_differences(dp, m, c, x, entries, gen):
    """Central differences of the float64 penalty for `entries` parameter entries: [(name, flat index, value)]."""
    params = {k: v.clone() for k, v in dp.items()}
    x64 = x.to(torch.float64)
    names = sorted(params)
    out = []
    for k in range(entries):
        name = names[k % len(names)]
        q = params[name].view(-1)
        i = int(torch.randint(q.numel(), (1,), generator=gen))
        h = 1e-6 * max(float(q.abs().max()), FD_SCALE_FLOOR)
        old = q[i].item()
        q[i] = old + h
        plus = penalty(params, m, c, x64)[0].item()
        q[i] = old - h
        minus = penalty(params, m, c, x64)[0].item()
        q[i] = old
        out.append((name, i, (plus - minus) / (2 * h)))
    return out


def run_case(tool, name, workdir):
    m = MODEL
    c = dict(CASES[name])
    c["alpha32"] = float(np.float32(c["alpha"]))  # the tool computes with float(alpha)
    r, n = c["resolution"], c["batch"]
    gen = torch.Generator().manual_seed(c["seed"])
    gp = draw_params(generator_shapes(m, r, c["fading"]), gen)
    dp = draw_params(critic_shapes(m, r, c["fading"]), gen)
    z = torch.randn((n, m["nz"]), generator=gen, dtype=torch.float64).float()
    dy = torch.randn((n, m["channels"], r, r), generator=gen, dtype=torch.float64).float()
    x = (torch.rand((n, m["channels"], r, r), generator=gen, dtype=torch.float64) * 2 - 1).float()
    # Both sides start from the same float32 values.
    gp = {k: v.float().double() for k, v in gp.items()}
    dp = {k: v.float().double() for k, v in dp.items()}

    in_path, out_path = os.path.join(workdir, f"{name}_in.h5"), os.path.join(workdir, f"{name}_out.h5")
    with h5py.File(in_path, "w") as f:
        write_meta(f, resolution=r, final_resolution=m["final_resolution"], fading=int(c["fading"]), nz=m["nz"],
                   channels=m["channels"], fmap_base=m["fmap_base"], fmap_max=m["fmap_max"],
                   mbstd_group=c["mbstd_group"])
        f["meta"].attrs["alpha"] = np.float64(c["alpha"])
        write_tensors(f, "G/params", {k: v.float() for k, v in gp.items()})
        write_tensors(f, "D/params", {k: v.float() for k, v in dp.items()})
        write_tensors(f, "inputs", {"z": z, "dy": dy, "x": x})
        # model.d_norm none: the config check refuses a penalty with a batch-norm critic (the default); ProGAN's
        # critic has no normalization layers, and the tool reads only loss.gp_weight from the config.
        f["meta"].attrs["config"] = (f"# written by tests/oracle/test_progan_oracle.py\nmodel:\n  d_norm: none\n"
                                     f"loss:\n  objective: wgan\n  gp_weight: {c['gp_weight']!r}\n")
    print(run_tool(tool, ["progan", in_path, out_path]).strip())

    ref64, g64 = reference(gp, dp, m, c, z, dy, x, torch.float64)
    ref32, _ = reference(gp, dp, m, c, z, dy, x, torch.float32)
    report = Report(f"{name}: {c}")
    with h5py.File(out_path, "r") as f:
        ours = {group: read_group(f, group) for group in ref64 if group in f}
    for group, refs in ref64.items():
        mine = ours.get(group, {})
        for key in sorted(set(refs) | set(mine)):
            if key not in mine:
                report.missing(f"{group}/{key}", "not in our output")
            elif key not in refs:
                report.missing(f"{group}/{key}", "ours only: no torch reference")
            elif mine[key].size != refs[key].size:
                report.missing(f"{group}/{key}", f"size {mine[key].size} vs torch {refs[key].size}")
            else:
                compare_to_floor(report, f"{group}/{key}", mine[key], refs[key], ref32[group][key])
    # Finite differences of the exact (float64) penalty, entry by entry, each within its tensor's bound.
    d_ours = ours.get("D/grads", {})
    for key, i, fd in finite_differences(dp, m, c, x, FD_ENTRIES, gen):
        if key not in d_ours:
            continue  # reported missing above
        bound, _, _ = floor_bound(ref64["D/grads"][key], ref32["D/grads"][key])
        ours_i = float(np.asarray(d_ours[key]).reshape(-1)[i])
        err = abs(ours_i - fd)
        report.add(f"finite difference {key}[{i}]", "-", err, abs(fd), err / max(abs(fd), 1e-30), bound,
                   bool(np.isfinite(ours_i)) and err <= bound,
                   f"autograd64 {ref64['D/grads'][key].reshape(-1)[i]:.6g}")
    # The penalty must be active: gradients far from norm 1 (else a wrong second-order term hides).
    norms = np.linalg.norm(g64.reshape(n, -1), axis=1)
    gap = float(np.min(np.abs(norms - 1)))
    report.add("gradient norms away from 1", "-", 0.0, gap, 0.0, "> 1e-3", gap > 1e-3,
               f"norms {np.min(norms):.3g} .. {np.max(norms):.3g}")
    ratios = [(r_[2] / r_[5] if r_[5] > 0 else (0.0 if r_[2] == 0 else np.inf), r_[0])
              for r_ in report.rows if not isinstance(r_[5], str)]
    worst = max(ratios, key=lambda t: t[0] if np.isfinite(t[0]) else np.inf)
    print(f"{name}: largest error / bound {worst[0]:.3g} in {worst[1]}")
    return report


def main():
    return case_main(__doc__, CASES, run_case, "gt_progan_")


if __name__ == "__main__":
    sys.exit(main())
