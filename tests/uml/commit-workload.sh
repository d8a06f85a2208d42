#!/bin/sh
# commit-workload.sh: runs in the UML guest (NOMOUNT=yes) against one ovlnfs serving the
# workspace /ws over two lowers with a control socket (see commit_test.go). The guest
# mounts /ws and starts a loop that keeps writing while the host commits the workspace
# twice; later it holds files and a directory open while the host resets it, to a
# snapshot and then to its lowers. The host acts when asked by files in $OUT (/mnt here):
#   /mnt/ready-commit1 -> ovlnfs commit /ws LAYER1                      -> /mnt/committed1
#   /mnt/ready-commit2 -> ovlnfs commit /ws LAYER2                      -> /mnt/committed2
#   /mnt/ready-check   -> the host compares layers and a kernel overlay  -> /mnt/checked
#   /mnt/ready-snap    -> ovlnfs snapshot /ws s1                        -> /mnt/snapped
#   /mnt/ready-reset1  -> ovlnfs reset --to=s1 /ws                      -> /mnt/reset1
#   /mnt/ready-reset2  -> ovlnfs reset /ws (to the lowers and layers)   -> /mnt/reset2
# Every line is checked by the host; "FAIL" marks what the script itself finds wrong.
export LC_ALL=C
O="vers=3,proto=tcp,port=$PORT,mountport=$PORT,mountproto=tcp,nolock,addr=$SRV,mountaddr=$SRV,actimeo=1"
W=/run/ws

. /run/tests/workload-lib.sh # ask, err, fdwrite

# count: how many iterations the loop has finished. The loop rewrites its count file in
# place, so a read that falls between the truncation and the write finds it empty.
count() {
	c=$(cat /tmp/loop.count 2>/dev/null)
	j=0
	while [ -z "$c" ] && [ $j -lt 300 ]; do
		sleep 0.1
		c=$(cat /tmp/loop.count 2>/dev/null)
		j=$((j + 1))
	done
	echo "${c:-0}"
}

# progress AFTER: waits until the loop has gone AFTER iterations past where it is now
# (up to 30 s), so that each phase has writes of its own.
progress() {
	from=$(count)
	k=0
	while [ "$(count)" -lt $((from + $1)) ] && [ $k -lt 300 ]; do
		sleep 0.1
		k=$((k + 1))
	done
	echo "$(count)"
}

# sum FILE: the sha256 of a file read through the mount, or the error.
sum() {
	sha256sum "$1" 2>&1 | sed 's/ .*//'
}

echo "== mount"
mkdir -p $W
if mount -t nfs -o "$O" "$SRV:/ws" $W >/tmp/mount.out 2>&1; then
	echo "mount /ws: ok"
else
	echo "FAIL mount /ws: $(tr '\n' ' ' </tmp/mount.out)"
	exit 1
fi

echo "== before"
mkdir $W/loop $W/cwd || echo "FAIL mkdir"
sh /run/tests/manifest.sh $W >/mnt/before.manifest 2>/mnt/before.err || echo "FAIL before manifest"

echo "== loop across two commits"
# The workload's own shell holds the directory and the file the loop uses: its cwd is
# $W/cwd and its fd 3 is open (O_APPEND) on held.txt there; the loop inherits both.
cd $W/cwd || echo "FAIL cd cwd"
exec 3>>held.txt
(
	i=0
	while [ ! -e /tmp/stop ]; do
		echo "f $i" >"$W/loop/f-$i" || echo "FAIL create f-$i"
		echo "line $i" >>$W/log.txt || echo "FAIL append log $i"
		echo "shared $i" >>$W/shared.txt || echo "FAIL append shared $i"
		/bin/echo "held $i" >&3 || echo "FAIL write fd 3 $i"
		echo "rel $i" >"rel-$i" || echo "FAIL create rel-$i"
		[ "$(cat "$W/loop/f-$i")" = "f $i" ] || echo "FAIL read f-$i"
		i=$((i + 1))
		echo $i >/tmp/loop.count
	done
	echo "loop iterations: $i"
) >/tmp/loop.out 2>&1 &
loop=$!
echo "before commit1: $(progress 15)"
ask ready-commit1 committed1
n1=$(count)
echo "after commit1: $(progress 15)"
ask ready-commit2 committed2
n2=$(count)
n3=$(progress 10)
[ "$n3" -gt "$n2" ] && [ "$n2" -gt "$n1" ] && echo "the loop went on after both commits" ||
	echo "FAIL the loop stopped: $n1 $n2 $n3"
touch /tmp/stop
wait $loop
cat /tmp/loop.out
# The held file and the current directory, made before both commits, still work.
/bin/echo "held end" >&3 && echo "fd 3 after the commits: ok" || echo "FAIL fd 3 after the commits"
echo end >end.txt && echo "cwd create after the commits: ok" || echo "FAIL cwd create after the commits"
echo "cwd pwd: $(/bin/pwd)"
echo "cwd rel files: $(ls . | grep -c '^rel-')"
echo "loop files: $(ls $W/loop | grep -c '^f-')"
sh /run/tests/manifest.sh $W >/mnt/after.manifest 2>/mnt/after.err || echo "FAIL after manifest"
ask ready-check checked

echo "== snapshot"
echo snap >$W/snap.txt || echo "FAIL write snap.txt"
ask ready-snap snapped
# Made after the snapshot: a directory to stand in, a file held open in it. And a file of
# the snapshot held open for reading (restored, it is a copy: another object).
mkdir $W/after && cd $W/after || echo "FAIL mkdir after"
exec 4>>open.txt
echo one >&4 || echo "FAIL write fd 4"
exec 5<$W/snap.txt
echo "fd 5 before: $(cat /proc/self/fd/5)"

echo "== reset to s1"
ask ready-reset1 reset1
sleep 2 # past the attribute cache (actimeo=1): what follows asks the server
echo "reset1 fd 4 write: $(fdwrite 4 two)"
echo "reset1 cwd ls: $(err ls .)"
echo "reset1 cwd create: $(err touch x)"
echo "reset1 fd 5 reopen: $(err cat /proc/self/fd/5)"
exec 4>&- 5<&-
cd $W || echo "FAIL cd $W"
echo "reset1 after: $(err ls $W/after)"
echo "reset1 snap.txt: $(cat $W/snap.txt 2>&1)"
echo "reset1 fresh: $( (mkdir fresh && echo x >fresh/f && cat fresh/f) 2>&1)"
echo "reset1 fd 3: $(fdwrite 3 "held reset1")"
echo "reset1 loop files: $(ls $W/loop | grep -c '^f-')"
echo "reset1 loop contents wrong: $(for f in $W/loop/f-*; do [ "$(cat "$f")" = "f ${f##*-}" ] || echo "$f"; done | wc -l)"
echo "reset1 log.txt: $(sum $W/log.txt)"
echo "reset1 shared.txt: $(sum $W/shared.txt)"

echo "== reset to the layers"
cd $W/cwd || echo "FAIL cd cwd"
ask ready-reset2 reset2
sleep 2
echo "reset2 snap.txt: $(err cat $W/snap.txt)"
echo "reset2 fresh: $(err ls $W/fresh)"
echo "reset2 cwd ls: $(err ls .)"
echo "reset2 fd 3: $(fdwrite 3 "held reset2")"
cd $W || echo "FAIL cd $W"
echo "reset2 fresh2: $( (mkdir fresh2 && echo x >fresh2/f && cat fresh2/f) 2>&1)"
echo "reset2 loop files: $(ls $W/loop | grep -c '^f-')"
echo "reset2 loop contents wrong: $(for f in $W/loop/f-*; do [ "$(cat "$f")" = "f ${f##*-}" ] || echo "$f"; done | wc -l)"
echo "reset2 rel files: $(ls $W/cwd | grep -c '^rel-')"
echo "reset2 log.txt: $(sum $W/log.txt)"
echo "reset2 shared.txt: $(sum $W/shared.txt)"
echo "reset2 top.txt: $(cat $W/top.txt 2>&1)"

echo "== unmount"
exec 3>&-
cd /
echo "umount: $(err umount $W)"
echo "== done"
