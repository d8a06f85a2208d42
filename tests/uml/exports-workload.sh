#!/bin/sh
# exports-workload.sh: runs in the UML guest (NOMOUNT=yes) against one ovlnfs serving an
# exports file (see exports_test.go for the file): two workspaces over the same lower layers,
# /ws/alice (root squashed) and /ws/bob (no_root_squash), an export for another host only
# (/other), a read-only rule (/ws/dave) and a read-only export (/base). The guest runs as
# root. In the middle the host changes the file twice, told by files in $OUT (/mnt here):
#   /mnt/ready-reload -> the host adds /ws/carol, removes /ws/bob, takes the guest out of
#                        /ws/dave's rules, SIGHUPs                      -> /mnt/reloaded
#   /mnt/ready-broken -> the host writes a file naming an unknown layer  -> /mnt/refused
# while a loop writes and reads through alice's mount. Every line is checked by the host;
# "FAIL" marks what the script itself finds wrong.
export LC_ALL=C
O="vers=3,proto=tcp,port=$PORT,mountport=$PORT,mountproto=tcp,nolock,addr=$SRV,mountaddr=$SRV,actimeo=1"

# mnt NAME EXPORT: mounts $SRV:EXPORT on /run/NAME.
mnt() {
	mkdir -p "/run/$1"
	if mount -t nfs -o "$O" "$SRV:$2" "/run/$1" >/tmp/mount.out 2>&1; then
		echo "mount $2: ok"
	else
		echo "mount $2: exit $? $(tr '\n' ' ' </tmp/mount.out)"
	fi
}

# waitfile PATH: waits up to 60 s for the host's answer.
waitfile() {
	i=0
	while [ ! -e "$1" ] && [ $i -lt 600 ]; do
		sleep 0.1
		i=$((i + 1))
	done
	[ -e "$1" ] && echo "host answered $1" || echo "FAIL the host never wrote $1"
}

# writer MOUNT NAME COUNT: COUNT files pub/NAME-i holding "NAME i".
writer() {
	i=0
	while [ $i -lt "$3" ]; do
		echo "$2 $i" >"/run/$1/pub/$2-$i" || echo "FAIL write $2-$i"
		i=$((i + 1))
	done
	echo "$2 wrote $i"
}

# during: how many files the loop on alice (below) has written and read back. The loop
# rewrites its count file in place, so a read that falls between the truncation and the
# write finds it empty: read again.
during() {
	c=$(cat /tmp/during.count 2>/dev/null)
	j=0
	while [ -z "$c" ] && [ $j -lt 300 ]; do
		sleep 0.1
		c=$(cat /tmp/during.count 2>/dev/null)
		j=$((j + 1))
	done
	echo "${c:-0}"
}

. /run/tests/workload-lib.sh # err

echo "== mounts"
mnt alice /ws/alice
mnt bob /ws/bob
mnt other /other
mnt dave /ws/dave
mnt base /base

echo "== two workspaces written at once"
writer alice alice 100 >/tmp/wa 2>&1 &
wa=$!
writer bob bob 100 >/tmp/wb 2>&1 &
wb=$!
# The same lower file copied up in both, differently.
echo alice-change >>/run/alice/shared.txt || echo "FAIL append alice"
echo bob-change >>/run/bob/shared.txt || echo "FAIL append bob"
wait $wa $wb
cat /tmp/wa /tmp/wb
echo "alice shared: $(tr '\n' ' ' </run/alice/shared.txt)"
echo "bob shared: $(tr '\n' ' ' </run/bob/shared.txt)"
echo "alice names in alice: $(ls /run/alice/pub | grep -c '^alice-')"
echo "bob names in alice: $(ls /run/alice/pub | grep -c '^bob-')"
echo "bob names in bob: $(ls /run/bob/pub | grep -c '^bob-')"
echo "alice names in bob: $(ls /run/bob/pub | grep -c '^alice-')"
echo "alice contents wrong: $(cat /run/alice/pub/alice-* | grep -vc '^alice [0-9]*$')"
echo "bob contents wrong: $(cat /run/bob/pub/bob-* | grep -vc '^bob [0-9]*$')"
echo "alice sees lower: $(cat /run/alice/pub/from-base.txt) $(cat /run/alice/top.txt)"

echo "== squashing"
touch /run/alice/pub/rootfile && echo "alice rootfile owner: $(stat -c %u:%g /run/alice/pub/rootfile)"
touch /run/bob/pub/rootfile && echo "bob rootfile owner: $(stat -c %u:%g /run/bob/pub/rootfile)"
# The export roots are root's, 0755: only an unsquashed root may create there.
echo "alice root-only create: $(err sh -c 'echo x >/run/alice/rootonly')"
echo "bob root-only create: $(err sh -c 'echo x >/run/bob/rootonly')"

echo "== read-only"
echo "dave read: $(cat /run/dave/shared.txt)"
# Creating, removing and making directories go to the server, which answers ROFS. Opening
# an existing file for writing is refused by the client itself: ACCESS, answered without
# the write bits for a read-only client (as knfsd answers for a ro export), makes it EACCES.
echo "dave write: $(err sh -c 'echo x >/run/dave/pub/x')"
echo "dave mkdir: $(err mkdir /run/dave/pub/newdir)"
echo "dave rm: $(err rm /run/dave/pub/from-base.txt)"
echo "dave append: $(err sh -c 'echo x >>/run/dave/shared.txt')"
echo "base read: $(cat /run/base/shared.txt)"
echo "base write: $(err sh -c 'echo x >/run/base/pub/x')"

echo "== reload"
# A loop writing and reading through alice's mount across both reloads.
(
	i=0
	while [ ! -e /tmp/stop ]; do
		echo "during $i" >"/run/alice/pub/during-$i" || echo "FAIL write during-$i"
		[ "$(cat "/run/alice/pub/during-$i")" = "during $i" ] || echo "FAIL read during-$i"
		i=$((i + 1))
		echo $i >/tmp/during.count
	done
	echo "during writes: $i"
) >/tmp/wd 2>&1 &
wd=$!
ls /run/bob >/dev/null
sleep 1
echo "during before reload: $(during)"
echo ready >/mnt/ready-reload
waitfile /mnt/reloaded
n1=$(during)
mnt carol /ws/carol
echo carol >/run/carol/pub/carol-file || echo "FAIL write carol"
echo "carol read: $(cat /run/carol/pub/carol-file)"
echo "carol shared: $(tr '\n' ' ' </run/carol/shared.txt)"
echo "carol names of others: $(ls /run/carol/pub | grep -c -e '^alice-' -e '^bob-' -e '^during-')"
sleep 2 # past bob's attribute cache (actimeo=1): what follows asks the server
echo "bob stat: $(err stat /run/bob/shared.txt)"
echo "bob ls: $(err ls /run/bob/pub)"
echo "bob create: $(err touch /run/bob/pub/after-removal)"
# dave's rule no longer admits the guest: the server answers its calls AUTH_TOOWEAK.
echo "dave refused stat: $(err stat /run/dave/shared.txt)"
echo "dave refused ls: $(err ls /run/dave/pub)"
echo "dave refused read: $(err cat /run/dave/pub/from-base.txt)"
n2=$(during)
[ "$n2" -gt "$n1" ] && echo "during went on after the reload" || echo "FAIL during stopped after the reload: $n1 $n2"

echo "== refused reload"
echo ready >/mnt/ready-broken
waitfile /mnt/refused
n3=$(during)
sleep 1
n4=$(during)
[ "$n4" -gt "$n3" ] && echo "during went on after the refused reload" || echo "FAIL during stopped after the refused reload: $n3 $n4"
echo "alice after refusal: $( (echo after >/run/alice/pub/after-refusal && cat /run/alice/pub/after-refusal) 2>&1)"
echo "carol after refusal: $(cat /run/carol/pub/carol-file 2>&1)"
touch /tmp/stop
wait $wd
cat /tmp/wd
echo "during files: $(ls /run/alice/pub | grep -c '^during-')"

echo "== unmount"
for m in alice carol dave base; do
	echo "umount $m: $(err umount /run/$m)"
done
# bob's export is gone: its mount can only be let go of.
umount /run/bob 2>/dev/null || umount -f /run/bob 2>/dev/null || umount -l /run/bob
echo "umount bob: $?"
grep -q " /run/other " /proc/mounts && echo "FAIL /other is mounted" && umount /run/other
echo "== done"
