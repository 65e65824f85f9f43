#!/usr/bin/env bash
# Dry run of gpu_check.sh HERE: in a private mount namespace where the system's copies of the bundle's development files are hidden, unpacks the bundle and configures and builds against it, then reports where each library loads from.
#
# Usage: bench/gpu/verify_bundle.sh [--bundle DIR] [--build DIR] [--mpi] [-- gpu_check.sh arguments...]
#   default: --bundle build-bundle --build build-bundle-check, gpu_check.sh --build-only
# Needs root and unshare(1). Hidden: every file that a bundled -dev package, pkgconf or Open MPI's
# packages installed under /usr/include, /usr/bin, /usr/lib/<triplet>, /usr/lib/cmake, /usr/share/cmake
# and /usr/share/pkgconfig. Each of those folders is replaced by a tree of symbolic links to the real
# one (reached through a second mount under /tmp/gt-verify-<uid>) with the hidden files left out, so compilers
# and CMake keep working while FindXXX, pkg-config and the compiler's header search cannot see the
# system's copies. Run-time libraries stay visible (cmake itself needs libcurl): the ldd listing at the
# end shows whether the built tests load the bundle's copies (through their RPATH) or the system's.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
bundle="$repo/build-bundle"
build="$repo/build-bundle-check"
check_args=(--build-only)
while [[ $# -gt 0 ]]; do
  case "$1" in
    --bundle) bundle=$(cd "$2" && pwd); shift 2 ;;
    --build) build=$2; shift 2 ;;
    --mpi) check_args+=(--mpi); shift ;;
    --) shift; check_args=("$@"); break ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "verify_bundle.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
[[ $(id -u) == 0 ]] || { echo "verify_bundle.sh: needs root (mount namespace)" >&2; exit 2; }
command -v unshare >/dev/null || { echo "verify_bundle.sh: needs unshare(1)" >&2; exit 2; }
[[ -f $bundle/MANIFEST ]] || { echo "verify_bundle.sh: no bundle at $bundle" >&2; exit 2; }

# The installed files of the bundled development packages (runtime-only library packages stay visible).
# The second view of /usr and the link trees, at a fixed path so that the compiler's dependency files
# name the same headers from run to run (incremental builds); removed at exit.
work=/tmp/gt-verify-$(id -u)
rm -rf "$work"
mkdir -p "$work"
hidden="$work/hidden"
trap 'rm -rf "$work"' EXIT  # after unshare returns its mounts are gone: only links and empty folders remain
while read -r spec _; do
  name=${spec%%=*}
  case "$name" in
    # Files and links only: the folders they sit in (/usr/include, ...) are shared with everything else.
    *-dev|pkgconf|pkgconf-bin|openmpi-bin|openmpi-common)
      dpkg -L "$name" 2>/dev/null | while IFS= read -r f; do [[ -d $f && ! -L $f ]] || echo "$f"; done >> "$hidden" ;;
  esac
done < "$bundle/MANIFEST"
# Alternatives and generic names that point into those packages (cblas.h, libblas.so, mpicxx, pkg-config).
for f in /usr/include/*-linux-gnu/cblas.h /usr/include/*-linux-gnu/cblas-*.h /usr/lib/*-linux-gnu/libblas.so \
         /usr/lib/*-linux-gnu/liblapack.so /usr/lib/*-linux-gnu/libopenblas.so /usr/lib/*-linux-gnu/pkgconfig/blas.pc \
         /usr/lib/*-linux-gnu/pkgconfig/lapack.pc /usr/lib/*-linux-gnu/pkgconfig/openblas.pc /usr/bin/pkg-config \
         /usr/bin/mpicxx /usr/bin/mpic++ /usr/bin/mpicc /usr/bin/mpirun /usr/bin/mpiexec /usr/bin/h5cc /usr/bin/h5c++ \
         /usr/include/*-linux-gnu/mpi.h /usr/include/mpi.h /usr/lib/*-linux-gnu/libmpi.so /usr/lib/*-linux-gnu/libmpi_cxx.so \
         /usr/lib/*-linux-gnu/hdf5 /usr/include/hdf5 /usr/lib/*-linux-gnu/openmpi /usr/lib/*-linux-gnu/openblas-pthread; do
  [[ -e $f || -L $f ]] && echo "$f" >> "$hidden"
done
echo "verify_bundle.sh: hiding $(sort -u "$hidden" | wc -l) system paths of the bundled packages"

unshare -m --propagation private bash -s -- "$work" "$repo" "$bundle" "$build" "${check_args[@]}" <<'INNER'
set -euo pipefail
work=$1 repo=$2 bundle=$3 build=$4
shift 4
hidden="$work/hidden" view="$work/usr" farms="$work/farm"
mkdir -p "$view"
mount --bind /usr "$view"
python3 - "$hidden" "$view" "$farms" <<'PY'
import os, subprocess, sys
hidden_file, view, farms = sys.argv[1], sys.argv[2], sys.argv[3]
triplet = subprocess.run(["gcc", "-dumpmachine"], capture_output=True, text=True).stdout.strip()
roots = ["/usr/include", "/usr/bin", f"/usr/lib/{triplet}", "/usr/lib/cmake", "/usr/share/cmake", "/usr/share/pkgconfig"]
hidden = {os.path.normpath(p.strip()) for p in open(hidden_file) if p.strip()}
# A hidden folder hides everything under it.
def is_hidden(path):
    p = path
    while p not in ("/", ""):
        if p in hidden:
            return True
        p = os.path.dirname(p)
    return False
for root in roots:
    if not os.path.isdir(root):
        continue
    farm = farms + root
    os.makedirs(farm, exist_ok=True)
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        target_dir = os.path.join(farm, rel) if rel != "." else farm
        keep = []
        for d in dirnames:
            full = os.path.join(dirpath, d)
            if is_hidden(full):
                continue
            if os.path.islink(full):  # a link to a folder: mirror it as a link into the second view
                os.symlink(view + full[len("/usr"):], os.path.join(target_dir, d))
                continue
            os.makedirs(os.path.join(target_dir, d), exist_ok=True)
            keep.append(d)
        dirnames[:] = keep
        for f in filenames:
            full = os.path.join(dirpath, f)
            if not is_hidden(full):
                os.symlink(view + full[len("/usr"):], os.path.join(target_dir, f))
    print(farm, root)
PY
for root in /usr/include /usr/bin /usr/lib/$(gcc -dumpmachine) /usr/lib/cmake /usr/share/cmake /usr/share/pkgconfig; do
  [[ -d $farms$root ]] && mount --bind "$farms$root" "$root"
done
echo "inside: yaml-cpp header visible? $(ls /usr/include/yaml-cpp/yaml.h 2>/dev/null || echo no);" \
     "hdf5.h? $(ls /usr/include/hdf5/serial/hdf5.h 2>/dev/null || echo no); h5cc? $(command -v h5cc || echo no);" \
     "pkg-config? $(command -v pkg-config || echo no)"
"$repo/bench/gpu/gpu_check.sh" --bundle "$bundle" --build "$build" --results "$build/results" "$@" || status=$?
echo "== where the parity test's libraries load from (bundle: $build/bundle-root)"
ldd "$build/tests/gpu/test_gpu_parity" 2>/dev/null | grep -E "bundle-root|yaml|hdf5|fmt|png|jpeg|openblas|gfortran|curl|sz|aec|mpi|cudnn|cublas|not found" || true
exit ${status:-0}
INNER
