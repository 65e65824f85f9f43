#!/usr/bin/env python3
"""Layers that only point down: every #include "..." in src/ and cuda/ against the layer table of docs/architecture.md.

The table (between the markers <!-- layers --> and <!-- /layers --> in docs/architecture.md) gives each
module folder a layer number. A file may include headers of its own module and of modules in lower
layers only; an include must name its module folder ("cuda/conv.h", never "conv.h"). Prints every
violation with file and line; exit 1 if there is any, 0 otherwise.

Usage: check_layers.py SOURCE_DIR
"""
import os
import re
import sys

INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"')
ROW = re.compile(r"^\|\s*(\d+)\s*\|([^|]*)\|")


def read_layers(doc):
    text = open(doc, encoding="utf-8").read()
    start, end = text.find("<!-- layers -->"), text.find("<!-- /layers -->")
    if start < 0 or end < start:
        raise SystemExit(f"{doc}: no layer table between <!-- layers --> and <!-- /layers -->")
    layers = {}
    for line in text[start:end].splitlines():
        m = ROW.match(line.strip())
        if not m:
            continue
        for folder in re.findall(r"`([^`]+)`", m.group(2)):
            layers[folder.rstrip("/")] = int(m.group(1))
    if not layers:
        raise SystemExit(f"{doc}: the layer table has no rows")
    return layers


def module_of(path, layers):
    """The module folder a repository path belongs to ("src/nn/cpu/conv.cpp" -> "src/nn")."""
    parts = path.split("/")
    for n in range(len(parts) - 1, 0, -1):
        folder = "/".join(parts[:n])
        if folder in layers:
            return folder
    return None


def main():
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    root = sys.argv[1]
    layers = read_layers(os.path.join(root, "docs", "architecture.md"))
    # An include "x/y.h" names the module src/x, or x itself (cuda/ sits at the repository root).
    def target_module(inc):
        head = inc.split("/")[0]
        for candidate in (f"src/{head}", head):
            if candidate in layers:
                return candidate
        return None

    problems, files, includes = [], 0, 0
    for top in ("src", "cuda"):
        for dirpath, _, names in os.walk(os.path.join(root, top)):
            for name in sorted(names):
                if not name.endswith((".h", ".cpp", ".cu", ".cuh")):
                    continue
                path = os.path.relpath(os.path.join(dirpath, name), root)
                mine = module_of(path, layers)
                if mine is None:
                    problems.append(f"{path}: in no module of the layer table")
                    continue
                files += 1
                with open(os.path.join(root, path), encoding="utf-8") as f:
                    for lineno, line in enumerate(f, 1):
                        m = INCLUDE.match(line)
                        if not m:
                            continue
                        includes += 1
                        inc = m.group(1)
                        target = target_module(inc)
                        if "/" not in inc or target is None:
                            problems.append(f"{path}:{lineno}: #include \"{inc}\" does not name its module folder")
                        elif target != mine and layers[target] >= layers[mine]:
                            problems.append(f"{path}:{lineno}: #include \"{inc}\" points up or sideways: {mine} "
                                            f"(layer {layers[mine]}) may not include {target} (layer {layers[target]})")
    for p in problems:
        print(p)
    print(f"{files} files, {includes} includes checked against {len(layers)} modules: "
          f"{len(problems)} problem{'s' if len(problems) != 1 else ''}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
