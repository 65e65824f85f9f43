#!/usr/bin/python3
"""PyTorch oracle for gantrain: the same weights, batch and noise through torch and through gt_oracle_tool.

Cases (one ctest test each, see tests/oracle/CMakeLists.txt):
  dcgan32_small, dcgan64   the classic PyTorch DCGAN (BCEWithLogitsLoss, Adam) for one full training step:
                           G(z) and D(real) before the step, the losses, then every parameter, BatchNorm
                           buffer and Adam state tensor after it.
  optim_*                  K steps of Adam / RMSprop / SGD (momentum, weight decay) on given parameters
                           and per-step gradients, against torch.optim.

  sample_from_checkpoint   `gantrain sample --out FILE.h5` from a checkpoint of a short run against G(z)
                           recomputed by torch's Generator (eval mode) from the same checkpoint and z.

Usage: /usr/bin/python3 test_dcgan_oracle.py --tool build/tests/oracle/gt_oracle_tool [--exe build/gantrain]
           [--keep DIR] CASE...
Exit status: 0 pass, 1 mismatch, 77 skipped (torch/h5py missing; a failure instead when
GANTRAIN_TEST_REQUIRE_ALL=1, as scripts/test.sh sets).

Errors are measured per tensor as max|ours - torch| / max|torch| (the "relative" column); the
tolerances and why they are what they are sit next to their definitions below.
"""
import argparse
import importlib
import os
import subprocess
import sys
import tempfile
import zlib

SKIP_EXIT = 77
try:
    import h5py
    import numpy as np
    import torch
    import torch.nn as nn
except ImportError as missing:  # the oracle needs Debian's python3-torch and python3-h5py
    # scripts/test.sh installs them and sets GANTRAIN_TEST_REQUIRE_ALL=1: there a missing oracle is a failure.
    required = os.environ.get("GANTRAIN_TEST_REQUIRE_ALL") == "1"
    print(f"{'FAIL' if required else 'SKIP'}: the PyTorch oracle needs torch, numpy and h5py ({missing}); "
          "run it with /usr/bin/python3")
    sys.exit(1 if required else SKIP_EXIT)

# The classic PyTorch DCGAN (pytorch/examples' dcgan without the final Sigmoid), shared with the benchmarks.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools"))
from torch_dcgan import Discriminator, Generator, dcgan_weights_init, load_from_checkpoint  # noqa: E402

# ---- tolerances ------------------------------------------------------------------------------------
# Measured against torch 1.13 with 1 and 2 threads (the numbers in brackets), so each bound has a
# margin of 10x or more over what float32 summation order explains and is far below what a wrong
# formula gives (a 1e-3 change of one noise value already fails outputs/fake at 2.6e-4).
# Forward outputs: float32 GEMMs summed in another order than torch's kernels [<= 1.7e-6].
FORWARD_TOL = 2e-5
# Scalars (losses, mean D outputs): relative to the value itself [<= 1.5e-7].
SCALAR_TOL = 1e-5
# Tensors derived from one step's gradients (Adam exp_avg = (1-b1) g, exp_avg_sq = (1-b2) g^2, BN
# running statistics): G's gradients pass through D after its update [<= 1.7e-6].
STATE_TOL = 1e-4
# Parameters after one Adam step. On the first step Adam moves each element by lr * g / (|g| + eps),
# i.e. by almost exactly +-lr whatever |g| is, so a relative error on the parameter says little; we
# compare the change itself with an absolute bound of 1% of lr [<= 4e-5 lr]. Where |g| is at the
# level of float noise (below GRAD_NOISE_FLOOR times the tensor's largest |g|; gradient errors are
# ~1e-6 of that largest |g|) the sign of g is set by summation order, not by the math, and a flipped
# sign moves the element by 2 lr instead: there the bound is 2 lr (plus the 1%). Such elements are
# counted and shown in the table [one element of 65 such in dcgan64 differs, by 3% of lr].
PARAM_ATOL_IN_LR = 1e-2
GRAD_NOISE_FLOOR = 1e-4
# The optimizer-only cases feed identical gradients to both sides; only rounding may differ [0: optim.cpp
# reproduces torch's float/double mix bit for bit].
OPTIM_TOL = 1e-5

TORCH_THREADS = 2


def perturb_bn_buffers(net, gen):
    """Non-default running statistics, so the test sees whether they are loaded and updated correctly."""
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
            m.num_batches_tracked.fill_(7)


def make_adam(params, cfg):
    opt = torch.optim.Adam(params, lr=cfg["lr"], betas=(cfg["beta1"], cfg["beta2"]), eps=cfg["eps"],
                           weight_decay=cfg["weight_decay"])
    group = opt.param_groups[0]
    # torch 1.13's default Adam is the single-tensor loop (foreach None -> False, not fused, not capturable).
    assert not group["amsgrad"] and not group["maximize"], group
    assert group["foreach"] in (None, False) and not group.get("fused", False), group
    assert not group.get("capturable", False) and not group.get("differentiable", False), group
    return opt


def optim_module(name):
    """torch.optim.<name> as a module (torch/optim/__init__.py deletes the submodule names)."""
    return importlib.import_module(f"torch.optim.{name}")


class SingleTensorPathCounter:
    """Counts calls of torch.optim's single-tensor update functions, to prove the default path ran."""

    def __init__(self, module, func_name):
        self.module, self.func_name, self.calls = module, func_name, 0

    def __enter__(self):
        self.original = getattr(self.module, self.func_name)

        def counted(*args, **kwargs):
            self.calls += 1
            return self.original(*args, **kwargs)

        setattr(self.module, self.func_name, counted)
        return self

    def __exit__(self, *exc):
        setattr(self.module, self.func_name, self.original)


# ---- HDF5 in gantrain's checkpoint layout -------------------------------------------------------------
def write_meta(f, resolution=0, **extra_ints):
    """The /meta attributes save_checkpoint writes (so load_checkpoint accepts the file) plus extra ints."""
    meta = f.create_group("meta")
    for key in ("format_version",):
        meta.attrs[key] = np.int64(1)
    for key in ("step", "epoch", "images_seen", "seed"):
        meta.attrs[key] = np.int64(0)
    meta.attrs["world_size"] = np.int64(1)
    meta.attrs["resolution"] = np.int64(resolution)
    meta.attrs["alpha"] = np.float64(1.0)
    meta.attrs["config"] = "# written by tests/oracle/test_dcgan_oracle.py\n"
    meta.attrs["code_version"] = "pytorch-oracle"
    for key, value in extra_ints.items():
        meta.attrs[key] = np.int64(value)


def write_tensors(f, group, tensors):
    g = f.require_group(group)
    for name, t in tensors.items():
        g.create_dataset(name, data=t.detach().cpu().numpy() if torch.is_tensor(t) else t)


def write_hparams(f, **values):
    """Optimizer hyper-parameters as config text (/meta/config: optim.g), so the tool gets the exact
    Python doubles torch uses (repr() is the shortest decimal that reads back to the same double)."""
    lines = ["# written by tests/oracle/test_dcgan_oracle.py", "optim:", "  g:"]
    lines += [f"    {k}: {float(v)!r}" for k, v in values.items()]
    f["meta"].attrs["config"] = "\n".join(lines) + "\n"


def read_group(f, group):
    return {name: np.array(ds[()]) for name, ds in f[group].items()}


def run_tool(tool, args):
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(TORCH_THREADS))
    proc = subprocess.run([tool] + args, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{tool} {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}")
    return proc.stdout


# ---- comparison --------------------------------------------------------------------------------------
class Report:
    """Rows of (tensor, shape, max abs error, max abs torch value, relative error, bound, verdict)."""

    def __init__(self, title):
        self.title, self.rows = title, []

    def add(self, name, shape, max_err, ref_max, rel, bound, ok, note=""):
        self.rows.append((name, shape, max_err, ref_max, rel, bound, ok, note))

    def ok(self):
        return all(r[6] for r in self.rows)

    def missing(self, name, why):
        self.add(name, "-", float("nan"), float("nan"), float("nan"), "-", False, why)

    def print(self, only_failures=False):
        rows = [r for r in self.rows if not (only_failures and r[6])]
        print(f"\n{self.title}: {len(self.rows)} tensors, {sum(not r[6] for r in self.rows)} failed")
        print(f"{'tensor':<40} {'shape':<18} {'max|err|':>10} {'max|ref|':>10} {'relative':>10} {'bound':>14}  ok")
        for name, shape, err, ref, rel, bound, ok, note in rows:
            b = bound if isinstance(bound, str) else f"{bound:.2e}"
            print(f"{name:<40} {str(shape):<18} {err:10.3e} {ref:10.3e} {rel:10.3e} {b:>14}  "
                  f"{'yes' if ok else 'NO'} {note}")


def compare_relative(report, name, ours, ref, tol):
    ours, ref = np.asarray(ours, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    if ours.size != ref.size:
        report.add(name, ref.shape, float("nan"), float("nan"), float("nan"), tol, False,
                   f"size {ours.size} vs torch {ref.size}")
        return
    ours, ref = ours.reshape(ref.shape), ref
    err = float(np.max(np.abs(ours - ref))) if ref.size else 0.0
    ref_max = float(np.max(np.abs(ref))) if ref.size else 0.0
    rel = err / ref_max if ref_max > 0 else err
    ok = bool(np.all(np.isfinite(ours))) and rel <= tol
    report.add(name, tuple(ref.shape), err, ref_max, rel, tol, ok)


def compare_exact(report, name, ours, ref):
    ours, ref = np.asarray(ours).reshape(-1), np.asarray(ref).reshape(-1)
    ok = ours.shape == ref.shape and np.array_equal(ours.astype(np.float64), ref.astype(np.float64))
    err = float(np.max(np.abs(ours.astype(np.float64) - ref))) if ours.shape == ref.shape else float("nan")
    report.add(name, tuple(ref.shape), err, float(np.max(np.abs(ref))), err, "exact", ok,
               "" if ok else f"ours {ours[:4]} torch {ref[:4]}")


def compare_adam_first_step(report, name, ours, ref, before, grad, lr):
    """Parameters after Adam's first step: see PARAM_ATOL_IN_LR and GRAD_NOISE_FLOOR above.

    The error columns cover the elements whose gradient is above the noise floor; the note reports the
    others when one of them differs by more than the 1% bound."""
    ours, ref = np.asarray(ours, np.float64).reshape(ref.shape), np.asarray(ref, np.float64)
    err = np.abs((ours - before) - (ref - before))
    atol, flip_bound = PARAM_ATOL_IN_LR * lr, 2 * lr + PARAM_ATOL_IN_LR * lr
    noise = np.abs(grad) < GRAD_NOISE_FLOOR * max(float(np.max(np.abs(grad))), 1e-30)
    clean_err = float(err[~noise].max()) if (~noise).any() else 0.0
    noise_err = float(err[noise].max()) if noise.any() else 0.0
    bad = np.where(noise, err > flip_bound, err > atol) | ~np.isfinite(ours)
    notes = []
    if noise_err > atol:
        notes.append(f"{int(np.count_nonzero(noise & (err > atol)))} of {int(np.count_nonzero(noise))} "
                     f"near-zero-grad elements differ by up to {noise_err:.1e} (bound {flip_bound:.1e})")
    if bad.any():
        notes.append(f"{int(np.count_nonzero(bad))} elements over their bound")
    ref_move = float(np.max(np.abs(ref - before)))
    report.add(name, tuple(ref.shape), clean_err, ref_move, clean_err / max(ref_move, 1e-30), atol,
               not bad.any(), "; ".join(notes))


# ---- DCGAN step -----------------------------------------------------------------------------------------
DCGAN_CASES = {
    # fast: 32x32 grayscale, narrow nets
    "dcgan32_small": dict(resolution=32, channels=1, nz=16, g_width=8, d_width=8, batch=16, seed=1),
    # the reference layout at 64x64 RGB with nz 100, narrow widths so it stays quick on a CPU
    "dcgan64": dict(resolution=64, channels=3, nz=100, g_width=16, d_width=16, batch=8, seed=2),
}
ADAM = dict(lr=2e-4, beta1=0.5, beta2=0.999, eps=1e-8, weight_decay=0.0)


def torch_dcgan_step(netG, netD, real, z, adam):
    """One step of the classic example; returns the pre-step outputs, the scalars and each net's grads."""
    crit = nn.BCEWithLogitsLoss()
    optD, optG = make_adam(netD.parameters(), adam), make_adam(netG.parameters(), adam)
    n = real.shape[0]
    ones, zeros = torch.full((n,), 1.0), torch.full((n,), 0.0)
    with SingleTensorPathCounter(optim_module("adam"), "_single_tensor_adam") as path:
        netD.zero_grad()
        out_real = netD(real)
        errD_real = crit(out_real, ones)
        errD_real.backward()
        fake = netG(z.view(n, -1, 1, 1))
        out_fake = netD(fake.detach())
        errD_fake = crit(out_fake, zeros)
        errD_fake.backward()
        optD.step()
        d_grads = {k: p.grad.detach().clone() for k, p in netD.named_parameters()}
        netG.zero_grad()
        out_g = netD(fake)
        errG = crit(out_g, ones)
        errG.backward()
        optG.step()
        g_grads = {k: p.grad.detach().clone() for k, p in netG.named_parameters()}
    assert path.calls == 2, f"expected 2 calls of the single-tensor Adam, saw {path.calls}"
    outputs = {
        "fake": fake.detach(), "d_real_logits": out_real.detach(),
        "d_loss": (errD_real + errD_fake).item(), "g_loss": errG.item(),
        "d_real": torch.sigmoid(out_real).mean().item(), "d_fake": torch.sigmoid(out_fake).mean().item(),
    }
    return outputs, {"G": (optG, g_grads), "D": (optD, d_grads)}


def compare_net_after_step(report, prefix, net, before, opt, grads, ours_params, ours_optim, lr):
    state_dict = net.state_dict()
    named = dict(net.named_parameters())
    for key, ref in state_dict.items():
        label = f"{prefix}/params/{key}"
        if key not in ours_params:
            report.missing(label, "not in our output")
        elif key in named:
            compare_adam_first_step(report, label, ours_params[key], ref.numpy(), before[key].numpy(),
                                    grads[key].numpy(), lr)
        elif key.endswith("num_batches_tracked"):
            compare_exact(report, label, ours_params[key], ref.numpy())
        else:
            compare_relative(report, label, ours_params[key], ref.numpy(), STATE_TOL)
    for key, p in named.items():
        state = opt.state[p]
        for kind in ("exp_avg", "exp_avg_sq"):
            label = f"{prefix}/optim/{kind}/{key}"
            if kind not in ours_optim or key not in ours_optim[kind]:
                report.missing(label, "not in our output")
            else:
                compare_relative(report, label, ours_optim[kind][key], state[kind].numpy(), STATE_TOL)
    steps = {float(opt.state[p]["step"]) for p in named.values()}
    assert len(steps) == 1, steps
    compare_exact(report, f"{prefix}/optim/step", ours_optim.get("step", np.array([-1])), np.array(list(steps)))


def read_optim_group(f, group):
    out = {}
    for name, item in f[group].items():
        out[name] = read_group(f, f"{group}/{name}") if isinstance(item, h5py.Group) else np.array(item[()])
    return out


def make_nets(m, seed, d_norm="batch", g_norm="batch"):
    """The classic DCGAN's G and D for the model dict m (nz, g_width, d_width, channels, resolution), initialized
    from torch's generator seeded `seed`, with perturbed batch-norm buffers; and the generator, seeded
    seed + 1000, that then draws the test's batches. d_norm, g_norm: D's and G's normalization (model.d_norm,
    model.g_norm); D's layer-norm
    affines and conv biases (when it has them) are drawn away from their initial 1 and 0, so their gradients
    are tested at general values."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed + 1000)
    netG = Generator(m["nz"], m["g_width"], m["channels"], m["resolution"], g_norm=g_norm)
    netD = Discriminator(m["d_width"], m["channels"], m["resolution"], d_norm=d_norm)
    netG.apply(dcgan_weights_init)
    netD.apply(dcgan_weights_init)
    with torch.no_grad():
        perturb_bn_buffers(netG, gen)
        perturb_bn_buffers(netD, gen)
        for mod in netD.modules():
            if isinstance(mod, torch.nn.GroupNorm):
                mod.weight.copy_(1 + 0.2 * torch.randn(mod.weight.shape, generator=gen))
                mod.bias.copy_(0.2 * torch.randn(mod.bias.shape, generator=gen))
            elif isinstance(mod, torch.nn.Conv2d) and mod.bias is not None:
                mod.bias.copy_(0.05 * torch.randn(mod.bias.shape, generator=gen))
        for mod in netG.modules():
            if isinstance(mod, torch.nn.ConvTranspose2d) and mod.bias is not None:
                mod.bias.copy_(0.05 * torch.randn(mod.bias.shape, generator=gen))
    return netG, netD, gen


def run_dcgan_case(tool, name, workdir):
    c = DCGAN_CASES[name]
    netG, netD, gen = make_nets(c, c["seed"])
    real = torch.rand((c["batch"], c["channels"], c["resolution"], c["resolution"]), generator=gen) * 2 - 1
    z = torch.randn((c["batch"], c["nz"]), generator=gen)

    in_path, out_path = os.path.join(workdir, f"{name}_in.h5"), os.path.join(workdir, f"{name}_out.h5")
    with h5py.File(in_path, "w") as f:
        write_meta(f, resolution=c["resolution"], nz=c["nz"], g_width=c["g_width"], d_width=c["d_width"],
                   channels=c["channels"])
        write_tensors(f, "G/params", netG.state_dict())
        write_tensors(f, "D/params", netD.state_dict())
        write_hparams(f, **ADAM)
        write_tensors(f, "inputs", {"real": real, "z": z})
    before = {"G": {k: v.clone() for k, v in netG.state_dict().items()},
              "D": {k: v.clone() for k, v in netD.state_dict().items()}}

    outputs, nets = torch_dcgan_step(netG, netD, real, z, ADAM)
    print(run_tool(tool, ["dcgan-step", in_path, out_path]).strip())

    report = Report(f"{name}: {c}")
    with h5py.File(out_path, "r") as f:
        ours = read_group(f, "outputs")
        compare_relative(report, "outputs/fake = G(z)", ours["fake"], outputs["fake"].numpy(), FORWARD_TOL)
        compare_relative(report, "outputs/step_fake", ours["step_fake"], outputs["fake"].numpy(), FORWARD_TOL)
        compare_relative(report, "outputs/d_real_logits = D(real)", ours["d_real_logits"],
                         outputs["d_real_logits"].numpy(), FORWARD_TOL)
        for key in ("d_loss", "g_loss", "d_real", "d_fake"):
            compare_relative(report, f"outputs/{key}", ours[key], np.array([outputs[key]]), SCALAR_TOL)
        for prefix, net in (("D", netD), ("G", netG)):
            opt, grads = nets[prefix]
            compare_net_after_step(report, prefix, net, before[prefix], opt, grads, read_group(f, f"{prefix}/params"),
                                   read_optim_group(f, f"{prefix}/optim"), ADAM["lr"])
    return report


# ---- optimizers ------------------------------------------------------------------------------------------
OPTIM_CASES = {
    "optim_adam": ("adam", dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0)),
    "optim_adam_wd": ("adam", dict(lr=2e-4, beta1=0.5, beta2=0.999, eps=1e-8, weight_decay=1e-2)),
    "optim_rmsprop": ("rmsprop", dict(lr=1e-2, alpha=0.99, eps=1e-8, momentum=0.0, weight_decay=0.0)),
    "optim_rmsprop_momentum_wd": ("rmsprop", dict(lr=5e-5, alpha=0.9, eps=1e-6, momentum=0.9, weight_decay=1e-3)),
    "optim_sgd": ("sgd", dict(lr=0.1, momentum=0.0, weight_decay=0.0)),
    "optim_sgd_momentum": ("sgd", dict(lr=0.05, momentum=0.9, weight_decay=0.0)),
    "optim_sgd_momentum_wd": ("sgd", dict(lr=0.05, momentum=0.9, weight_decay=5e-4)),
}
OPTIM_STEPS = 6
OPTIM_SHAPES = {"net.0.weight": (6, 3, 4, 4), "net.0.bias": (6,), "net.2.weight": (10, 24), "net.2.running": (1,)}


def make_torch_optimizer(kind, params, h):
    if kind == "adam":
        return make_adam(params, h), (optim_module("adam"), "_single_tensor_adam")
    if kind == "rmsprop":
        opt = torch.optim.RMSprop(params, lr=h["lr"], alpha=h["alpha"], eps=h["eps"], momentum=h["momentum"],
                                  weight_decay=h["weight_decay"], centered=False)
        return opt, (optim_module("rmsprop"), "_single_tensor_rmsprop")
    opt = torch.optim.SGD(params, lr=h["lr"], momentum=h["momentum"], weight_decay=h["weight_decay"],
                          dampening=0, nesterov=False)
    return opt, (optim_module("sgd"), "_single_tensor_sgd")


def optim_gradients(gen, shape, step):
    """Gradients over many magnitudes (1e-9 .. 1, some exact zeros) so eps placement and scaling matter."""
    g = torch.randn(shape, generator=gen)
    scale = 10.0 ** torch.randint(-9, 1, shape, generator=gen).float()
    g = g * scale
    g[torch.rand(shape, generator=gen) < 0.05] = 0.0
    return g * (1.0 + 0.3 * step)


def run_optim_case(tool, name, workdir):
    kind, h = OPTIM_CASES[name]
    full_h = dict(lr=0.0, beta1=0.9, beta2=0.999, eps=1e-8, alpha=0.99, momentum=0.0, weight_decay=0.0)
    full_h.update(h)
    gen = torch.Generator().manual_seed(zlib.crc32(name.encode()))  # str hash() varies per process
    params = {k: torch.randn(s, generator=gen) * 0.1 for k, s in OPTIM_SHAPES.items()}
    grads = [{k: optim_gradients(gen, s, step) for k, s in OPTIM_SHAPES.items()} for step in range(OPTIM_STEPS)]

    in_path, out_path = os.path.join(workdir, f"{name}_in.h5"), os.path.join(workdir, f"{name}_out.h5")
    with h5py.File(in_path, "w") as f:
        write_meta(f, steps=OPTIM_STEPS)
        write_hparams(f, **full_h)
        write_tensors(f, "params", params)
        for step, g in enumerate(grads):
            write_tensors(f, f"grads/{step}", g)

    torch_params = {k: nn.Parameter(v.clone()) for k, v in params.items()}
    opt, (module, func) = make_torch_optimizer(kind, list(torch_params.values()), h)
    with SingleTensorPathCounter(module, func) as path:
        for g in grads:
            for k, p in torch_params.items():
                p.grad = g[k].clone()
            opt.step()
    assert path.calls == OPTIM_STEPS, f"expected {OPTIM_STEPS} calls of {func}, saw {path.calls}"
    print(run_tool(tool, ["optim", kind, in_path, out_path]).strip())

    report = Report(f"{name}: {kind} {h}, {OPTIM_STEPS} steps")
    with h5py.File(out_path, "r") as f:
        ours_params = read_group(f, "params")
        ours_optim = read_optim_group(f, "optim")
    for k, p in torch_params.items():
        compare_relative(report, f"params/{k}", ours_params.get(k, np.array([np.nan])), p.detach().numpy(), OPTIM_TOL)
        for state_name, value in opt.state[p].items():
            label = f"optim/{state_name}/{k}"
            if state_name == "step":
                compare_exact(report, "optim/step", ours_optim.get("step", np.array([-1])),
                              np.array([float(value)]))
            elif value is None:
                continue  # SGD without momentum keeps momentum_buffer = None: nothing to compare
            elif state_name not in ours_optim or k not in ours_optim[state_name]:
                report.missing(label, "not in our output")
            else:
                compare_relative(report, label, ours_optim[state_name][k], value.numpy(), OPTIM_TOL)
    if kind != "adam":
        # torch keeps no step count for SGD/RMSprop state; ours must still count the steps taken.
        compare_exact(report, "optim/step (steps taken)", ours_optim.get("step", np.array([-1])),
                      np.array([OPTIM_STEPS]))
    return report


# ---- main --------------------------------------------------------------------------------------------------
# ---- samples against torch's G(z) from the same checkpoint --------------------------------------------
SAMPLE_RUNS = {  # overrides of config/tiny.yaml: the gray 32x32 model, and an RGB 64x64 one
    "gray32": [],
    "rgb64": ["model.resolution=64", "model.channels=3", "model.g_width=6", "model.d_width=6", "model.nz=12"],
}


def run_sample_case(exe, workdir):
    report = Report("sample_from_checkpoint")
    src = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
    for label, overrides in SAMPLE_RUNS.items():
        out = os.path.join(workdir, "sample_runs")
        # Six steps, so BN's running statistics (used in eval mode) are far from their initial 0 and 1.
        run_tool(exe, ["train", "--config", os.path.join(src, "config", "tiny.yaml"), f"run.out_dir={out}",
                       f"run.name={label}", "train.max_steps=6", "checkpoint.every_steps=0", *overrides])
        ckpt = os.path.join(out, label, "checkpoints", "ckpt_00000006.h5")
        samples = os.path.join(workdir, f"samples_{label}.h5")
        run_tool(exe, ["sample", "--checkpoint", ckpt, "--n", "7", "--seed", "3", "--out", samples])
        with h5py.File(samples, "r") as f:
            z, images = f["z"][()], f["images"][()]
        netG = load_from_checkpoint(ckpt, "G")
        netG.eval()
        with torch.no_grad():
            ref = netG(torch.from_numpy(z).view(z.shape[0], z.shape[1], 1, 1)).numpy()
        compare_relative(report, f"{label}/images", images, ref, FORWARD_TOL)
        # The test has teeth: train-mode BN (batch statistics) gives other images.
        netG.train()
        with torch.no_grad():
            other = netG(torch.from_numpy(z).view(z.shape[0], z.shape[1], 1, 1)).numpy()
        differs = float(np.max(np.abs(other - ref))) / float(np.max(np.abs(ref)))
        report.add(f"{label}/train-mode differs", ref.shape, differs, float(np.max(np.abs(ref))), differs,
                   "> 100 tol", differs > 100 * FORWARD_TOL)
        # D loads too (load_state_dict is strict: every name and shape of /D/params) and scores the samples.
        netD = load_from_checkpoint(ckpt, "D").eval()
        with torch.no_grad():
            logits = netD(torch.from_numpy(images)).numpy()
        scored = logits.shape == (images.shape[0],) and bool(np.all(np.isfinite(logits)))
        report.add(f"{label}/D from checkpoint", logits.shape, 0.0, float(np.max(np.abs(logits))), 0.0,
                   "loads, [N] finite", scored)
    return report


def case_main(doc, cases, run_case, prefix):
    """The command line of the oracle scripts whose cases all run through gt_oracle_tool (the objectives'
    and the penalty's): --tool, --keep, --verbose and CASE... or all; each case's report, exit 0 or 1."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tool", required=True, help="path of gt_oracle_tool")
    parser.add_argument("--keep", help="write the HDF5 files here and keep them (default: a temporary folder)")
    parser.add_argument("--verbose", action="store_true", help="print the table of errors also when passing")
    parser.add_argument("cases", nargs="+", choices=sorted(cases) + ["all"])
    args = parser.parse_args()
    chosen = sorted(cases) if "all" in args.cases else args.cases
    torch.set_num_threads(TORCH_THREADS)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, h5py {h5py.__version__}")
    failed = []
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        workdir = args.keep or tmp
        os.makedirs(workdir, exist_ok=True)
        for case in chosen:
            report = run_case(args.tool, case, workdir)
            if not report.ok() or args.verbose:
                report.print()
            if not report.ok():
                failed.append(case)
            print(f"{case}: {'PASS' if report.ok() else 'FAIL'} ({len(report.rows)} rows)")
    if failed:
        print(f"FAILED: {' '.join(failed)}")
        return 1
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tool", required=True, help="path of gt_oracle_tool")
    parser.add_argument("--exe", help="path of gantrain (for sample_from_checkpoint)")
    parser.add_argument("--keep", help="write the HDF5 files here and keep them (default: a temporary folder)")
    parser.add_argument("--verbose", action="store_true", help="print the table of errors also when passing")
    parser.add_argument("cases", nargs="+",
                        choices=sorted(DCGAN_CASES) + sorted(OPTIM_CASES) + ["sample_from_checkpoint", "all"])
    args = parser.parse_args()
    cases = sorted(DCGAN_CASES) + sorted(OPTIM_CASES) if "all" in args.cases else args.cases
    if "sample_from_checkpoint" in cases and not args.exe:
        parser.error("sample_from_checkpoint needs --exe (the gantrain program)")

    torch.set_num_threads(TORCH_THREADS)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, h5py {h5py.__version__}")
    if not torch.__version__.startswith("1.13"):
        print(f"note: the tolerances were set against torch 1.13, this is {torch.__version__}")

    failed = []
    with tempfile.TemporaryDirectory(prefix="gt_oracle_") as tmp:
        workdir = args.keep or tmp
        os.makedirs(workdir, exist_ok=True)
        for case in cases:
            if case == "sample_from_checkpoint":
                report = run_sample_case(args.exe, workdir)
            else:
                run = run_dcgan_case if case in DCGAN_CASES else run_optim_case
                report = run(args.tool, case, workdir)
            if not report.ok():
                failed.append(case)
                report.print()
            elif args.verbose:
                report.print()
            worst = max(report.rows, key=lambda r: r[4] if np.isfinite(r[4]) else np.inf)
            print(f"{case}: {'PASS' if report.ok() else 'FAIL'} ({len(report.rows)} tensors; largest relative "
                  f"error {worst[4]:.2e} in {worst[0]})")
    if failed:
        print(f"FAILED: {' '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
