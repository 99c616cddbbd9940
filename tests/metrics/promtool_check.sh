#!/bin/sh
# Runs COMMAND [ARGS...], which writes a Prometheus text exposition to stdout, and checks it with
# `promtool check metrics`. Fails on a parse error, on any lint complaint (promtool exits 3 for those,
# but any output at all counts), or when COMMAND fails. Exits 77 (CTest's SKIP_RETURN_CODE) when
# promtool is not installed.
set -u
if ! command -v promtool >/dev/null 2>&1; then
  echo "promtool not found (Debian package \"prometheus\"); skipping"
  exit 77
fi
exposition=$(mktemp) || exit 1
trap 'rm -f "$exposition"' EXIT
if ! "$@" >"$exposition"; then
  echo "exposition command failed: $*"
  exit 1
fi
report=$(promtool check metrics <"$exposition" 2>&1)
rc=$?
if [ "$rc" -ne 0 ] || [ -n "$report" ]; then
  echo "promtool check metrics exited $rc:"
  echo "$report"
  exit 1
fi
echo "promtool check metrics: clean ($(grep -c -v '^#' "$exposition") samples)"
