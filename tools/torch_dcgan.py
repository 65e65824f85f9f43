"""The classic PyTorch DCGAN with gantrain's parameter names, its weight init, and a loader of gantrain checkpoints."""
# One definition for the oracle tests (tests/oracle), the PyTorch benchmarks (bench/cpu_vs_torch,
# bench/torch_side_by_side) and export: the layers are those of pytorch/examples' dcgan without the
# final Sigmoid (D gives logits, for BCEWithLogitsLoss), held in an nn.Sequential named `main`, so a
# state_dict's names ("main.0.weight", "main.1.running_mean", ...) are those of /G/params and /D/params
# in a gantrain checkpoint. Needs torch; load_from_checkpoint also needs h5py, numpy and yaml.
import torch.nn as nn


def stages_for(resolution):
    """Stride-2 layers after the first one of G (or before the last one of D): 32 -> 3, 64 -> 4, 128 -> 5."""
    return {32: 3, 64: 4, 128: 5}[resolution]


class Generator(nn.Module):
    """z [N, nz, 1, 1] -> images [N, nc, resolution, resolution] in (-1, 1); ngf is the last hidden width."""

    def __init__(self, nz, ngf, nc, resolution, g_norm="batch"):
        """g_norm (model.g_norm): batch (BatchNorm2d), layer (GroupNorm(1, C)) or none (biases instead)."""
        super().__init__()
        if g_norm not in ("batch", "layer", "none"):
            raise ValueError(f"g_norm must be batch, layer or none, not {g_norm!r}")
        stages = stages_for(resolution)
        width = ngf * 2 ** (stages - 1)

        def block(cin, cout, k, s, p):
            norm = {"batch": [nn.BatchNorm2d(cout)], "layer": [nn.GroupNorm(1, cout)], "none": []}[g_norm]
            return [nn.ConvTranspose2d(cin, cout, k, s, p, bias=g_norm == "none"), *norm, nn.ReLU(True)]

        layers = block(nz, width, 4, 1, 0)
        for _ in range(stages - 1):
            layers += block(width, width // 2, 4, 2, 1)
            width //= 2
        layers += [nn.ConvTranspose2d(width, nc, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)

    def forward(self, z):
        return self.main(z)


class Discriminator(nn.Module):
    """images [N, nc, resolution, resolution] -> logits [N]; ndf is the first hidden width."""

    def __init__(self, ndf, nc, resolution, leaky_slope=0.2, d_norm="batch"):
        """d_norm (model.d_norm): batch (BatchNorm2d), layer (GroupNorm(1, C): gantrain's LayerNorm2d, per
        sample over C, H, W) or none (the hidden convolutions carry a bias instead)."""
        super().__init__()
        if d_norm not in ("batch", "layer", "none"):
            raise ValueError(f"d_norm must be batch, layer or none, not {d_norm!r}")
        stages = stages_for(resolution)
        width = ndf
        # In place as pytorch/examples' DCGAN, except for a critic that a gradient penalty differentiates twice.
        inplace = d_norm == "batch"
        layers = [nn.Conv2d(nc, width, 4, 2, 1, bias=False), nn.LeakyReLU(leaky_slope, inplace=inplace)]
        for _ in range(stages - 1):
            layers.append(nn.Conv2d(width, width * 2, 4, 2, 1, bias=d_norm == "none"))
            if d_norm == "batch":
                layers.append(nn.BatchNorm2d(width * 2))
            elif d_norm == "layer":
                layers.append(nn.GroupNorm(1, width * 2))
            layers.append(nn.LeakyReLU(leaky_slope, inplace=inplace))
            width *= 2
        layers += [nn.Conv2d(width, 1, 4, 1, 0, bias=False)]  # logits: BCEWithLogitsLoss instead of Sigmoid
        self.main = nn.Sequential(*layers)

    def forward(self, x):
        return self.main(x).view(-1)


def dcgan_weights_init(m):
    """DCGAN's init, for net.apply: convolutions N(0, 0.02), batch-norm weight N(1, 0.02) and bias 0."""
    name = m.__class__.__name__
    if name.find("Conv") != -1:
        nn.init.normal_(m.weight.data, 0.0, 0.02)
    elif name.find("BatchNorm") != -1:
        nn.init.normal_(m.weight.data, 1.0, 0.02)
        nn.init.constant_(m.bias.data, 0)


def load_from_checkpoint(path, which="G"):
    """The network `which` ("G", "D" or "G_ema") of a gantrain checkpoint, as a torch module in train mode.

    The geometry comes from the model section of the run's config (/meta attribute "config", YAML), the
    parameters and BatchNorm buffers from /<which>/params (load_state_dict is strict: every name and shape
    must match). Call .eval() for inference with the running statistics."""
    import h5py
    import numpy as np
    import torch
    import yaml

    if which not in ("G", "D", "G_ema"):
        raise ValueError(f"which must be G, D or G_ema, not {which!r}")
    with h5py.File(path, "r") as f:
        model = yaml.safe_load(f["meta"].attrs["config"])["model"]
        group = f"{which}/params"
        if group not in f:
            raise KeyError(f"{path} has no /{group}" + (" (the run had no EMA)" if which == "G_ema" else ""))
        state = {name: torch.from_numpy(np.array(ds[()])) for name, ds in f[group].items()}
    if model.get("arch", "dcgan") != "dcgan":
        raise ValueError(f"{path}: model.arch is {model['arch']!r}; only dcgan is defined here")
    if which == "D":
        net = Discriminator(model["d_width"], model["channels"], model["resolution"],
                            leaky_slope=float(model.get("leaky_slope", 0.2)), d_norm=model.get("d_norm", "batch"))
    else:
        net = Generator(model["nz"], model["g_width"], model["channels"], model["resolution"],
                        g_norm=model.get("g_norm", "batch"))
    net.load_state_dict(state)
    return net
