#!/usr/bin/env bash
# Run on a lent GPU machine, from the repository root (see make_kit.sh): install the carried wheels
# beside the machine's own torch, build the C PNG filter if a compiler is there, run the GPU tests,
# then bench/translate.py eager, compiled and with cuDNN's autotuner, each under a time limit so that a
# slow step cannot eat the others' device time. Output: $OUT/log.txt (tee it there).
set -uo pipefail
REPO="$(pwd)"
SITE=/tmp/site
python3 --version; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"
rm -rf "$SITE"
python3 -m pip install -q --no-deps --no-index --target "$SITE" .whl/*.whl 2>&1 | grep -v "as the .root. user" | tail -2
# The package layout without installing it: sim2real/{storage,models,tasks,flows} -> the top folders.
for d in storage models tasks flows; do ln -sfn "$REPO/$d" "$REPO/sim2real/$d"; done
if command -v gcc >/dev/null; then
    gcc -O3 -shared -fPIC $(python3 -c "import sysconfig; print('-I' + sysconfig.get_paths()['include'])") \
        storage/_pngfilter.c -o "storage/_pngfilter$(python3 -c "import sysconfig; print(sysconfig.get_config_var('EXT_SUFFIX'))")" \
        && echo "built the C PNG filter" || echo "C PNG filter not built: numpy filter"
else
    echo "no gcc: numpy PNG filter"
fi
export PYTHONPATH="$REPO:$SITE" OMP_WAIT_POLICY=PASSIVE PREFECT_HOME=/tmp/prefect-home
step() { local limit=$1; shift; echo "== $* (limit ${limit}s)"; timeout "$limit" "$@"; echo "== exit $?"; }
step 120 python3 -m pytest -q -m gpu -p no:cacheprovider tests
BENCH=(python3 bench/translate.py --device cuda --profile full --size 256x512 --frames 768
       --shard-samples 256 --decode-workers 4 --batch-size 32 --rounds 2)
step 150 "${BENCH[@]}"
step 170 "${BENCH[@]}" --compile
step 150 "${BENCH[@]}" --cudnn-benchmark
