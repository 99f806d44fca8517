# Run HERE (the CPU machine), not on the device. The committed reference head (31 MB) is part of the
# working tree that every device call uploads (64 MiB in all), which leaves too little room for the
# wheels and model chunks. `park` moves its weights into the git-ignored .devwork/head (carry that
# folder in the call that needs the head: it lands at .devwork/head/model.safetensors there);
# `restore` puts them back before committing. git sees the parked file as deleted until then.
set -euo pipefail
cd "$(dirname "$0")/../.."
weights=benchmark/artifacts/smollm2-135m-jetspec/model.safetensors
case "${1:-}" in
  park) mkdir -p .devwork/head && mv "$weights" .devwork/head/ && echo "parked $weights in .devwork/head/" ;;
  restore) mv .devwork/head/model.safetensors "$weights" && echo "restored $weights" ;;
  *) echo "usage: park_head.sh park|restore" >&2; exit 2 ;;
esac
