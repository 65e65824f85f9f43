#!/usr/bin/python3
"""Writes the seed corpus of the fuzz targets (tests/fuzz/corpus/<target>/): small valid files and damaged ones.

Usage: tests/fuzz/make_seed_corpus.py GANTRAIN_BINARY   (needs numpy, h5py and cjpeg from libjpeg-turbo-progs)
Files that a fuzzing run found (named found_*) are kept; everything else is rewritten.
"""
import gzip
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import h5py
import numpy as np

ROOT = Path(__file__).resolve().parent
REPO = ROOT.parent.parent
CORPUS = ROOT / "corpus"


def out(target, name, data):
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data)


def clear(target):
    d = CORPUS / target
    if d.exists():
        for f in d.iterdir():
            if not f.name.startswith("found_"):
                f.unlink()


def damaged(data, name, target, stem):
    """Truncated at half, and one byte flipped near the middle."""
    out(target, f"{stem}_truncated_half{Path(name).suffix}", data[: len(data) // 2])
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0x5A
    out(target, f"{stem}_flipped_middle{Path(name).suffix}", bytes(flipped))


# ---- config --------------------------------------------------------------------------------------
def configs():
    clear("config")
    for f in sorted((REPO / "config").glob("*.yaml")):
        out("config", f.name, f.read_bytes())
    tiny = (REPO / "config" / "tiny.yaml").read_bytes()
    out("config", "overrides_tiny.yaml", b"@train.max_steps=3\n@model.g_width=2\n@optim.g.lr=1e-3\n" + tiny)
    out("config", "override_without_equals.yaml", b"@train.max_steps\n" + tiny)
    out("config", "override_unknown_key.yaml", b"@train.max_stepz=3\n" + tiny)
    out("config", "override_yaml_list.yaml", b"@model.resolution=[1, 2]\n" + tiny)
    out("config", "unknown_key.yaml", b"train:\n  batch_sise: 8\n")
    out("config", "wrong_type.yaml", b"train:\n  batch_size: eight\nmodel:\n  nz: 1.5\n")
    out("config", "out_of_range.yaml", b"model:\n  resolution: 33\n  channels: 2\ntrain:\n  batch_size: -1\n")
    out("config", "bad_indent.yaml", b"train:\n  batch_size: 8\n   epochs: 1\n")
    out("config", "tabs.yaml", b"train:\n\tbatch_size: 8\n")
    out("config", "not_a_map.yaml", b"- 1\n- 2\n")
    out("config", "scalar_section.yaml", b"train: 5\nmodel: [1]\n")
    out("config", "anchors.yaml", b"optim:\n  g: &o {name: adam, lr: 0.001}\n  d: *o\n")
    out("config", "multi_document.yaml", b"train: {max_steps: 1}\n---\ntrain: {max_steps: 2}\n")
    out("config", "deep_nesting.yaml", b"train: " + b"[" * 200 + b"]" * 200 + b"\n")
    out("config", "huge_int.yaml", b"train:\n  max_steps: 99999999999999999999999\nrun:\n  seed: -9223372036854775808\n")
    out("config", "special_floats.yaml", b"optim:\n  g:\n    lr: .nan\n  d:\n    lr: -.inf\n")
    out("config", "empty.yaml", b"")
    out("config", "binary.yaml", bytes(range(256)))


# ---- image ---------------------------------------------------------------------------------------
def png_chunk(kind, payload):
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png(width, height, bit_depth, color_type, rows, extra=b""):
    raw = b"".join(b"\x00" + r for r in rows)
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + extra + png_chunk(b"IDAT", zlib.compress(raw, 9))
            + png_chunk(b"IEND", b""))


def exif_app1(orientation):
    """An APP1 segment (marker and length included): Exif, little-endian TIFF, IFD0 with one Orientation tag."""
    tiff = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 1)
    tiff += struct.pack("<HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack("<I", 0)
    payload = b"Exif\x00\x00" + tiff
    return b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload


def cjpeg(ppm, *args):
    return subprocess.run(["cjpeg", *args], input=ppm, capture_output=True, check=True).stdout


def images():
    clear("image")
    w, h = 8, 6
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    gray = rgb[:, :, 0]
    out("image", "gray8.png", png(w, h, 8, 0, [bytes(r) for r in gray]))
    out("image", "rgb8.png", png(w, h, 8, 2, [bytes(r) for r in rgb]))
    rgba = np.concatenate([rgb, rng.integers(0, 256, (h, w, 1), dtype=np.uint8)], axis=2)
    out("image", "rgba8.png", png(w, h, 8, 6, [bytes(r) for r in rgba]))
    out("image", "gray16.png", png(w, h, 16, 0, [r.astype(">u2").tobytes() for r in gray.astype(np.uint16) * 257]))
    out("image", "rgb16.png", png(w, h, 16, 2, [r.astype(">u2").tobytes() for r in rgb.astype(np.uint16) * 257]))
    out("image", "gray1.png", png(w, h, 1, 0, [bytes([0b10110010]) for _ in range(h)]))
    palette = png_chunk(b"PLTE", bytes(range(48))) + png_chunk(b"tRNS", bytes([0, 128, 255]))
    out("image", "palette4_trns.png", png(w, h, 4, 3, [bytes([0x01, 0x23, 0x45, 0x67]) for _ in range(h)], palette))
    valid = (CORPUS / "image" / "rgb8.png").read_bytes()
    out("image", "rgb8_truncated.png", valid[: len(valid) - 20])
    out("image", "png_huge_header.png", png(1 << 20, 1 << 20, 8, 2, [b"\x00\x00\x00"]))
    ppm = b"P6\n%d %d\n255\n" % (w, h) + rgb.tobytes()
    pgm = b"P5\n%d %d\n255\n" % (w, h) + gray.tobytes()
    base = cjpeg(ppm, "-quality", "90")
    out("image", "rgb.jpg", base)
    out("image", "gray.jpg", cjpeg(pgm))
    out("image", "progressive.jpg", cjpeg(ppm, "-progressive"))
    out("image", "exif_orientation6.jpg", base[:2] + exif_app1(6) + base[2:])
    out("image", "exif_orientation8.jpg", base[:2] + exif_app1(8) + base[2:])
    out("image", "rgb_truncated.jpg", base[: len(base) * 2 // 3])
    out("image", "gif_signature.gif", b"GIF89a" + bytes(10))


# ---- dataset -------------------------------------------------------------------------------------
def datasets(gantrain):
    clear("dataset")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "imgs").mkdir()
        for i, name in enumerate(["gray8.png", "rgb8.png", "palette4_trns.png"]):
            shutil.copy(CORPUS / "image" / name, tmp / "imgs" / f"{i}.png")
        subprocess.run([gantrain, "ingest", "--from", str(tmp / "imgs"), "--out", str(tmp / "ingest.h5"),
                        "--size", "4", "--channels", "3", "--threads", "1"], check=True, capture_output=True)
        ingested = (tmp / "ingest.h5").read_bytes()
        out("dataset", "ingest_3x4x4x3.h5", ingested)
        damaged(ingested, "x.h5", "dataset", "ingest")

        def h5(name, build):
            p = tmp / name
            with h5py.File(p, "w") as f:
                build(f)
            out("dataset", name, p.read_bytes())

        imgs = np.arange(2 * 4 * 4, dtype=np.uint8).reshape(2, 4, 4, 1)
        h5("h5py_contiguous_labels.h5", lambda f: (f.create_dataset("images", data=imgs),
                                                    f.create_dataset("labels", data=np.array([3, 7]))))
        h5("h5py_chunked_deflate.h5", lambda f: f.create_dataset("images", data=imgs, chunks=(1, 4, 4, 1),
                                                                 compression="gzip"))
        h5("h5py_float_images.h5", lambda f: f.create_dataset("images", data=imgs.astype(np.float32)))
        h5("h5py_three_dims.h5", lambda f: f.create_dataset("images", data=imgs[:, :, :, 0]))
        h5("h5py_label_mismatch.h5", lambda f: (f.create_dataset("images", data=imgs),
                                                 f.create_dataset("labels", data=np.array([1, 2, 3]))))
        h5("h5py_no_images.h5", lambda f: f.create_dataset("pixels", data=imgs))

        def attrs(f):
            f.create_dataset("images", data=imgs)
            f.attrs["format"] = "gantrain-dataset"
            f.attrs["format_version"] = 1
            f.attrs["count"] = 5
        h5("h5py_count_mismatch.h5", attrs)


# ---- checkpoint ----------------------------------------------------------------------------------
def checkpoints(gantrain):
    clear("checkpoint")
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([gantrain, "train", "--config", str(REPO / "config" / "tiny.yaml"), "model.g_width=1",
                        "model.d_width=1", "model.nz=2", "train.max_steps=1", "checkpoint.every_steps=1",
                        "log.sample_every_steps=0", f"run.out_dir={tmp}", "run.name=seed"],
                       check=True, capture_output=True)
        ckpt = sorted(Path(tmp).glob("seed/checkpoints/*.h5"))[-1].read_bytes()
    out("checkpoint", "tiny_width1.h5", ckpt)
    damaged(ckpt, "x.h5", "checkpoint", "tiny_width1")
    flipped = bytearray(ckpt)
    flipped[512 + 20] ^= 0x01  # in the superblock, after the digest block
    out("checkpoint", "tiny_width1_flipped_superblock.h5", bytes(flipped))
    out("checkpoint", "hdf5_signature_only.h5", ckpt[:8])
    older_format(ckpt)


def older_format(ckpt):
    """A format-2 checkpoint (no digest block, which load_checkpoint parses in a child process), and damaged copies."""
    with tempfile.TemporaryDirectory() as tmp:
        src, path = Path(tmp) / "format3.h5", Path(tmp) / "format2.h5"
        src.write_bytes(ckpt)
        with h5py.File(src, "r") as a, h5py.File(path, "w", libver=("v108", "v108")) as b:
            for name in a:
                if name != "meta":
                    a.copy(a[name], b, name=name)  # filters (Fletcher32) and attributes come along
            meta = b.create_group("meta")  # H5Ocopy of /meta (text attributes) crashes HDF5 1.10.8: copied by hand
            for key, value in a["meta"].attrs.items():
                meta.attrs[key] = value
            meta.attrs["format_version"] = np.int64(2)
        data = path.read_bytes()
    out("checkpoint", "tiny_width1_format2.h5", data)
    damaged(data, "x.h5", "checkpoint", "tiny_width1_format2")


# ---- idx -----------------------------------------------------------------------------------------
def idx():
    clear("idx")
    imgs = bytes(range(3 * 4 * 4))
    images = struct.pack(">IIII", 0x803, 3, 4, 4) + imgs
    labels = struct.pack(">II", 0x801, 3) + bytes([1, 2, 9])
    out("idx", "images_3x4x4.idx3", images)
    out("idx", "labels_3.idx1", labels)
    out("idx", "images_3x4x4.idx3.gz", gzip.compress(images, mtime=0))
    out("idx", "labels_3.idx1.gz", gzip.compress(labels, mtime=0))
    out("idx", "images_truncated.idx3", images[:-5])
    out("idx", "images_truncated.idx3.gz", gzip.compress(images, mtime=0)[:-12])
    out("idx", "images_trailing_byte.idx3", images + b"\x00")
    out("idx", "images_huge_dims.idx3", struct.pack(">IIII", 0x803, 0xFFFFFFFF, 0xFFFF, 0xFFFF) + imgs)
    out("idx", "images_float_type.idx3", struct.pack(">IIII", 0xD03, 3, 4, 4) + imgs)
    out("idx", "header_cut.idx3", images[:9])


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    gantrain = sys.argv[1]
    configs()
    images()
    datasets(gantrain)
    checkpoints(gantrain)
    idx()
    total = sum(f.stat().st_size for f in CORPUS.rglob("*") if f.is_file())
    print(f"corpus: {sum(1 for f in CORPUS.rglob('*') if f.is_file())} files, {total} bytes")


if __name__ == "__main__":
    main()
