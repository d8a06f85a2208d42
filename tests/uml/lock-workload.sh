#!/bin/sh
# lock-workload.sh M1 M2: runs in the UML guest on two mounts of the export (M2 with
# nosharecache), mounted without nolock: the kernel's NLM client takes the locks at the
# server. /mnt is the host's artifacts directory: the helper (lockhelper, built on the
# host) and the signal files between guest and host live there. The host checks every
# line of the transcript.
M1=$1 M2=$2 H=/mnt/lockhelper S=/mnt
export LC_ALL=C
ms() { echo $(($(date +%s%N) / 1000000)); }
waitfor() {
	i=0
	while [ ! -e "$1" ]; do
		i=$((i + 1))
		[ $i -gt 1800 ] && { echo "timeout waiting for $1"; return 1; }
		sleep 0.1
	done
}

echo "== flock, two processes"
: >"$M1/flock.txt"
flock -x "$M1/flock.txt" -c "touch $S/flock-held; sleep 3" &
waitfor $S/flock-held
flock -n -x "$M1/flock.txt" true
echo "flock -n same mount: exit $?"
flock -n -x "$M2/flock.txt" true
echo "flock -n other mount: exit $?"
t0=$(ms)
flock -x "$M2/flock.txt" true
echo "flock blocking other mount: exit $? waited $(($(ms) - t0)) ms"
wait
flock -n -x "$M2/flock.txt" true
echo "flock -n after release: exit $?"

echo "== fcntl byte ranges, two mounts"
: >"$M1/ranges.txt"
$H "$M1/ranges.txt" lock w 0 100 touch $S/ranges-held sleep 3000 | sed 's/^/holder: /' &
waitfor $S/ranges-held
$H "$M2/ranges.txt" getlk w 50 10 lock w 50 10 lock r 0 1 lock w 100 100 lock r 200 0 getlk r 0 0 lockw w 0 100
wait

echo "== a lock kept across a server restart"
: >"$M1/reclaim.txt"
: >"$M2/other.txt"
$H "$M1/reclaim.txt" lock w 0 0 touch $S/kernel-lock-held waitfile $S/release | sed 's/^/reclaim holder: /' &
waitfor $S/restarted
# A new lock while the server is in its grace period waits for its end (the kernel
# retries a DENIED_GRACE_PERIOD every few seconds).
$H "$M2/other.txt" lock w 0 0 unlock 0 0 | sed 's/^/in grace: /'
wait
$H "$M2/reclaim.txt" lock w 0 0 | sed 's/^/after release: /'
echo "== done"
