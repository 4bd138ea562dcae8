#!/usr/bin/env bash
# Runs every `go test -fuzz` target in the module for a short time (FUZZTIME, default 10s each).
# Their seed corpora (f.Add and testdata/fuzz/) also run as plain tests in `go test ./...`; this
# adds a brief search for new inputs. A crash writes the input to the package's testdata/fuzz/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
fuzztime=${FUZZTIME:-10s}
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
while IFS=: read -r file name; do
	pkg=./$(dirname "$file")
	echo "fuzz $pkg $name ($fuzztime)"
	if ! go test -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" "$pkg" >"$log" 2>&1; then
		tail -n 30 "$log"
		status=1
	fi
done < <(git grep --untracked -o --no-color -E '^func Fuzz[A-Za-z0-9_]*' -- '*_test.go' | sed -E 's/:func /:/')
exit $status
