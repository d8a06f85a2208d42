#!/bin/sh
# quota-workload.sh ROOT: runs in the UML guest on an export with quota_bytes=4M and
# quota_inodes=40 (see TestKernelClientQuota). Every line is checked by the host, which also
# looks at the upper layer: nothing beyond the quota may be written there.
cd "$1" || exit 1
export LC_ALL=C
# first line of a command's error output, or "ok"
err() {
	"$@" >/tmp/err.out 2>&1
	s=$?
	if [ $s -eq 0 ]; then echo ok; else echo "exit $s: $(grep -v records /tmp/err.out | head -1)"; fi
}
echo "df before: $(df -k . | tail -1 | awk '{print "size", $2, "used", $3, "avail", $4}')"
echo "df inodes before: $(df -i . | tail -1 | awk '{print "inodes", $2, "used", $3, "free", $4}')"
# 12.5 MiB into a 4 MiB quota
echo "dd past the quota: $(err dd if=/dev/zero of=fill bs=64k count=200 conv=fsync)"
echo "client sees fill: $(stat -c %s fill 2>&1)"
# The host measures fill on the upper now.
: >/mnt/ready-fill
i=0
while [ ! -e /mnt/measured ] && [ $i -lt 600 ]; do
	sleep 0.1
	i=$((i + 1))
done
echo "host measured fill: $(cat /mnt/measured 2>/dev/null || echo FAIL never)"
# The lower big.bin (6 MiB) cannot be copied up into what is left.
echo "dd into the big lower file: $(err dd if=/dev/zero of=big.bin bs=1 count=1 seek=10 conv=notrunc,fsync)"
echo "big.bin still reads: $(head -c 5 big.bin)"
echo "df full: $(df -k . | tail -1 | awk '{print "size", $2, "avail", $4}')"
echo "rm fill: $(err rm fill)"
sync
echo "df after rm: $(df -k . | tail -1 | awk '{print "size", $2, "avail", $4}')"
echo "dd after rm: $(err dd if=/dev/zero of=again bs=64k count=16 conv=fsync)"
echo "small.txt copied up: $(err sh -c 'echo more >> small.txt')"
# The inode quota: files until refused.
i=0
while [ $i -lt 100 ]; do
	if ! touch "n$i" 2>/tmp/touch.err; then
		break
	fi
	i=$((i + 1))
done
echo "touch refused after $i files: $(head -1 /tmp/touch.err)"
echo "mkdir at the inode quota: $(err mkdir dirx)"
echo "df inodes full: $(df -i . | tail -1 | awk '{print "inodes", $2, "free", $4}')"
echo "rm n0: $(err rm n0)"
echo "touch after rm: $(err touch again2)"
