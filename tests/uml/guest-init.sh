#!/bin/sh
# PID 1 of the User-mode Linux guest. The guest's root is the host's root through hostfs,
# mounted read-only; the only writable host directory is $OUT, mounted by this script.
# Kernel arguments KEY=VAL arrive as environment variables:
#   OUT      host directory for results (transcript, manifest, guest log)
#   TESTS    host directory holding workload.sh and manifest.sh
#   SRV PORT the ovlnfs server's address and port
#   GUEST_IP the guest's address (/24) on eth0
#   WORKLOAD the script in $TESTS to run on the mount (default workload.sh)
#   NFSOPTS  extra NFS mount options (comma-separated), if any
#   MANIFEST no: skip manifest.sh
#   PLAINMOUNT yes: ask the portmapper first (rpcinfo -p, showmount -e, into $OUT), then
#            mount with "vers=3,nolock" only, no port, protocol or address options (and
#            skip the NFSv4 attempt)
#   LOCKS    yes (with PLAINMOUNT): run rpcbind and rpc.statd in the guest, as a client
#            that locks needs, and mount with "vers=3" alone, without nolock; a second
#            mount of the export (nosharecache) goes on /run/nfs2, and the workload gets
#            both mount points
#   NOMOUNT  yes: mount nothing; the workload (run with no argument) mounts what it needs
#            from $SRV, port $PORT, and unmounts it; no manifest
# Every outcome is written to $OUT; the host decides pass or fail.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
BB=/bin/busybox
[ -x "$BB" ] || BB=/usr/bin/busybox

$BB mount -t proc proc /proc
$BB mount -t sysfs sysfs /sys
# Keep mount(8)'s state and every temporary file off the host.
$BB mount -t tmpfs tmpfs /run
$BB mount -t tmpfs tmpfs /tmp
# The scripts are reached through their own hostfs mount (host path, like $OUT), because the
# tmpfs above hides them when the checkout lives under /tmp.
$BB mkdir -p /run/tests
$BB mount -t hostfs -o "$TESTS" hostfs /run/tests
$BB mount -t hostfs -o "$OUT" hostfs /mnt
# /mnt now is $OUT (writable); the NFS mount goes below /run.
exec >/mnt/guest.log 2>&1
echo "guest: kernel $(uname -r)"

finish() {
	echo "guest: finished with status $1"
	echo "$1" >/mnt/guest.status
	sync
	exec >/dev/null 2>&1 # release guest.log so /mnt can be unmounted
	$BB umount /mnt
	$BB poweroff -f
}

MODS=/usr/lib/uml/modules/$(uname -r)/kernel
for m in fs/netfs/netfs fs/fscache/fscache net/sunrpc/sunrpc fs/nfs_common/grace \
	fs/lockd/lockd fs/nfs/nfs fs/nfs_common/nfs_acl fs/nfs/nfsv3 \
	net/dns_resolver/dns_resolver fs/nfs/nfsv4; do
	if [ -f "$MODS/$m.ko" ]; then
		$BB insmod "$MODS/$m.ko" || { echo "guest: insmod $m failed"; finish 90; }
	fi
done

$BB ip link set lo up
$BB ip addr add "$GUEST_IP/24" dev eth0
$BB ip link set eth0 up

if [ "${NOMOUNT:-no}" = yes ]; then
	sh "/run/tests/${WORKLOAD:-workload.sh}" >/mnt/transcript.txt 2>&1
	echo "guest: workload exit status $?"
	cd /
	if grep -q " nfs " /proc/mounts; then
		echo "guest: the workload left NFS mounts:"
		grep " nfs " /proc/mounts
		finish 92
	fi
	finish 0
fi

mkdir -p /run/nfs
MOUNTOPTS="vers=3,nolock"
if [ "${LOCKS:-no}" = yes ]; then
	# The client side of locking: the kernel's lockd registers with rpcbind, and
	# rpc.statd monitors the server (SM_MON) and takes its reboot notices (SM_NOTIFY).
	# /var/lib/nfs is the host's, read-only: the guest's state goes on a tmpfs.
	$BB mount -t tmpfs tmpfs /var/lib/nfs
	mkdir -p /var/lib/nfs/sm /var/lib/nfs/sm.bak /run/rpcbind
	rpcbind -w || { echo "guest: rpcbind failed"; finish 94; }
	rpc.statd --no-notify || { echo "guest: rpc.statd failed"; finish 94; }
	rpcinfo -p 127.0.0.1 >/mnt/guest-rpcinfo.txt 2>&1
	MOUNTOPTS="vers=3"
fi
if [ "${PLAINMOUNT:-no}" = yes ]; then
	# Real RPC clients of another host, knowing only the server's address.
	rpcinfo -p "$SRV" >/mnt/rpcinfo.txt 2>&1
	status=$?
	echo "exit status $status" >>/mnt/rpcinfo.txt
	# Without a portmapper mount.nfs would retry for minutes: fail at once instead.
	[ $status -eq 0 ] || { echo "guest: no portmapper answers at $SRV"; finish 93; }
	showmount -e "$SRV" >/mnt/showmount.txt 2>&1
	echo "exit status $?" >>/mnt/showmount.txt
	i=0
	until mount -t nfs -o "$MOUNTOPTS${NFSOPTS:+,$NFSOPTS}" "$SRV:/" /run/nfs; do
		i=$((i + 1))
		[ $i -ge 5 ] && { echo "guest: mount failed"; finish 91; }
		sleep 1
	done
	echo "guest: mounted $SRV:/ on /run/nfs with $MOUNTOPTS"
	grep " /run/nfs " /proc/mounts >/mnt/mount-options.txt
	if [ "${LOCKS:-no}" = yes ]; then
		mkdir -p /run/nfs2
		mount -t nfs -o "$MOUNTOPTS,nosharecache${NFSOPTS:+,$NFSOPTS}" "$SRV:/" /run/nfs2 || { echo "guest: second mount failed"; finish 91; }
		grep " /run/nfs2 " /proc/mounts >>/mnt/mount-options.txt
		echo "guest: mounted $SRV:/ again on /run/nfs2 (nosharecache)"
	fi
else
# What mount.nfs does without vers=: try NFSv4 first and fall back to v3 when the server
# says the version is not there. The outcome goes to $OUT for the host to judge; the attempt
# must fail at once with "Protocol not supported", not hang or half-mount.
start=$(date +%s)
mount -t nfs -o "vers=4,proto=tcp,port=$PORT,addr=$SRV,retrans=1,timeo=50,soft" "$SRV:/" /run/nfs >/mnt/v4-mount.txt 2>&1
echo "exit status $?" >>/mnt/v4-mount.txt
echo "seconds $(($(date +%s) - start))" >>/mnt/v4-mount.txt
grep -q " /run/nfs " /proc/mounts && { echo "still mounted" >>/mnt/v4-mount.txt; umount /run/nfs; }
# NFSv3 without noacl: the kernel asks NFS_ACL for ACLs and must take the answer in stride.
i=0
until mount -t nfs -o "vers=3,proto=tcp,port=$PORT,mountport=$PORT,mountproto=tcp,nolock,addr=$SRV,mountaddr=$SRV${NFSOPTS:+,$NFSOPTS}" "$SRV:/" /run/nfs; do
	i=$((i + 1))
	[ $i -ge 5 ] && { echo "guest: mount failed"; finish 91; }
	sleep 1
done
echo "guest: mounted $SRV:/ on /run/nfs"
fi

if [ "${LOCKS:-no}" = yes ]; then
	sh "/run/tests/${WORKLOAD:-workload.sh}" /run/nfs /run/nfs2 >/mnt/transcript.txt 2>&1
else
	sh "/run/tests/${WORKLOAD:-workload.sh}" /run/nfs >/mnt/transcript.txt 2>&1
fi
echo "guest: workload exit status $?"
# MANIFEST=no skips describing the whole tree (the big-directory test has 100,000 files).
if [ "${MANIFEST:-yes}" = yes ]; then
	sh /run/tests/manifest.sh /run/nfs >/mnt/merged.manifest 2>/mnt/manifest.err
	echo "guest: manifest exit status $?"
fi

cd /
if [ "${LOCKS:-no}" = yes ]; then
	umount /run/nfs2 || { echo "guest: umount of the second mount failed"; finish 92; }
fi
umount /run/nfs || { echo "guest: umount failed"; finish 92; }
echo "guest: unmounted"
finish 0
