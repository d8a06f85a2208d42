#!/bin/sh
# flatten-workload.sh: runs in the UML guest (NOMOUNT=yes) against one ovlnfs serving the
# workspace /ws over two lowers with a control socket (see flatten_test.go). The guest
# mounts /ws, changes it (a directory made and stood in, a file held open for writing in
# it, a lower file held open for reading, a copy-up, a whiteout, a lower directory renamed
# and stood in by a second shell) and keeps writing while the host flattens it:
#   /mnt/ready-flatten -> ovlnfs commit --flatten /ws FLAT                 -> /mnt/flattened
#   /mnt/ready-check   -> the host looks at FLAT and mounts a kernel overlay -> /mnt/checked
# Every line is checked by the host; "FAIL" marks what the script itself finds wrong.
export LC_ALL=C
O="vers=3,proto=tcp,port=$PORT,mountport=$PORT,mountproto=tcp,nolock,addr=$SRV,mountaddr=$SRV,actimeo=1"
W=/run/ws

. /run/tests/workload-lib.sh # ask, err, fdwrite

echo "== mount"
mkdir -p $W
if mount -t nfs -o "$O" "$SRV:/ws" $W >/tmp/mount.out 2>&1; then
	echo "mount /ws: ok"
else
	echo "FAIL mount /ws: $(tr '\n' ' ' </tmp/mount.out)"
	exit 1
fi

echo "== before"
mkdir $W/made && cd $W/made || echo "FAIL mkdir made"
exec 3>>held.txt
echo one >&3 || echo "FAIL write fd 3"
exec 4<$W/base.txt
echo "more" >>$W/shared.txt || echo "FAIL append shared.txt"
rm $W/dir/keep.txt || echo "FAIL rm dir/keep.txt"
mv $W/cfg $W/cfg2 || echo "FAIL mv cfg cfg2"
# A second shell stands in the renamed lower directory (a merged one, with a redirect).
(
	cd $W/cfg2 || echo "FAIL cd cfg2"
	while [ ! -e /tmp/go ]; do sleep 0.1; done
	echo "lower cwd after: $(cat app.conf 2>&1) $(err touch here.txt) $(/bin/pwd)"
) >/tmp/sub.out 2>&1 &
sub=$!
# A loop that keeps writing across the flatten.
(
	i=0
	while [ ! -e /tmp/stop ]; do
		echo "f $i" >"$W/made/f-$i" || echo "FAIL create f-$i"
		echo "line $i" >>$W/log.txt || echo "FAIL append log $i"
		[ "$(cat "$W/made/f-$i")" = "f $i" ] || echo "FAIL read f-$i"
		i=$((i + 1))
	done
	echo "loop iterations: $i"
) >/tmp/loop.out 2>&1 &
loop=$!
sleep 1

echo "== flatten"
ask ready-flatten flattened
sleep 1
touch /tmp/stop
wait $loop
cat /tmp/loop.out
touch /tmp/go
wait $sub
cat /tmp/sub.out
echo "fd 3 after: $(fdwrite 3 two)"
echo "fd 4 after: $(cat <&4 2>&1)"
echo "cwd create after: $(err touch after.txt)"
echo "cwd pwd: $(/bin/pwd)"
echo "cwd held: $(tr '\n' ' ' <held.txt)"
echo "dir after: $(ls $W/dir | tr '\n' ' ')"
echo "root after: $(ls $W | grep -v '^log.txt$' | tr '\n' ' ')"
echo "shared after: $(tr '\n' ' ' <$W/shared.txt)"
sh /run/tests/manifest.sh $W >/mnt/after.manifest 2>/mnt/after.err || echo "FAIL after manifest"
ask ready-check checked
cd /
exec 3>&- 4<&-
umount $W || echo "FAIL umount"
echo "== done"
