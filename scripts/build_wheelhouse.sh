#!/usr/bin/env bash
# scripts/build_wheelhouse.sh DEST_DIR
#
# Builds, on a machine with PyPI access, the wheel set that SGLang 0.5.17 needs
# on an air-gapped CUDA machine, trimmed to fit one 64 MiB upload (about 47 MB).
# Carry DEST_DIR to the GPU machine and `source scripts/bootstrap_gpu.sh DEST_DIR`
# there.
#
#   bash scripts/build_wheelhouse.sh .devwork/wheels
#
# Target interpreter: the wheels are chosen for the GPU machine, not for this
# one: CPython 3.12, x86-64 manylinux, with torch 2.11 (cu130), triton 3.6 and
# the usual scientific/HTTP stack already installed there. Only what such an
# image lacks is downloaded (53 pinned wheels, listed below with the reason for
# each). For another image, edit PKGS.
#
# Why trimmed: the untrimmed set is about 490 MB (sglang-kernel alone is 383 MB).
# Trimming and xz keep it near 47 MB:
#   * sglang-kernel: drop FA3 (flash_ops), FlashMLA, InfLLM and the sm100 build.
#     H200 is sm90, so only sgl_kernel/sm90/common_ops is loaded. flashmla_ops and
#     spatial_ops are imported inside try/except, infllm_ops is loaded lazily, and
#     flash_ops is imported only by sgl_kernel.flash_attn (the "fa3" attention
#     backend). So start the server with --attention-backend triton or flashinfer.
#   * sglang: drop multimodal_gen/ (diffusion serving) and the optional Rust
#     extensions srt/server/_core (SGLANG_RUST_SERVER=1 only), srt/grpc/_core
#     (--grpc-port only) and srt/multimodal/_core (Inkling image preprocessing).
#   * xgrammar: drop the static library lib/libxgrammar.a (link-time only).
#   * a few wheels: remove debug info from .so files (strip --strip-debug). This
#     takes xgrammar's wheel from 45 MB to 1 MB and zstandard's from 5.5 to 0.9 MB.
# Each trimmed wheel keeps its name and version; RECORD is rewritten to match.
# The largest wheels (sglang, sglang-kernel, flashinfer, transformers, deep-gemm) are
# then stored uncompressed inside and xz-compressed outside, as NAME.whl.xz
# (flashinfer 15 -> 6 MB, transformers 11 -> 3 MB); bootstrap_gpu.sh unpacks them.
#
# transformers 5.12.1 and tokenizers 0.22.2 shadow an image's newer ones (5.17.0 / 0.23.2):
# sglang 0.5.17 pins transformers==5.12.1, and with 5.17.0 its import fails
# (ValueError: 'qwen3_asr' is already used by a Transformers config).
# transformers 5.12.1 checks tokenizers<=0.23.0 at import, hence tokenizers.
#
# Idempotent: downloads go to a cache folder (WHEEL_CACHE, default
# /tmp/sglang-wheel-cache) and are skipped when present; trimmed wheels are
# rebuilt only when missing (delete DEST_DIR after changing a trim rule); wheels
# in DEST_DIR that are not in the list below are removed, so DEST_DIR holds one
# version of each package. A fresh build takes about 2 minutes (xz -9e).
#
# Needs: python3 with pip (PYTHON overrides the interpreter), readelf and
# binutils' strip (optional: without strip the debug info stays and the set
# grows past 64 MiB), and network access to PyPI.
set -euo pipefail

DEST=${1:?usage: build_wheelhouse.sh DEST_DIR}
CACHE=${WHEEL_CACHE:-/tmp/sglang-wheel-cache}
mkdir -p "$DEST" "$CACHE"
DEST=$(cd "$DEST" && pwd)
PY=${PYTHON:-python3}

# Wheels for the GPU machine's interpreter: CPython 3.12, x86-64 manylinux.
PIP_DL=("$PY" -m pip download -q --no-deps --only-binary=:all:
  --python-version 3.12 --implementation cp
  --platform manylinux_2_34_x86_64 --platform manylinux_2_31_x86_64
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
  --platform manylinux_2_26_x86_64 --platform manylinux_2_24_x86_64
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
  --platform manylinux_2_5_x86_64 --platform manylinux1_x86_64
  -d "$CACHE")

# Exactly the packages that the GPU image lacks
# and that `python3 -m sglang.launch_server` imports on the path we use
# (HTTP server, scheduler, model runner, Qwen3, triton/flashinfer attention,
# NGRAM/STANDALONE speculative decoding). One pinned version each.
PKGS=(
  # SGLang itself and its CUDA kernels
  sglang==0.5.17
  sglang-kernel==0.4.5
  flashinfer-python==0.6.15.post1
  apache-tvm-ffi==0.1.11          # JIT/FFI layer of flashinfer, sglang.kernels, xgrammar
  xgrammar==0.2.1                 # imported by server_args -> function_call parsers
  sgl-deep-gemm==0.1.5.post1      # EAGLE/STANDALONE cuda-graph capture imports dsa_backend -> deep_gemm
  transformers==5.12.1            # sglang's pin (the image has 5.17.0, see above)
  tokenizers==0.22.2              # transformers 5.12.1 wants <=0.23.0 (image: 0.23.2)
  # HTTP server
  fastapi==0.135.0
  starlette==0.52.1
  uvicorn==0.54.0
  python-multipart==0.0.34
  pydantic==2.12.5
  pydantic-core==2.41.5
  annotated-types==0.7.0
  typing-inspection==0.4.2
  # not typing-extensions: the image's is newer, and an older one on PYTHONPATH
  # breaks the image's anyio (ImportError: cannot import name 'sentinel').
  # IPC / serialisation / misc imported at module level
  pyzmq==27.3.0
  msgspec==0.22.0
  orjson==3.13.0
  pybase64==1.5.1
  setproctitle==1.3.8
  zstandard==0.25.0
  partial-json-parser==0.2.1.1.post7
  dill==0.4.1
  gguf==0.19.0
  compressed-tensors==0.20.0
  loguru==0.7.3                   # compressed-tensors
  jsonschema==4.26.0
  jsonschema-specifications==2025.9.1
  referencing==0.37.0
  rpds-py==2026.9.1
  openai==2.6.1                   # entrypoints/openai/realtime
  distro==1.9.0
  jiter==0.19.0
  sniffio==1.3.1
  soundfile==0.14.0               # entrypoints/openai/realtime
  cffi==2.1.1
  pycparser==3.12
  # IPython: sglang/utils.py does `from IPython.display import HTML, display`
  ipython==9.18.1
  ipython-pygments-lexers==1.1.1
  decorator==5.3.1
  jedi==0.19.2
  parso==0.8.7
  matplotlib-inline==0.2.2
  pexpect==4.9.0
  ptyprocess==0.7.0
  prompt-toolkit==3.0.53
  wcwidth==0.9.4
  stack-data==0.6.3
  executing==2.3.0
  asttokens==3.0.2
  pure-eval==0.2.4
  traitlets==5.16.1
)

# name==version -> the wheel file's prefix (PEP 427: name with '-' and '.' as '_')
wheel_prefix() {
  local name=${1%%==*} ver=${1##*==}
  name=$(echo "$name" | tr 'A-Z' 'a-z' | sed 's/[-.]/_/g')
  echo "${name}-${ver}-"
}

# The cached wheel for name==version, or nothing (wheel names may differ in case).
cached_wheel() {
  local prefix f
  prefix=$(wheel_prefix "$1")
  shopt -s nocaseglob nullglob
  for f in "$CACHE/$prefix"*.whl; do echo "$f"; break; done
  shopt -u nocaseglob nullglob
}

# 1. Download what the cache lacks.
for spec in "${PKGS[@]}"; do
  if [ -z "$(cached_wheel "$spec")" ]; then
    echo "download $spec"
    "${PIP_DL[@]}" "$spec" 2>&1 | grep -v "^WARNING: Location" || true
  fi
done

# 2. Copy or trim each wheel into DEST; remember which files belong there.
TRIM_PY=$(cat <<'EOF'
# Rewrite a wheel: drop files matching the patterns, strip debug info from .so
# files that carry it, and rewrite RECORD (sha256 and size of each kept file).
# MODE deflate: a normal wheel at DST. MODE xz: the wheel's members stored
# uncompressed, the whole file xz-compressed, written to DST (NAME.whl.xz).
import base64, csv, fnmatch, hashlib, io, lzma, os, shutil, subprocess, sys, tempfile, zipfile
mode, src, dst, *drop = sys.argv[1:]
method = zipfile.ZIP_STORED if mode == "xz" else zipfile.ZIP_DEFLATED
strip = shutil.which("strip")
tmp = tempfile.mkdtemp()
zin = zipfile.ZipFile(src)
records, record_name = [], None
out = zipfile.ZipFile(dst + ".part", "w", method, compresslevel=9)
for info in zin.infolist():
    name = info.filename
    if name.endswith(".dist-info/RECORD"):
        record_name = name
        continue
    if any(fnmatch.fnmatch(name, p) for p in drop):
        continue
    data = zin.read(name)
    if strip and (".so" in os.path.basename(name)) and not name.endswith("/"):
        path = os.path.join(tmp, "x.so")
        with open(path, "wb") as f:
            f.write(data)
        has_debug = b".debug_info" in subprocess.run(
            ["readelf", "-S", path], capture_output=True).stdout
        if has_debug and subprocess.run([strip, "--strip-debug", path]).returncode == 0:
            data = open(path, "rb").read()
    out.writestr(info, data, compress_type=method, compresslevel=9)
    if not name.endswith("/"):
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        records.append((name, f"sha256={digest}", str(len(data))))
records.append((record_name, "", ""))
buf = io.StringIO()
csv.writer(buf, lineterminator="\n").writerows(records)  # quotes names with commas
out.writestr(record_name, buf.getvalue(), compress_type=method)
out.close()
if mode == "xz":
    with open(dst + ".part", "rb") as f:
        packed = lzma.compress(f.read(), preset=9 | lzma.PRESET_EXTREME)
    with open(dst + ".part", "wb") as f:
        f.write(packed)
os.replace(dst + ".part", dst)
shutil.rmtree(tmp)
EOF
)

KEEP=()
rm -f "$DEST"/*.part   # leftovers of an interrupted run
for spec in "${PKGS[@]}"; do
  src=$(cached_wheel "$spec")
  [ -n "$src" ] || { echo "missing wheel for $spec" >&2; exit 1; }
  base=$(basename "$src")
  case "$spec" in  # the largest wheels travel as NAME.whl.xz
    sglang==*|sglang-kernel==*|flashinfer-python==*|transformers==*|sgl-deep-gemm==*) base=$base.xz; mode=xz ;;
    *) mode=deflate ;;
  esac
  KEEP+=("$base")
  [ -s "$DEST/$base" ] && continue
  case "$spec" in
    sglang-kernel==*)
      "$PY" -c "$TRIM_PY" $mode "$src" "$DEST/$base" 'sgl_kernel/flash_ops*.so' \
        'sgl_kernel/flashmla_ops*.so' 'sgl_kernel/infllm_ops*.so' 'sgl_kernel/sm100/*' ;;
    sglang==*)
      "$PY" -c "$TRIM_PY" $mode "$src" "$DEST/$base" 'sglang/multimodal_gen/*' \
        'sglang/srt/server/_core*.so' 'sglang/srt/grpc/_core*.so' 'sglang/srt/multimodal/_core*.so' ;;
    xgrammar==*)
      "$PY" -c "$TRIM_PY" $mode "$src" "$DEST/$base" 'xgrammar/lib/*.a' ;;
    zstandard==*|pybase64==*|setproctitle==*|wcwidth==*|flashinfer-python==*|transformers==*|sgl-deep-gemm==*)
      "$PY" -c "$TRIM_PY" $mode "$src" "$DEST/$base" ;;   # strip debug info / repack only
    *)
      cp "$src" "$DEST/$base" ;;
  esac
  echo "wrote $base ($(du -h "$DEST/$base" | cut -f1))"
done

# 3. Remove anything in DEST that is not in the list (old versions, strays).
for f in "$DEST"/*.whl "$DEST"/*.whl.xz; do
  [ -e "$f" ] || continue
  b=$(basename "$f"); keep=0
  for k in "${KEEP[@]}"; do [ "$k" == "$b" ] && keep=1 && break; done
  [ $keep -eq 1 ] || { echo "remove stray $b"; rm -f "$f"; }
done

echo "wheels: $(ls "$DEST" | grep -c '\.whl')  total: $(du -cb "$DEST"/*.whl* | tail -1 | cut -f1) bytes ($(du -ch "$DEST"/*.whl* | tail -1 | cut -f1))"
