#!/usr/bin/env bash
# scripts/bootstrap_gpu.sh [WHEEL_DIR]
#
# Sets up SGLang 0.5.17 and this checkout's jetspec_sglang on an air-gapped CUDA
# machine (no package registry). Run it from anywhere; source it to keep the
# environment:
#
#   source scripts/bootstrap_gpu.sh .devwork/wheels   # installs, exports, checks
#   bash   scripts/bootstrap_gpu.sh .devwork/wheels   # installs and checks only
#
# WHEEL_DIR (default .devwork/wheels) is what scripts/build_wheelhouse.sh wrote:
# NAME.whl files and, for the largest wheels, NAME.whl.xz (a wheel stored
# uncompressed, then xz'd to fit a 64 MiB upload), unpacked to a temporary
# folder first (Python's lzma: no xz binary needed).
#
# 1. Installs the wheels with `pip install --no-index --no-deps --target SITE`
#    (SITE defaults to /tmp/site; nothing is compiled). A marker file records
#    which wheel set SITE holds, so a second run on the same machine skips this.
#    On PYTHONPATH the wheels shadow the image's transformers/tokenizers (SGLang
#    pins transformers 5.12.1); nothing else of the image is replaced.
# 2. Makes this checkout importable without pip: <repo>/python goes first on
#    PYTHONPATH, and a minimal SITE/jetspec_sglang-VERSION.dist-info (METADATA,
#    entry_points.txt, generated from pyproject.toml) lets
#    importlib.metadata.entry_points(group="sglang.srt.plugins") find
#    `jetspec = jetspec_sglang.plugin:register`, which SGLang's load_plugins()
#    calls in every process it starts. SITE/bin/jetspec runs the CLI. This is
#    redone on every run, so edits to the checkout or pyproject.toml apply.
# 3. Exports PYTHONPATH, PATH, CUDA_HOME (for flashinfer / sglang JIT builds),
#    HF_HUB_OFFLINE=1, TRANSFORMERS_OFFLINE=1, FLASHINFER_CUDA_ARCH_LIST
#    (default 9.0a, Hopper), TORCH_CUDA_ARCH_LIST (default 9.0) and
#    PYTHONUNBUFFERED=1. Set the arch variables first on other GPUs.
# 4. Imports torch, sgl_kernel, flashinfer, sglang and sglang.srt.server_args,
#    and resolves the jetspec plugin entry point (without calling it).
#
# Afterwards `python3 -m sglang.launch_server ... --attention-backend triton`
# works (the trimmed wheel set has no FA3, so always name the backend).
# Needs: Python >= 3.11 with pip (PYTHON overrides python3), and a CUDA image
# with torch, triton and the rest that build_wheelhouse.sh does not ship.

_bs_wheels=${1:-.devwork/wheels}
_bs_repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SITE=${SITE:-/tmp/site}
_bs_py=${PYTHON:-python3}

_bs_install() {
  local stamp marker xzdir
  stamp=$(ls "$_bs_wheels" | grep '\.whl' | sort | md5sum | cut -c1-16)
  marker="$SITE/.bootstrap-$stamp"
  if [ -e "$marker" ]; then
    echo "bootstrap: $SITE already holds these wheels, install skipped"
    return 0
  fi
  xzdir=$(mktemp -d)
  rm -rf "$SITE" && mkdir -p "$SITE"
  "$_bs_py" - "$_bs_wheels" "$xzdir" <<'EOF' || return 1
import glob, lzma, os, shutil, sys
for f in glob.glob(os.path.join(sys.argv[1], "*.whl.xz")):
    with lzma.open(f) as src, open(os.path.join(sys.argv[2], os.path.basename(f)[:-3]), "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 24)
EOF
  "$_bs_py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    --disable-pip-version-check --target "$SITE" \
    $(ls "$_bs_wheels"/*.whl "$xzdir"/*.whl 2>/dev/null) 2>&1 \
    | grep -v "Running pip as the 'root' user" || true
  rm -rf "$xzdir"
  [ -d "$SITE/sglang" ] || { echo "bootstrap: install failed" >&2; return 1; }
  touch "$marker"
}

# The checkout as an installed distribution, as far as importlib.metadata can tell.
_bs_register_checkout() {
  "$_bs_py" - "$_bs_repo" "$SITE" <<'EOF'
import os, shutil, sys, tomllib
repo, site = sys.argv[1:]
with open(os.path.join(repo, "pyproject.toml"), "rb") as f:
    project = tomllib.load(f)["project"]
name, version = project["name"], project["version"]
for old in os.listdir(site):  # an earlier version's metadata
    if old.startswith("jetspec_sglang-") and old.endswith(".dist-info"):
        shutil.rmtree(os.path.join(site, old))
info = os.path.join(site, f"{name.replace('-', '_')}-{version}.dist-info")
os.makedirs(info)
with open(os.path.join(info, "METADATA"), "w") as f:
    f.write(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
groups = dict(project.get("entry-points", {}))
groups["console_scripts"] = project.get("scripts", {})
with open(os.path.join(info, "entry_points.txt"), "w") as f:
    for group, eps in groups.items():
        f.write(f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items()) + "\n")
with open(os.path.join(info, "top_level.txt"), "w") as f:
    f.write("jetspec_sglang\n")
os.makedirs(os.path.join(site, "bin"), exist_ok=True)
for script, target in groups["console_scripts"].items():
    module, func = target.split(":")
    path = os.path.join(site, "bin", script)
    with open(path, "w") as f:
        f.write(f"#!/usr/bin/env python3\nimport sys\nfrom {module} import {func}\n"
                f"if __name__ == '__main__':  # spawned children (SGLang's scheduler) re-import this file\n"
                f"    sys.exit({func}())\n")
    os.chmod(path, 0o755)
EOF
}

_bs_main() {
  local t0 t1
  [ -d "$_bs_wheels" ] || { echo "bootstrap: no wheel folder $_bs_wheels" >&2; return 1; }
  t0=$(date +%s.%N)
  _bs_install || return 1
  _bs_register_checkout || { echo "bootstrap: could not register $_bs_repo" >&2; return 1; }
  t1=$(date +%s.%N)
  echo "bootstrap: install $(awk "BEGIN{printf \"%.1f\", $t1 - $t0}") s, $(du -sh "$SITE" | cut -f1) in $SITE"

  export PYTHONPATH="$_bs_repo/python:$SITE${PYTHONPATH:+:$PYTHONPATH}"
  export PATH="$SITE/bin:$PATH"
  if [ -z "${CUDA_HOME:-}" ]; then
    if command -v nvcc >/dev/null; then CUDA_HOME=$(dirname "$(dirname "$(command -v nvcc)")")
    else CUDA_HOME=/usr/local/cuda; fi
    export CUDA_HOME
  fi
  export PATH="$CUDA_HOME/bin:$PATH"
  export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
  export FLASHINFER_CUDA_ARCH_LIST=${FLASHINFER_CUDA_ARCH_LIST:-9.0a}
  export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
  export PYTHONUNBUFFERED=1

  "$_bs_py" - <<'EOF' || return 1
import time
t = time.time()
from importlib.metadata import entry_points
import torch, triton, transformers
import sgl_kernel, flashinfer, sglang
from sglang.srt.server_args import ServerArgs  # pulls most of sglang.srt
plugins = {ep.name: ep for ep in entry_points(group="sglang.srt.plugins")}
if "jetspec" not in plugins:
    raise SystemExit("bootstrap: the jetspec sglang.srt.plugins entry point is not visible")
plugins["jetspec"].load()
print(f"bootstrap: import ok in {time.time() - t:.1f} s: sglang {sglang.__version__}, "
      f"sgl_kernel {sgl_kernel.__version__}, flashinfer {flashinfer.__version__}, "
      f"torch {torch.__version__}, triton {triton.__version__}, transformers {transformers.__version__}, "
      f"plugin {plugins['jetspec'].value} ({plugins['jetspec'].dist.name} {plugins['jetspec'].dist.version}), "
      f"gpu {torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}")
EOF
}

if [ "${BASH_SOURCE[0]}" == "$0" ]; then
  set -uo pipefail
  _bs_main; exit $?
else
  _bs_main
fi
