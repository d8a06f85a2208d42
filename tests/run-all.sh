#!/usr/bin/env bash
# The whole test suite: gofmt, go vet and `go test ./...` (unit tests, the libnfs client
# tests and the User-mode Linux kernel-client test). Prints what ran and ends with a
# summary. Run as root (network namespaces, kernel overlay mounts); .ci/run installs the
# Debian packages first. With CI=true a missing prerequisite fails instead of skipping.
#
# Environment: OVLNFS_ARTIFACTS=DIR keeps the UML test's transcripts, manifests and
# comparison there (by default they are kept in a temporary directory only on failure).
set -uo pipefail
cd "$(dirname "$0")/.."
if ! command -v go >/dev/null 2>&1 && [ -x /usr/local/go/bin/go ]; then
	export PATH="/usr/local/go/bin:$PATH"
fi
start=$(date +%s)
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0

echo "== gofmt"
unformatted=$(gofmt -l $(git ls-files -co --exclude-standard '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then
	echo "not gofmt-formatted:"; echo "$unformatted"; status=1
fi
echo "== go vet ./..."
go vet ./... || status=1

echo "== go test -count=1 -v ./...   (CI=${CI:-})"
go test -count=1 -v -timeout 25m ./... 2>&1 | tee "$log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

echo "== go test -race (packages that take locks)"
go test -count=1 -race -timeout 10m ./billyunion/... ./copyup/... ./readdircache/... ./handles/... ./internal/... ./cmd/... 2>&1 | tee -a "$log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

# Top-level tests only ("--- PASS: TestX"), subtests are indented.
passed=$(grep -cE '^--- PASS: ' "$log")
failed=$(grep -cE '^--- FAIL: ' "$log")
skipped=$(grep -cE '^--- SKIP: ' "$log")
echo
echo "== summary"
grep -E '^(ok|FAIL|\?)\s|^\s*--- (FAIL|SKIP): ' "$log" || true
if [ "$skipped" -gt 0 ]; then
	echo "SKIPPED tests (with reasons):"
	grep -A2 -E '^--- SKIP: ' "$log" | sed 's/^/  /'
fi
echo "took $(( $(date +%s) - start ))s"
echo "$passed passed, $failed failed, $skipped skipped"
exit $status
