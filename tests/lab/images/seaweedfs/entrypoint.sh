#!/bin/sh
# The stand-in's /entrypoint.sh: `weed ARGS` as the seaweed user, owning /data (the official image's
# entrypoint also hands its first argument to weed as the command). Anything that is not a weed command runs as is.
set -eu

case ${1:-} in
    '' | -*) set -- weed "$@" ;;
    master | volume | server | filer | s3 | mini | shell | version | webdav | mount | iam | admin) set -- weed "$@" ;;
esac

if [ "$(id -u)" = 0 ]; then
    chown seaweed:seaweed /data
    exec setpriv --reuid=seaweed --regid=seaweed --init-groups "$@"
fi
exec "$@"
