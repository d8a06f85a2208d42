#!/bin/sh
# restart-workload.sh ROOT: runs in the UML guest while the host restarts the server.
# It holds a file open for reading, a file open for appending and a shell inside a
# directory, starts a `cp -a` of a tree, tells the host (file $OUT/ready, $OUT being
# /mnt) to restart the server, waits until the host says it did ($OUT/restarted), and
# then uses everything it held. Every line of output is checked by the host; any
# "Stale file handle" fails the test.
cd "$1" || exit 1
export LC_ALL=C
ROOT=$1
exec 3<"$ROOT/big.bin" || echo "FAIL open big.bin"
exec 4>>"$ROOT/held/log.txt" || echo "FAIL open log.txt"
echo before-restart >&4
cd "$ROOT/held/inside" || echo "FAIL cd"
(cp -a "$ROOT/tree" "$ROOT/copy" 2>&1; echo "cp exit status $?") >/tmp/cp.out &
cppid=$!
# Let cp get going before the restart.
i=0
while [ "$(find "$ROOT/copy" 2>/dev/null | wc -l)" -lt 50 ] && [ $i -lt 300 ]; do
	sleep 0.1
	i=$((i + 1))
done
echo "copied before restart: $(find "$ROOT/copy" 2>/dev/null | wc -l)"
echo ready >/mnt/ready
i=0
while [ ! -e /mnt/restarted ] && [ $i -lt 600 ]; do
	sleep 0.1
	i=$((i + 1))
done
[ -e /mnt/restarted ] || echo "FAIL host never restarted the server"
echo "== after restart"
echo "ls: $(ls | sort | tr '\n' ' ')"
echo "pwd ok: $(pwd)"
echo "read: $(dd bs=1 skip=1048576 count=6 <&3 2>/dev/null)"
echo after-restart >&4 && echo "append ok"
echo "cat log: $(cat "$ROOT/held/log.txt" | tr '\n' ' ')"
touch newfile && echo "create in held dir ok"
wait $cppid
cat /tmp/cp.out
if diff -r "$ROOT/tree" "$ROOT/copy" >/tmp/diff.out 2>&1; then
	echo "copy compares equal"
else
	echo "FAIL copy differs:"
	head -20 /tmp/diff.out
fi
echo "files in copy: $(find "$ROOT/copy" | wc -l) of $(find "$ROOT/tree" | wc -l)"
exec 3<&- 4>&-
