#!/usr/bin/env bash
# Create (or update) the sim2real work pools and concurrency limits on the server $PREFECT_API_URL
# points at; with --deploy also register every deployment in deploy/prefect.yaml.
#
#   bash deploy/create_pools.sh [--gpu-type kubernetes|docker|process] [--gpu-slots N] [--deploy]
#
#   cpu  process pool, 4 runs at once
#   gpu  kubernetes (pools/gpu-kubernetes.json, requests nvidia.com/gpu), docker (pools/gpu-docker.json,
#        NVIDIA device request) or process (a single GPU host); --gpu-slots runs at once (default 1)
#   tag limit `gpu`: GPU task runs at once across all flows (= --gpu-slots)
set -euo pipefail
cd "$(dirname "$0")/.."

gpu_type=kubernetes
gpu_slots=1
deploy=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --gpu-type) gpu_type="$2"; shift 2 ;;
    --gpu-slots) gpu_slots="$2"; shift 2 ;;
    --deploy) deploy=1; shift ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done

prefect work-pool create cpu --type process --overwrite
prefect work-pool set-concurrency-limit cpu 4

case "$gpu_type" in
  kubernetes) prefect work-pool create gpu --type kubernetes --base-job-template deploy/pools/gpu-kubernetes.json --overwrite ;;
  docker) prefect work-pool create gpu --type docker --base-job-template deploy/pools/gpu-docker.json --overwrite ;;
  process) prefect work-pool create gpu --type process --overwrite ;;
  *) echo "--gpu-type $gpu_type: choose kubernetes, docker or process" >&2; exit 2 ;;
esac
prefect work-pool set-concurrency-limit gpu "$gpu_slots"

# Tag limit for GPU task runs (translate shards); replaced so the slot count follows --gpu-slots.
prefect concurrency-limit delete gpu >/dev/null 2>&1 || true
prefect concurrency-limit create gpu "$gpu_slots"

if [[ $deploy == 1 ]]; then
  prefect --no-prompt deploy --all --prefect-file deploy/prefect.yaml
fi
