# Run HERE (the CPU machine), not on the device. Every device call uploads the working tree (tracked files)
# with its carry, 64 MiB in all. `park` moves what the device does not need out of the tree into the
# git-ignored .devwork: the committed reference head's weights (31 MB) into .devwork/head (carry that folder
# in the call that needs the head: it lands at .devwork/head/model.safetensors there), and the committed
# results (traces, logs, JSON; several MB) into .devwork/parked-results. `restore` puts both back before
# committing; git sees the parked files as deleted until then.
set -euo pipefail
cd "$(dirname "$0")/../.."
weights=benchmark/artifacts/smollm2-135m-jetspec/model.safetensors
case "${1:-}" in
  park)
    mkdir -p .devwork/head && mv "$weights" .devwork/head/ && echo "parked $weights in .devwork/head/"
    mkdir -p .devwork/parked-results && mv benchmark/results .devwork/parked-results/ \
      && echo "parked benchmark/results in .devwork/parked-results/" ;;
  restore)
    mv .devwork/head/model.safetensors "$weights" && echo "restored $weights"
    mv .devwork/parked-results/results benchmark/results && echo "restored benchmark/results" ;;
  *) echo "usage: park_head.sh park|restore" >&2; exit 2 ;;
esac
