#!/usr/bin/env bash
# Validates k8s/ and the Dockerfiles: schemas, mesh semantics, checkov, hadolint, shellcheck.
#   bash k8s/tests/run.sh [pytest args]
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
bash "$repo/scripts/setup.sh"
# checkov: no update check and no download from its vendor's service.
export CKV_SKIP_PACKAGE_UPDATE_CHECK=true
cd "$repo"
exec "$repo/.venv/bin/python" -m pytest -p no:cacheprovider -q "$@" k8s/tests
