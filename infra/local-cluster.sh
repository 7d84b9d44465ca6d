#!/usr/bin/env bash
# A Ray head + 2 worker nodes (token auth), moto S3 and an MLflow server on this machine:
#   infra/local-cluster.sh up [--dir workspace/cluster] ; eval "$(infra/local-cluster.sh env)"
#   infra/local-cluster.sh status | kill-node worker-1 | start-node worker-1 | down
# (a thin wrapper of infra/local-cluster.py, run with the project's .venv when there is one)
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
py="${PYTHON:-$here/.venv/bin/python}"
[ -x "$py" ] || py=python3
exec "$py" "$here/infra/local-cluster.py" "$@"
