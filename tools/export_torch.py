#!/usr/bin/python3
"""Exports a gantrain checkpoint's networks as PyTorch state_dict files (G.pt, D.pt, and G_ema.pt when present)."""
# Usage: tools/export_torch.py CKPT.h5 --out DIR
#
# Each file is torch.save(module.state_dict()) of tools/torch_dcgan.py's Generator or Discriminator built
# from the checkpoint (load_from_checkpoint: the geometry from /meta's config, a strict load of every
# parameter and BatchNorm buffer of /<net>/params), so the tensors are the checkpoint's, bit for bit,
# and load back with strict=True into the same classes:
#     from torch_dcgan import Generator
#     netG = Generator(nz, g_width, channels, resolution); netG.load_state_dict(torch.load("G.pt")); netG.eval()
# The sizes are printed with each file written. A format-3 checkpoint's digest block (docs/formats.md) is
# checked first when the xxhash module is present (Debian's python3-xxhash), so a damaged or edited-but-not-
# resealed file is refused; HDF5 verifies the chunk checksums as h5py reads the tensors.
# Exit codes: 0 written; 2 bad input (missing file, not a gantrain checkpoint, damaged, a model torch_dcgan
# does not define), one line naming the file; 1 anything else (e.g. the output folder is not writable).
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_dcgan import load_from_checkpoint  # noqa: E402  (tools/torch_dcgan.py)

DIGEST_BLOCK = 512  # src/io/checkpoint.cpp: the user block holding a format-3 checkpoint's size and digest
MAGIC = b"gantrain checkpoint\n"
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


class UserError(Exception):
    """Bad input: reported as one line, exit 2."""


def check_digest_block(path):
    """Refuses what gantrain's load_checkpoint refuses before HDF5 parses the file (docs/formats.md, Integrity)."""
    with open(path, "rb") as f:
        head = f.read(DIGEST_BLOCK + len(HDF5_SIGNATURE))
    if head.startswith(HDF5_SIGNATURE):
        return  # formats 1 and 2: no digest block; h5py's checks below are all there is
    if not head.startswith(MAGIC):
        if head[DIGEST_BLOCK:].startswith(HDF5_SIGNATURE):
            raise UserError(f"checkpoint {path} is damaged: its digest block (the first 512 bytes) is damaged")
        raise UserError(f"{path} is not a gantrain checkpoint: it is not an HDF5 file")
    fields = {}
    for line in head[:DIGEST_BLOCK].split(b"\0", 1)[0].decode("ascii", "replace").splitlines()[1:]:
        key, _, value = line.partition(" ")
        fields[key] = value
    try:
        size, digest = int(fields["bytes"]), fields["xxh3_128"]
    except (KeyError, ValueError):
        raise UserError(f"checkpoint {path} is damaged: its digest block (the first 512 bytes) is damaged") from None
    actual = os.path.getsize(path)
    if actual < size:
        raise UserError(f"checkpoint {path} is truncated (it has {actual} of its {size} bytes)")
    if actual > size:
        raise UserError(f"checkpoint {path} is damaged: {actual - size} bytes were added after its {size}")
    try:
        import xxhash
    except ImportError:
        print(f"export_torch: warning: no xxhash module, the digest of {path} is not checked "
              "(HDF5's chunk checksums still are)", file=sys.stderr)
        return
    h = xxhash.xxh3_128()
    with open(path, "rb") as f:
        f.seek(DIGEST_BLOCK)
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    if h.hexdigest() != digest:
        raise UserError(f"checkpoint {path} is corrupt: its contents do not match the digest written with it")


def networks_in(path):
    """The networks the checkpoint holds ("G", "D", and "G_ema" when present), after the structural checks."""
    import h5py
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise UserError(f"{path} is not a gantrain checkpoint: h5py cannot open it ({e})") from None
    with f:
        if "meta" not in f or "config" not in f["meta"].attrs:
            raise UserError(f"{path} is not a gantrain checkpoint: it has no /meta config")
        for net in ("G", "D"):
            if f"{net}/params" not in f:
                raise UserError(f"{path} is not a gantrain checkpoint: it has no /{net}/params")
        return ["G", "D"] + (["G_ema"] if "G_ema/params" in f else [])


def one_line(e):
    return " ".join(str(e).split())


def export(path, out_dir):
    """Writes DIR/NET.pt for each network of the checkpoint; returns [(file, network, tensor count, bytes)]."""
    import torch
    if not os.path.exists(path):
        raise UserError(f"{path}: no such file")
    if not os.path.isfile(path):
        raise UserError(f"{path} is not a file")
    check_digest_block(path)
    nets = {}
    for which in networks_in(path):
        try:
            nets[which] = load_from_checkpoint(path, which)
        except (KeyError, ValueError, RuntimeError, OSError) as e:
            # A config without the model keys, another arch, or tensors whose names or shapes the strict
            # load refuses, or a chunk whose checksum HDF5 rejects.
            raise UserError(f"checkpoint {path} cannot be exported as {which}: {one_line(e)}") from None
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for which, net in nets.items():
        state = net.state_dict()
        target = os.path.join(out_dir, f"{which}.pt")
        tmp = target + ".tmp"
        torch.save(state, tmp)
        os.replace(tmp, target)  # no half-written G.pt if the export is cut short
        written.append((target, net, len(state), os.path.getsize(target)))
    return written


def main():
    ap = argparse.ArgumentParser(description=__doc__.strip())
    ap.add_argument("checkpoint", help="a gantrain checkpoint (runs/NAME/checkpoints/ckpt_*.h5)")
    ap.add_argument("--out", required=True, help="folder for G.pt, D.pt (and G_ema.pt); made if missing")
    args = ap.parse_args()
    try:
        written = export(args.checkpoint, args.out)
    except UserError as e:
        print(f"export_torch: error: {e}", file=sys.stderr)
        return 2
    for target, net, count, size in written:
        params = sum(p.numel() for p in net.parameters())
        print(f"wrote {target}: {type(net).__name__} state_dict, {count} tensors ({params:,} parameters "
              f"and the BatchNorm buffers), {size:,} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
