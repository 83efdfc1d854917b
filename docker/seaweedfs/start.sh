#!/bin/sh
# Entrypoint of the seaweedfs service of compose.yaml: one `weed mini` process (master, volume, filer, S3).
# weed takes its S3 credentials from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (anonymous requests and wrong
# keys get 403) and creates the bucket of MLFLOW_ARTIFACTS_DESTINATION: the server's own variables from
# mlflow.env, so keys and bucket are written once. Hands over to the image's entrypoint, which drops root.
set -eu

: "${AWS_ACCESS_KEY_ID:?set AWS_ACCESS_KEY_ID in mlflow.env: the S3 store only accepts signed requests}"
: "${AWS_SECRET_ACCESS_KEY:?set AWS_SECRET_ACCESS_KEY in mlflow.env}"
bucket=${MLFLOW_ARTIFACTS_DESTINATION:?set MLFLOW_ARTIFACTS_DESTINATION in mlflow.env}
bucket=${bucket#s3://}
bucket=${bucket%%/*}

# -ip: the components find each other on loopback; -ip.bind: S3 (8333) must be reachable from the server.
# Nothing here is published; compose keeps the service on the internal network only.
exec /entrypoint.sh mini -dir=/data -bucket="$bucket" \
    -ip=127.0.0.1 -ip.bind=0.0.0.0 -s3.port=8333 \
    -master.telemetry=false -webdav=false -admin.ui=false -s3.port.iceberg=0 -s3.port.lance=0
