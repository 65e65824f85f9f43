#!/usr/bin/env bash
# Run HERE (a Debian machine with gantrain's dependencies installed): downloads, with apt-get download, the Debian packages a GPU machine lacks to build gantrain (headers, CMake/pkg-config files, libraries) into build-bundle/, for bench/gpu/gpu_check.sh.
#
# Usage: bench/gpu/prepare_bundle.sh [--out DIR] [--no-mpi] [--limit-mib N] [--verify]
#   --out DIR       the bundle folder (default <repo>/build-bundle; build*/ is git-ignored, so name it in
#                   the device tool's `carry`)
#   --no-mpi        leave Open MPI out (gpu_check.sh builds with GANTRAIN_MPI=OFF unless asked otherwise)
#   --limit-mib N   fail when the bundle is larger (default 56: the device tool carries 64 MiB in all,
#                   the repository included)
#   --verify        then, in a private mount namespace (needs root) where the system's copies of the
#                   bundled headers, CMake packages and pkg-config files are hidden, run gpu_check.sh's
#                   unpack, configure and build steps against the bundle (the CUDA tests skip here)
#
# Which packages: the -dev packages named below, plus every package they depend on that is installed
# here, following Depends through run-time libraries but not into other -dev packages; the versions
# are the installed ones (the candidate version where the archive no longer has it). Left out: what
# any machine with a C++ compiler has (libc, libstdc++, libgcc, libgomp) and what the build never
# uses (HDF5's Fortran and C++ libraries' compilers, sources of GoogleTest and Catch2, the h5cc
# wrapper, whose absolute paths would point at the system).
# Writes <out>/debs/*.deb, <out>/MANIFEST (package=version and size, one a line) and <out>/SOURCE_COMMIT (git
# describe of this checkout, which gpu_check.sh records when the device machine's copy has no git and no
# --commit was given).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
out="$repo/build-bundle"
with_mpi=1
limit_mib=56
verify=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --out) out=$2; shift 2 ;;
    --no-mpi) with_mpi=0; shift ;;
    --limit-mib) limit_mib=$2; shift 2 ;;
    --verify) verify=1; shift ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "prepare_bundle.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done

top=(libyaml-cpp-dev libhdf5-dev libfmt-dev libspdlog-dev nlohmann-json3-dev libcli11-dev libpng-dev zlib1g-dev
     libgtest-dev libopenblas-dev libopenblas-pthread-dev libjpeg62-turbo-dev libxxhash-dev pkgconf pkgconf-bin)
if [[ $with_mpi == 1 ]]; then
  # The MPI library, its headers and mpirun; its fabric plugins (UCX, libfabric, PSM) stay behind:
  # Open MPI loads them at run time only where a network needs them.
  top+=(libopenmpi-dev libopenmpi3 openmpi-bin openmpi-common libhwloc15 libevent-core-2.1-7
        libevent-pthreads-2.1-7 libpmix2)
fi
# Full-name regular expression of packages never bundled (see the header).
exclude='libc6|libc6-dev|libc-dev-bin|linux-libc-dev|libgcc-s1|gcc-[0-9]+-base|libstdc\+\+6|libcrypt1|libcrypt-dev'
exclude+='|libnsl2|libnsl-dev|libtirpc.*|rpcsvc-proto|libgomp1|libhdf5-.*fortran.*|hdf5-helpers|catch2|googletest'
exclude+='|debconf|perl-base|dpkg|tar|coreutils|libselinux1|libpcre2-8-0|adduser|passwd|openssh-client|libfabric1'
exclude+='|libucx0|libpsm-infinipath1|libpsm2-2|libhwloc-plugins|libibverbs1|ibverbs-providers|libnl-.*|gfortran.*'
exclude+='|gcc.*|g\+\+.*|cpp.*|binutils.*|libbinutils|libxnvctrl0|libx11-.*|libxcb.*|libxau6|libxdmcp6|libxext6'

for tool in apt-get dpkg-query python3; do
  command -v "$tool" >/dev/null || { echo "prepare_bundle.sh: needs $tool (run it on the Debian build machine)" >&2; exit 2; }
done
for p in "${top[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
    { echo "prepare_bundle.sh: $p is not installed here; run scripts/install_deps.sh first" >&2; exit 2; }
done

# The dependency closure, from dpkg's database: alternatives resolve to what is installed here.
list=$(python3 - "${top[*]}" "$exclude" <<'PY'
import re, subprocess, sys
top, exclude = sys.argv[1].split(), re.compile(sys.argv[2])
fields = "${Package}\t${Version}\t${Status}\t${Pre-Depends}\t${Depends}\t${Provides}\n"
rows = subprocess.run(["dpkg-query", "-W", "-f=" + fields], capture_output=True, text=True, check=True).stdout
pkgs, provides = {}, {}
for line in rows.splitlines():
    name, version, status, pre, dep, prov = (line.split("\t") + [""] * 6)[:6]
    if "install ok installed" not in status:
        continue
    name = name.split(":")[0]
    pkgs[name] = (version, ", ".join(x for x in (pre, dep) if x))
    for p in prov.split(","):
        p = p.strip().split(" ")[0]
        if p:
            provides.setdefault(p, []).append(name)

def installed(alternatives):
    for alt in alternatives.split("|"):
        n = alt.strip().split(" ")[0].split(":")[0]
        if n in pkgs:
            return n
        if provides.get(n):
            return provides[n][0]
    return None

seen, chosen, stack = set(), [], list(top)
while stack:
    n = stack.pop()
    if n in seen:
        continue
    seen.add(n)
    if n not in top and exclude.fullmatch(n):
        continue
    chosen.append(n)
    for group in filter(None, (g.strip() for g in pkgs[n][1].split(","))):
        d = installed(group)
        # Other -dev packages are the build's business only when named at the top.
        if d and d not in seen and not (d.endswith("-dev") and d not in top):
            stack.append(d)
for n in sorted(chosen):
    print(f"{n}={pkgs[n][0]}")
PY
)

mkdir -p "$out/debs"
rm -f "$out"/debs/*.deb "$out/MANIFEST"
cd "$out/debs"
count=0
for spec in $list; do
  name=${spec%%=*}
  # The installed version when the archive still has it, else the archive's candidate.
  if ! apt-get download -q "$spec" >/dev/null 2>&1; then
    apt-get download -q "$name" >/dev/null 2>&1 || { echo "prepare_bundle.sh: cannot download $name" >&2; exit 1; }
    echo "prepare_bundle.sh: $spec is gone from the archive; took its candidate version" >&2
  fi
  count=$((count + 1))
done
for deb in *.deb; do
  printf '%s=%s %s\n' "$(dpkg-deb -f "$deb" Package)" "$(dpkg-deb -f "$deb" Version)" "$(stat -c %s "$deb")"
done | sort > "$out/MANIFEST"
git -C "$repo" describe --always --dirty > "$out/SOURCE_COMMIT" 2>/dev/null || echo unknown > "$out/SOURCE_COMMIT"
bytes=$(du -cb "$out"/debs/*.deb | tail -1 | cut -f1)
mib=$(( (bytes + 1048575) / 1048576 ))
echo "prepare_bundle.sh: $count packages, $bytes bytes ($mib MiB) in $out/debs (Open MPI: $([[ $with_mpi == 1 ]] && echo in || echo out))"
if (( mib > limit_mib )); then
  echo "prepare_bundle.sh: the bundle is over the $limit_mib MiB limit" >&2
  exit 1
fi

if [[ $verify == 1 ]]; then
  "$repo/bench/gpu/verify_bundle.sh" --bundle "$out"
fi
