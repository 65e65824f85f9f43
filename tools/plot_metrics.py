#!/usr/bin/python3
"""Plots a run's metrics.jsonl (losses, D outputs, gradient norms, images/s, learning rates, SWD) into one PNG."""
# Usage: tools/plot_metrics.py RUN_DIR_or_metrics.jsonl [--out PNG] [--only KEY,...]   (default: RUN_DIR/plots.png)
#
# One panel per family of keys (docs/formats.md, metrics.jsonl), each over `step`: D and G losses;
# D(x) and D(G(z)); the gradient norms; images/s; the learning rates; `swd` and its levels `swd_<res>`
# when lines have them; then one panel per other numeric key a run may add. A key's line joins the steps
# that have it; nulls (non-finite values) leave gaps. Panels sit in two columns (one for a single
# panel), each PANEL_W x PANEL_H pixels, so the PNG is 2*PANEL_W wide and PANEL_H per row tall. --only
# keeps the panels that show one of the given keys.
# A run killed while writing leaves a truncated last line: it is skipped with a warning. Any other line
# that is not a JSON object with a numeric `step` is an error. Lines of one step are merged in file order
# (the SWD's line of a step sits beside the regular one), a key given twice takes the last value (a
# resumed run drops the lines it trains again, so that should not happen).
# Needs matplotlib (Debian's python3-matplotlib); uses the Agg backend, no display.
# Exit codes: 0 written; 2 bad input (missing, empty or garbled file), one line naming the file.
import argparse
import json
import math
import os
import sys

PANEL_W, PANEL_H, DPI = 600, 300, 100
COLUMNS = 2
# (title, keys, y axis scale): the families the trainer writes, in panel order.
FAMILIES = [
    ("losses", ["d_loss", "g_loss"], "linear"),
    ("D(x) and D(G(z))", ["d_real", "d_fake"], "linear"),
    ("gradient norms (before clipping)", ["d_grad_norm", "g_grad_norm"], "log"),
    ("images/s", ["images_per_sec"], "linear"),
    ("learning rates", ["lr_g", "lr_d"], "linear"),
    ("sliced Wasserstein distance (x1e3)", ["swd"], "linear"),
    ("time per step (ms)", ["ms_step", "ms_data", "ms_g_forward", "ms_d_forward_backward", "ms_g_backward",
                            "ms_comm_wait", "ms_optimizer", "ms_step_other", "ms_rest"], "log"),
]
LABELS = {"d_loss": "D loss", "g_loss": "G loss", "d_real": "D(x)", "d_fake": "D(G(z))",
          "d_grad_norm": "D", "g_grad_norm": "G", "images_per_sec": "images/s", "lr_g": "G", "lr_d": "D",
          "swd": "average", "ms_step": "whole step", "ms_data": "data", "ms_g_forward": "G forward",
          "ms_d_forward_backward": "D forward+backward", "ms_g_backward": "G backward", "ms_comm_wait": "comm wait",
          "ms_optimizer": "optimizer", "ms_step_other": "step other", "ms_rest": "rest"}
NOT_PANELS = {"step", "epoch"}  # the x axis, and the epoch (a straight line over steps: in the title instead)


class UserError(Exception):
    """Bad input: reported as one line, exit 2."""


def metrics_path(arg):
    """The metrics file and the default PNG for a run folder or a metrics file."""
    if os.path.isdir(arg):
        return os.path.join(arg, "metrics.jsonl"), os.path.join(arg, "plots.png")
    return arg, os.path.join(os.path.dirname(os.path.abspath(arg)), "plots.png")


def is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def read_metrics(path):
    """The records of a metrics.jsonl by step (lines of one step merged, last wins); a truncated last line is skipped."""
    if not os.path.isfile(path):
        raise UserError(f"{path}: no such file" if not os.path.exists(path) else f"{path} is not a file")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror}") from None
    lines = data.split(b"\n")
    complete_end = data.endswith(b"\n")
    records = {}
    cut = None  # the number of a truncated last line
    for number, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        last = number == len(lines) or (number == len(lines) - 1 and complete_end)
        try:
            rec = json.loads(raw.decode("utf-8"))
            if not isinstance(rec, dict) or not is_number(rec.get("step")):
                raise ValueError("not a JSON object with a numeric step")
        except ValueError as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            if last:
                cut = number
                continue
            raise UserError(f"{path}:{number} is not a metrics line ({str(e).splitlines()[0]})") from None
        records.setdefault(rec["step"], {}).update(rec)
    if not records:
        why = " (it is empty)" if not data.strip() else f" (line {cut} is cut short)" if cut else ""
        raise UserError(f"{path} has no metrics lines{why}")
    if cut:
        print(f"plot_metrics: warning: skipping the incomplete last line {cut} of {path} "
              f"(a run stopped while writing it?)", file=sys.stderr)
    return [records[s] for s in sorted(records)]


def panels_for(records):
    """[(title, keys, scale)] for the families present, then one panel per other numeric key."""
    present = set()
    for rec in records:
        present.update(k for k, v in rec.items() if is_number(v) or v is None)
    # The SWD's levels (swd_32, swd_16, ...) share its panel, finest first.
    levels = sorted((k for k in present if k.startswith("swd_") and k[4:].isdigit()), key=lambda k: -int(k[4:]))
    families = [(t, keys + levels if keys == ["swd"] else keys, scale) for t, keys, scale in FAMILIES]
    panels = [(title, [k for k in keys if k in present], scale) for title, keys, scale in families]
    panels = [p for p in panels if p[1]]
    known = {k for _, keys, _ in families for k in keys} | NOT_PANELS
    for key in sorted(present - known):
        if any(is_number(rec.get(key)) for rec in records):
            panels.append((key, [key], "linear"))
    return panels


def label(key):
    """The legend's name of a key: LABELS, an SWD level by its size ("32x32"), else the key."""
    if key.startswith("swd_") and key[4:].isdigit():
        return f"{key[4:]}x{key[4:]}"
    return LABELS.get(key, key)


def series(records, key):
    """(steps, values) of the steps that have the key, with NaN where it is null, so the line has a gap
    there; steps without the key (an SWD measured every 100 steps, logged every 25) are left out, so
    the line joins the points it has."""
    steps, values = [], []
    for rec in records:
        if key not in rec:
            continue
        v = rec[key]
        steps.append(rec["step"])
        values.append(float(v) if is_number(v) and math.isfinite(v) else math.nan)
    return steps, values


def plot(records, panels, out, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    columns = min(COLUMNS, max(1, len(panels)))
    rows = max(1, math.ceil(len(panels) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(columns * PANEL_W / DPI, rows * PANEL_H / DPI), dpi=DPI,
                             squeeze=False)
    for ax, (name, keys, scale) in zip(axes.flat, panels):
        for key in keys:
            steps, values = series(records, key)
            finite = [v for v in values if not math.isnan(v)]
            marker = "o" if len(steps) <= 30 else None
            ax.plot(steps, values, label=label(key), marker=marker, markersize=3)
            if scale == "log" and finite and min(finite) > 0:
                ax.set_yscale("log")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(True, alpha=0.3)
        if len(keys) > 1:
            ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    tmp = out + ".tmp.png"
    fig.savefig(tmp, dpi=DPI)  # no bbox_inches="tight": the size stays PANEL_W x PANEL_H per panel
    plt.close(fig)
    os.replace(tmp, out)
    return columns * PANEL_W, rows * PANEL_H


def main():
    ap = argparse.ArgumentParser(description=__doc__.strip())
    ap.add_argument("source", help="a run folder (runs/NAME) or its metrics.jsonl")
    ap.add_argument("--out", help="the PNG to write (default: plots.png beside metrics.jsonl)")
    ap.add_argument("--only", metavar="KEY[,KEY...]",
                    help="only the panels that show one of these keys (e.g. swd: the SWD and its levels)")
    args = ap.parse_args()
    path, default_out = metrics_path(args.source)
    out = args.out or default_out
    try:
        records = read_metrics(path)
    except UserError as e:
        print(f"plot_metrics: error: {e}", file=sys.stderr)
        return 2
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("plot_metrics: error: needs matplotlib (apt-get install python3-matplotlib; run with /usr/bin/python3)",
              file=sys.stderr)
        return 1
    panels = panels_for(records)
    if args.only:
        wanted = {k.strip() for k in args.only.split(",") if k.strip()}
        panels = [p for p in panels if wanted & set(p[1])]
        if not panels:
            print(f"plot_metrics: error: {path} has no panel with {', '.join(sorted(wanted))} (--only)", file=sys.stderr)
            return 2
    last = records[-1]
    run = os.path.basename(os.path.dirname(os.path.abspath(path)))
    epoch = f", epoch {last['epoch']:.2f}" if is_number(last.get("epoch")) else ""
    title = f"{run}: {len(records)} lines, steps {records[0]['step']}..{last['step']}{epoch}"
    width, height = plot(records, panels, out, title)
    print(f"wrote {out}: {len(panels)} panels ({', '.join(p[0] for p in panels)}), {width}x{height} px")
    return 0


if __name__ == "__main__":
    sys.exit(main())
