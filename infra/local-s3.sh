#!/usr/bin/env bash
# A local S3 endpoint for trying the s3:// paths without a cloud: moto's server on loopback.
#   source <(infra/local-s3.sh env) ; infra/local-s3.sh serve &   (then s3://any-bucket works)
set -euo pipefail
port="${S3_PORT:-5055}"
case "${1:-serve}" in
  env)
    echo "export AWS_ENDPOINT_URL=http://127.0.0.1:${port}"
    echo "export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_DEFAULT_REGION=us-east-1"
    ;;
  serve)
    exec moto_server -H 127.0.0.1 -p "${port}"
    ;;
  *) echo "usage: $0 [env|serve]" >&2; exit 2 ;;
esac
