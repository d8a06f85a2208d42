#!/bin/sh
# failover-workload.sh M1 M2: runs in the UML guest on a locking mount (M1) of the export
# through the floating address, while the host moves the export between gateways twice:
# first the active gateway is killed (SIGKILL) and a standby takes over, then the new
# active one is stopped (SIGTERM) and another standby takes over. The guest holds a file
# open for reading, one for appending, a cwd inside the mount and an NLM lock
# (lockhelper) the whole time, and runs a `cp -a` across each move. /mnt is the host's
# artifacts dir: the signal files between guest and host live there. The host checks
# every line; any "Stale file handle" or FAIL fails the test.
M=$1 H=/mnt/lockhelper S=/mnt
export LC_ALL=C
waitfor() {
	i=0
	while [ ! -e "$1" ]; do
		i=$((i + 1))
		[ $i -gt 1800 ] && { echo "FAIL timeout waiting for $1"; return 1; }
		sleep 0.1
	done
}
copied() { find "$1" 2>/dev/null | wc -l; }
startcp() {
	(cp -a "$M/tree" "$M/$1" 2>&1; echo "cp $1 exit status $?") >"/tmp/$1.out" &
	cppid=$!
	i=0
	while [ "$(copied "$M/$1")" -lt 50 ] && [ $i -lt 300 ]; do
		sleep 0.1
		i=$((i + 1))
	done
}
checkcp() {
	wait $cppid
	cat "/tmp/$1.out"
	if diff -r "$M/tree" "$M/$1" >/tmp/diff.out 2>&1; then
		echo "$1 compares equal"
	else
		echo "FAIL $1 differs:"
		head -20 /tmp/diff.out
	fi
	echo "files in $1: $(copied "$M/$1") of $(copied "$M/tree")"
}
held() {
	echo "ls: $(ls | sort | tr '\n' ' ')"
	echo "pwd: $(pwd)"
	# each phase reads its own descriptor (dd's skip moves the offset)
	case $1 in
	after-kill) echo "read: $(dd bs=1 skip=1048576 count=6 <&3 2>/dev/null)" ;;
	*) echo "read: $(dd bs=1 skip=1048576 count=6 <&5 2>/dev/null)" ;;
	esac
	echo "$1" >&4 && echo "append ok"
	echo "cat log: $(cat "$M/held/log.txt" | tr '\n' ' ')"
	touch "new-$1" && echo "create in held dir ok"
	echo 3 >/proc/sys/vm/drop_caches # the fsync'd file is read from the gateway, not the guest's cache
	echo "acked: $(sha256sum <"$M/acked.bin" | cut -c1-16)"
}

exec 3<"$M/big.bin" || echo "FAIL open big.bin"
exec 5<"$M/big.bin" || echo "FAIL open big.bin again"
exec 4>>"$M/held/log.txt" || echo "FAIL open log.txt"
echo before-kill >&4
# Acknowledged data: written and flushed (fsync: WRITE and COMMIT answered) before the kill.
dd if=/dev/urandom of=/tmp/acked bs=64k count=16 2>/dev/null
dd if=/tmp/acked of="$M/acked.bin" bs=64k conv=fsync 2>/dev/null && echo "acked written: $(sha256sum </tmp/acked | cut -c1-16)"
$H "$M/lock.txt" lock w 0 0 touch $S/lock-held waitfile $S/release | sed 's/^/lock holder: /' >/tmp/lock.out &
lockpid=$!
waitfor $S/lock-held
cd "$M/held/inside" || echo "FAIL cd"

startcp copy1
echo "copied before the kill: $(copied "$M/copy1")"
kill -0 $cppid 2>/dev/null && echo "cp running at the kill"
touch $S/ready1
waitfor $S/taken-over
echo "== after the kill"
held after-kill
checkcp copy1

startcp copy2
kill -0 $cppid 2>/dev/null && echo "cp running at the move"
touch $S/ready2
waitfor $S/moved
echo "== after the move"
held after-move
checkcp copy2

touch $S/guest-done
wait $lockpid
cat /tmp/lock.out
exec 3<&- 4>&- 5<&-
echo "== done"
