# carry: .devwork/m2
source scripts/device_session/common.sh
python3 scripts/assemble_model.py .devwork/m2; echo "assemble rc=$? (3 = parts still missing)"
