#!/usr/bin/env bash
# promtool on deploy/prometheus: the config (with its rule files), the rules, and the rule unit tests in
# tests/deploy/prometheus_rules_test.yml. Also: every alert has a unit test and a section in
# docs/OPERATIONS.md. Exits 77 (skipped) when promtool is missing.
set -uo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
if ! command -v promtool >/dev/null; then
  echo "skipping: promtool not installed (Debian package 'prometheus', scripts/install-deps.sh)"
  exit 77
fi
promtool --version | head -n 1
status=0
run() {
  echo "+ $*"
  "$@" || { echo "FAIL: $*"; status=1; }
}
cd "$root"
run promtool check config deploy/prometheus/prometheus.yml
run promtool check rules deploy/prometheus/rules/*.rules.yml
run promtool test rules tests/deploy/prometheus_rules_test.yml
alerts=$(sed -n 's/^ *- alert: *\([A-Za-z0-9_]*\).*/\1/p' deploy/prometheus/rules/*.rules.yml)
[[ -n "$alerts" ]] || { echo "FAIL: no alerts found"; status=1; }
for alert in $alerts; do
  grep -q "alertname: $alert\$" tests/deploy/prometheus_rules_test.yml ||
    { echo "FAIL: alert $alert has no unit test in tests/deploy/prometheus_rules_test.yml"; status=1; }
  grep -q "^### $alert\$" docs/OPERATIONS.md ||
    { echo "FAIL: alert $alert has no '### $alert' section in docs/OPERATIONS.md"; status=1; }
done
echo "alerts with a unit test and an OPERATIONS.md section: $(echo $alerts | wc -w)"
exit $status
