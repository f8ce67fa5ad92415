# Sourced by scripts/gpu_ood_continue.sh and scripts/cpu_ood_continue.sh (continuing a shipped OOD pair).

# The training data of a shipped pair (empty for a pair this file does not know).
ood_default_data() {
    case $1 in
    gray) echo fashion-mnist-train ;;
    mnist) echo mnist-train ;;
    esac
}

# The '"init_from": ..., "model": ...' part of a TrainConfig that starts from one member's float file,
# models/ood/PAIR-MEMBER.safetensors.  The model block must match the file's configuration for
# warm_start to copy it, so it is read from the file.
ood_member_start() {
    PYTHONPATH=$PWD python3 -c "import json, sys
from nelloc.zoo import load_float_file
path = sys.argv[1]
print('\"init_from\":' + json.dumps(path) + ',\"model\":' + json.dumps(load_float_file(path).cfg.__dict__))" \
        "models/ood/$1-$2.safetensors"
}
