#!/usr/bin/env bash
# Prepare, on the dev machine, what a lent GPU machine needs to run our GPU checks in one short call.
#
# The device machine (see /work/.library/device/README.md) has its own python3 (3.12 when last seen)
# with its own torch, torchvision, numpy and pillow, and no network: everything else we import comes
# from here as cp312 wheels in .whl/ (git-ignored), which `run` carries over:
#
#   bash bench/gpu/make_kit.sh            # here, once per session (~40 MB from PyPI)
#   run(command="bash bench/gpu/run.sh 2>&1 | tee $OUT/log.txt", carry=[".whl"], timeout_s=590)
set -euo pipefail
cd "$(dirname "$0")/../.."
PY_VERSION="${PY_VERSION:-3.12}"
# The device brings these itself (CUDA builds of torch/torchvision, and what the machine had installed
# when last seen: compiled against its numpy or used by its torch): never download them here.
SKIP='^(torch|torchvision|numpy|pillow|pyarrow|psutil|pyyaml|regex|markupsafe|msgpack|safetensors|triton|nvidia[-_].*|sympy|mpmath|networkx|jinja2|filelock|typing[-_]extensions|setuptools)-'
# Our runtime dependencies (pyproject) plus pytest, resolved for the device's python at the versions in
# .venv (constraints), without torch and torchvision.
.venv/bin/python - > /tmp/gpu-kit-requirements.txt <<'PY'
import tomllib
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
print("\n".join(d for d in deps if not d.startswith(("torch", "torchvision"))))
print("pytest")
PY
.venv/bin/pip list --format=freeze --exclude-editable > /tmp/gpu-kit-constraints.txt
rm -rf .whl && mkdir -p .whl
.venv/bin/pip download -q --only-binary=:all: --python-version "$PY_VERSION" --implementation cp \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
    -d .whl -r /tmp/gpu-kit-requirements.txt -c /tmp/gpu-kit-constraints.txt
for wheel in .whl/*.whl; do
    if basename "$wheel" | grep -qiE "$SKIP"; then rm "$wheel"; fi
done
echo "$(ls .whl | wc -l) wheels, $(du -sh .whl | cut -f1) in .whl/"
