#!/bin/sh
# Installs what bench/peers needs, from Debian packages only, and builds fio with
# the libnfs engine from Debian's own fio source package into a cache directory
# (default /var/cache/ovlnfs-bench/fio). /etc/apt is not modified: the deb-src
# entries live in a private SourceParts directory.
#
#   sh bench/peers/setup.sh            # prints the path of the fio binary last
set -eu
CACHE=${OVLNFS_BENCH_CACHE:-/var/cache/ovlnfs-bench}
FIO=$CACHE/fio/fio
export DEBIAN_FRONTEND=noninteractive
need=""
for p in nfs-ganesha nfs-ganesha-vfs rpcbind libnfs-utils libnfs-dev build-essential dpkg-dev pkg-config; do
	dpkg -s "$p" >/dev/null 2>&1 || need="$need $p"
done
if [ -n "$need" ]; then
	apt-get update -q
	apt-get install -y -q --no-install-recommends $need
fi
# Ganesha's Debian package starts its service on install where a service manager
# runs; the benchmark runs its own ganesha.nfsd and rpcbind in a network namespace.
if [ ! -x "$FIO" ] || ! "$FIO" --enghelp 2>/dev/null | grep -qw nfs; then
	src=$CACHE/src
	mkdir -p "$src/sources.list.d" "$src/lists/partial"
	sed 's/^Types: deb$/Types: deb-src/' /etc/apt/sources.list.d/debian.sources >"$src/sources.list.d/debian-src.sources"
	APT="-o Dir::Etc::SourceList=/dev/null -o Dir::Etc::SourceParts=$src/sources.list.d -o Dir::State::Lists=$src/lists"
	# shellcheck disable=SC2086
	apt-get $APT update -q
	# fio's build dependencies that matter for a libnfs build (the rest are optional engines).
	apt-get install -y -q --no-install-recommends zlib1g-dev libaio-dev >/dev/null
	rm -rf "$src/build" && mkdir -p "$src/build"
	# shellcheck disable=SC2086
	(cd "$src/build" && apt-get $APT source --download-only fio && dpkg-source -x fio_*.dsc fio)
	(cd "$src/build/fio" && ./configure --enable-libnfs >"$src/configure.log" && make -j"$(nproc)" >"$src/make.log" 2>&1)
	mkdir -p "$CACHE/fio"
	cp "$src/build/fio/fio" "$FIO"
	"$FIO" --enghelp | grep -qw nfs || { echo "fio built without the nfs engine" >&2; exit 1; }
fi
echo "$FIO"
