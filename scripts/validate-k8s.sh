#!/usr/bin/env bash
# Renders every Kustomize overlay under deploy/ and validates it offline:
#   1. yamllint (deploy/.yamllint) over deploy/;
#   2. every rendered object against the JSON Schemas in ../shared/k8s-schemas for
#      Kubernetes 1.29 and 1.31 (standalone-strict) and the prometheus-operator CRDs, plus
#      cross-object checks (scripts/k8s_validate.py);
#   3. a self-test: deploy/tests/broken must FAIL, or this script fails.
# Usage: scripts/validate-k8s.sh            (from anywhere; paths are relative to the repo)
# Env:   K8S_SCHEMAS (default ../shared/k8s-schemas), PYTHON (default /usr/bin/python3),
#        KUBECTL (default kubectl).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
schemas=${K8S_SCHEMAS:-../shared/k8s-schemas}
python=${PYTHON:-/usr/bin/python3}
kubectl=${KUBECTL:-kubectl}
versions=(1.29.0 1.31.0)

if [[ ! -d $schemas ]]; then
  echo "validate-k8s: schemas not found at $schemas (set K8S_SCHEMAS)" >&2
  exit 2
fi
for tool in "$kubectl" yamllint "$python"; do
  command -v "$tool" >/dev/null || { echo "validate-k8s: $tool not found" >&2; exit 2; }
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
version_args=()
for v in "${versions[@]}"; do version_args+=(--kubernetes-version "$v"); done

status=0
echo "== yamllint deploy/"
yamllint --strict -c deploy/.yamllint deploy/ || status=1

echo "== dashboards parse as JSON"
for f in deploy/base/dashboards/*.json; do
  "$python" -m json.tool "$f" >/dev/null || { echo "FAIL $f: not JSON"; status=1; }
done

render() {  # render DIR OUT
  "$kubectl" kustomize "$1" >"$2" 2>"$2.err" || { cat "$2.err"; return 1; }
}

targets=(deploy/overlays/*/ deploy/tests/podmonitor/)
for dir in "${targets[@]}"; do
  dir=${dir%/}
  out="$work/$(echo "$dir" | tr / _).yaml"
  echo "== $dir (Kubernetes ${versions[*]})"
  if ! render "$dir" "$out"; then
    echo "FAIL $dir: kubectl kustomize failed"
    status=1
    continue
  fi
  "$python" scripts/k8s_validate.py --schemas "$schemas" "${version_args[@]}" "$out" || status=1
done

echo "== self-test: deploy/tests/broken must fail"
broken="$work/broken.yaml"
render deploy/tests/broken "$broken"
if "$python" scripts/k8s_validate.py --schemas "$schemas" "${version_args[@]}" "$broken" \
    >"$work/broken.log" 2>&1; then
  cat "$work/broken.log"
  echo "FAIL self-test: the broken manifest passed validation; the validator checks nothing"
  status=1
elif ! grep -q "spec.replicas" "$work/broken.log" || ! grep -q "containerPrt" "$work/broken.log"; then
  cat "$work/broken.log"
  echo "FAIL self-test: the broken manifest failed, but not on the planted errors"
  status=1
else
  echo "ok   broken manifest rejected: $(grep -c '^FAIL' "$work/broken.log") error(s), as planted"
fi

if [[ $status -eq 0 ]]; then echo "validate-k8s: all good"; else echo "validate-k8s: FAILED"; fi
exit $status
