# carry: .devwork/wheels .devwork/m1
mkdir -p /tmp/wheels && cp -r .devwork/wheels/. /tmp/wheels/
source scripts/device_session/common.sh
python3 scripts/assemble_model.py .devwork/m1; echo "assemble rc=$? (3 = parts still missing)"
