#!/usr/bin/env bash
# Submit a stage to an existing Ray cluster as a Ray job, e.g.
#   RAY_ADDRESS=http://head:8265 infra/submit.sh preprocess --manifest s3://b/corpus/manifest.jsonl --out s3://b/store
#   RAY_ADDRESS=http://head:8265 infra/submit.sh fit --data s3://b/store --out s3://b/fit
set -euo pipefail
stage="${1:?usage: infra/submit.sh <stage> [stage options...]}"
shift
here="$(cd "$(dirname "$0")/.." && pwd)"
cd "$here"
exec ray job submit --address "${RAY_ADDRESS:?set RAY_ADDRESS to the dashboard URL}" \
  --runtime-env infra/runtime_env.yaml -- python -m "workflows.${stage}" "$@"
