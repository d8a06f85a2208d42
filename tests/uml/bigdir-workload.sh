#!/bin/sh
# bigdir-workload.sh ROOT: the kernel NFS client lists the 100,000-entry merged directory
# ROOT/big (see TestKernelClientListsBigDirectory): cold, warm, and while churnhelper (another
# NFS client, on the host) creates and removes entries in it. Listings go to /mnt (the host's
# output directory); the host checks them.
cd "$1" || exit 1
OUT=/mnt
# The client's own caches must not answer a listing: each must come from the server.
dropcaches() { sync; echo 3 >/proc/sys/vm/drop_caches; }

list() {
	start=$(date +%s)
	ls -f big >"$OUT/ls-$1.txt"
	echo "ls-$1 exit $? seconds $(($(date +%s) - start)) lines $(wc -l <"$OUT/ls-$1.txt")"
}
list cold
dropcaches
list warm

: >"$OUT/churn.start"
i=0
while [ ! -e "$OUT/churn.running" ] && [ $i -lt 300 ]; do
	sleep 0.1
	i=$((i + 1))
done
[ -e "$OUT/churn.running" ] || echo "churnhelper never started"
dropcaches
start=$(date +%s)
ls -f big >"$OUT/ls-concurrent.txt"
echo "ls-concurrent exit $? seconds $(($(date +%s) - start))"
: >"$OUT/churn.stop"
