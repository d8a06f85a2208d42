#!/bin/sh
# xfsquota-workload.sh: runs in the UML guest (NOMOUNT=yes) with an XFS image as its second
# block device (ubd1, /dev/ubdb: 98,16) and billyunion's test binary in /mnt (see
# TestKernelXFSProjectQuota): mounts the image with prjquota and runs TestQuotaXFSProject on
# it. Every line is checked by the host.
export LC_ALL=C
mknod /run/ubdb b 98 16 || echo "FAIL mknod"
mkdir -p /run/xfs
if mount -t xfs -o prjquota /run/ubdb /run/xfs; then
	echo "mount xfs prjquota: ok"
else
	echo "FAIL mount xfs prjquota: exit $?"
	dmesg | tail -5
	exit 0
fi
grep " /run/xfs " /proc/mounts
cd /tmp || exit 1
OVLNFS_XFS_PRJQUOTA_DIR=/run/xfs /mnt/billyunion.test -test.run 'TestQuotaXFSProject$' -test.v -test.count=1 2>&1
echo "test exit status $?"
# For the record (and a red run's diagnosis): the projects' usage and limits.
xfs_quota -x -c 'report -p -b -i -n' /run/xfs 2>&1 | grep -v '^$'
cd /
umount /run/xfs && echo "umount xfs: ok"
