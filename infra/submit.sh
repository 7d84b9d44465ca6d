#!/usr/bin/env bash
# Submit a stage, or the whole pipeline, to a Ray cluster as a Ray job (working tree shipped as
# the job's working_dir; AWS_*/MLFLOW_* forwarded), follow its logs, exit with its outcome:
#   RAY_ADDRESS=http://head:8265 infra/submit.sh pipeline --manifest s3://b/corpus/manifest.jsonl --root s3://b/run
#   RAY_ADDRESS=http://head:8265 infra/submit.sh preprocess --manifest s3://b/corpus/manifest.jsonl --out s3://b/store
#   RAY_ADDRESS=http://head:8265 infra/submit.sh fit --data s3://b/store --out s3://b/fit
# With token authentication (Ray 2.60) export RAY_AUTH_MODE=token and RAY_AUTH_TOKEN (or
# RAY_AUTH_TOKEN_PATH); `infra/local-cluster.py env` prints all of it for the local cluster.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
py="${PYTHON:-$here/.venv/bin/python}"   # any Python with ray[default] and typer will do
[ -x "$py" ] || py=python
cd "$here"
exec "$py" -m workflows.platform.submit "$@"
