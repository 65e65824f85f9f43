#!/usr/bin/python3
"""End-to-end: a tiny run's TensorBoard event files read with TensorBoard's own reader (EventAccumulator): tags, steps, scalars equal to metrics.jsonl in float32, the sample grids as PNGs; a resumed run adds a file of its own and replaces the steps it trains again."""
import glob
import json
import math
import os
import struct
import sys
import zlib

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "common"))
from gt_test import check, run, script_main, skip  # noqa: E402  (tests/common/gt_test.py)

# metrics.jsonl key -> TensorBoard tag, as tensorboard_tag in src/train/run_dir.cpp.
TAGS = {"d_loss": "loss/d", "g_loss": "loss/g", "d_real": "d/real", "d_fake": "d/fake", "d_grad_norm": "grad_norm/d",
        "g_grad_norm": "grad_norm/g", "lr_d": "lr/d", "lr_g": "lr/g", "images_per_sec": "speed/images_per_s",
        "epoch": "progress/epoch"}
# The timing breakdown (milliseconds per step): "ms_<part>" -> "time_ms/<part>".
TAGS.update({f"ms_{part}": f"time_ms/{part}" for part in (
    "g_forward", "d_forward_backward", "g_backward", "comm_wait", "optimizer", "step_other", "data", "rest", "step")})
# The SWD (log.swd_every_steps): "swd" -> "quality/swd", each level "swd_<res>" -> "quality/swd_<res>".
SWD_TAGS = {"swd": "quality/swd", "swd_32": "quality/swd_32", "swd_16": "quality/swd_16"}
GRID = 2 * (32 + 2) + 2  # config/tiny.yaml: 4 samples of 32x32, 2 per row, 2 pixels of padding


def venv_python(src):
    """The interpreter of scripts/tensorboard_venv.sh's virtual environment."""
    return os.path.join(os.environ.get("GANTRAIN_TB_VENV", os.path.join(src, ".venv-tb")), "bin", "python")


def train_tiny(exe, src, out_dir, *overrides, **kw):
    return run(exe, "train", "--config", os.path.join(src, "config/tiny.yaml"), f"run.out_dir={out_dir}", *overrides,
               **kw)


def event_files(run_dir):
    return sorted(glob.glob(os.path.join(run_dir, "events.out.tfevents.*")))


def metrics_lines(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def decode_png(data):
    """(width, height, channels) of an 8-bit gray or RGB PNG after checking every chunk's CRC and inflating its pixels."""
    check(data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG signature")
    at, idat, header = 8, b"", None
    while at < len(data):
        length, kind = struct.unpack(">I4s", data[at:at + 8])
        body = data[at + 8:at + 8 + length]
        check(struct.unpack(">I", data[at + 8 + length:at + 12 + length])[0] == zlib.crc32(kind + body),
              f"bad CRC in PNG chunk {kind}")
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        at += 12 + length
    width, height, depth, color = header[:4]
    check(depth == 8 and color in (0, 2), f"unexpected PNG depth {depth} color type {color}")
    channels = 1 if color == 0 else 3
    check(len(zlib.decompress(idat)) == height * (1 + width * channels), "PNG pixel data has the wrong size")
    return width, height, channels


def accumulate(run_dir):
    from tensorboard.backend.event_processing import event_accumulator as ea
    acc = ea.EventAccumulator(run_dir, size_guidance={ea.SCALARS: 0, ea.IMAGES: 0})
    acc.Reload()
    return acc


def check_against_metrics(run_dir, image_steps):
    """Every metrics.jsonl value is the scalar of its tag at its step (float32), and the images are the grids."""
    acc = accumulate(run_dir)
    lines = metrics_lines(run_dir)
    keys = [k for k in lines[0] if k != "step"]
    check(sorted(acc.Tags()["scalars"]) == sorted(TAGS[k] for k in keys),
          f"scalar tags {acc.Tags()['scalars']} for metrics keys {keys}")
    steps = [line["step"] for line in lines]
    for key in keys:
        events = acc.Scalars(TAGS[key])
        check([e.step for e in events] == steps, f"{TAGS[key]}: steps {[e.step for e in events]}, metrics.jsonl {steps}")
        for e, line in zip(events, lines):
            want = line[key]
            if want is None:  # not finite in metrics.jsonl (null): NaN or an infinity in TensorBoard
                check(not math.isfinite(e.value), f"{TAGS[key]} at step {e.step}: {e.value}, metrics.jsonl null")
            else:
                check(struct.pack("<f", e.value) == struct.pack("<f", want),
                      f"{TAGS[key]} at step {e.step}: {e.value} is not float32({want})")
    check(acc.Tags()["images"] == ["samples"], f"image tags {acc.Tags()['images']}")
    images = acc.Images("samples")
    check([e.step for e in images] == image_steps, f"image steps {[e.step for e in images]}, expected {image_steps}")
    for e in images:
        check((e.width, e.height) == (GRID, GRID), f"image at step {e.step} is {e.width}x{e.height}")
        check(decode_png(e.encoded_image_string) == (GRID, GRID, 1), f"image at step {e.step} does not decode")
        with open(os.path.join(run_dir, "samples", f"step_{e.step:08d}.png"), "rb") as f:
            check(f.read() == e.encoded_image_string, f"image at step {e.step} differs from its samples/ file")


def case_scalars_and_samples(exe, src, tmp):
    r = train_tiny(exe, src, tmp)
    check(r.returncode == 0, f"train failed: {r.stderr}")
    run_dir = os.path.join(tmp, "tiny")
    files = event_files(run_dir)
    check(len(files) == 1, f"expected one event file, got {files}")
    check(os.path.basename(files[0]).split(".")[3].isdigit(), f"no unix time in {files[0]}")
    check(len(metrics_lines(run_dir)) == 4, "config/tiny.yaml logs 4 steps")
    check_against_metrics(run_dir, [2, 4])
    # log.tensorboard false: no event file.
    r = train_tiny(exe, src, tmp, "run.name=off", "log.tensorboard=false")
    check(r.returncode == 0, f"train with log.tensorboard=false failed: {r.stderr}")
    check(event_files(os.path.join(tmp, "off")) == [], "log.tensorboard=false still wrote an event file")


def case_resume_new_file(exe, src, tmp):
    # Killed before step 4 (steps 1-3 logged, checkpoint at 2), then continued: steps 3 and 4 are trained and
    # logged again, into a second file whose START record makes TensorBoard drop the first file's step 3.
    env = dict(os.environ, GANTRAIN_TEST_KILL="step:4")
    r = train_tiny(exe, src, tmp, env=env)
    check(r.returncode == -9, f"expected the kill at step 4, got exit {r.returncode}: {r.stderr}")
    run_dir = os.path.join(tmp, "tiny")
    check(len(event_files(run_dir)) == 1, f"one event file before the resume: {event_files(run_dir)}")
    r = train_tiny(exe, src, tmp)
    check(r.returncode == 0, f"resume failed: {r.stderr}")
    check(len(event_files(run_dir)) == 2, f"the resume did not open a file of its own: {event_files(run_dir)}")
    check([line["step"] for line in metrics_lines(run_dir)] == [1, 2, 3, 4], "metrics.jsonl after the resume")
    check_against_metrics(run_dir, [2, 4])


def case_swd_scalars(exe, src, tmp):
    """The SWD's own metrics.jsonl lines (steps 0, 2, 4) become quality/ scalars at their steps, in float32."""
    r = train_tiny(exe, src, tmp, "log.swd_every_steps=2", "log.swd_images=16")
    check(r.returncode == 0, f"train failed: {r.stderr}")
    run_dir = os.path.join(tmp, "tiny")
    lines = [line for line in metrics_lines(run_dir) if "swd" in line]
    check([line["step"] for line in lines] == [0, 2, 4], f"swd lines at steps {[line['step'] for line in lines]}")
    acc = accumulate(run_dir)
    tags = acc.Tags()["scalars"]
    check(set(SWD_TAGS.values()) <= set(tags) and set(tags) <= set(SWD_TAGS.values()) | set(TAGS.values()),
          f"scalar tags {tags}")
    for key, tag in SWD_TAGS.items():
        events = acc.Scalars(tag)
        check([e.step for e in events] == [0, 2, 4], f"{tag}: steps {[e.step for e in events]}")
        for e, line in zip(events, lines):
            check(struct.pack("<f", e.value) == struct.pack("<f", line[key]),
                  f"{tag} at step {e.step}: {e.value} is not float32({line[key]})")
    print("swd scalars: " + ", ".join(f"{line['step']}: {line['swd']:.4f}" for line in lines))


CASES = {"scalars_and_samples": case_scalars_and_samples, "resume_new_file": case_resume_new_file,
         "swd_scalars": case_swd_scalars}


def main():
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        # Debian's python3 has no tensorboard: continue in the virtual environment of scripts/tensorboard_venv.sh.
        src = sys.argv[sys.argv.index("--source") + 1] if "--source" in sys.argv else "."
        python = venv_python(src)
        if os.access(python, os.X_OK) and not os.environ.get("GT_TB_REEXEC"):
            os.environ["GT_TB_REEXEC"] = "1"
            os.execv(python, [python, os.path.abspath(__file__), *sys.argv[1:]])
        return skip(f"the tensorboard package is missing ({python} not found or without it): "
                    "run bash scripts/tensorboard_venv.sh")
    return script_main(lambda args, tmp: CASES[args.case](args.exe, args.source, tmp), "tensorboard",
                       modules=("numpy", "tensorboard"))


if __name__ == "__main__":
    sys.exit(main())
