/*
 * nfsclient: the small libnfs client bench/peers runs for the jobs fio cannot do.
 * Built by bench/peers with `cc -O2 nfsclient.c -lnfs` (package libnfs-dev).
 *
 *   nfsclient URL toolchain DIR   walk DIR (opendir/readdir = READDIRPLUS); for each
 *                                 regular file: nfs_stat64, nfs_open(O_RDONLY), read it
 *                                 whole in 1 MiB nfs_pread calls, nfs_close
 *   nfsclient URL write FILE OFF LEN
 *                                 nfs_open(O_WRONLY), one nfs_pwrite of LEN bytes at OFF
 *                                 (OFF = -1: at the end), nfs_fsync (COMMIT), nfs_close
 *   nfsclient URL sum FILE        read FILE whole, print its checksum
 *
 * URL is the mount: nfs://HOST/EXPORT?version=3&nfsport=P&mountport=P. Paths are relative
 * to the export. Timing excludes the mount. Output is one line of key=value pairs:
 * seconds, files, dirs, bytes and sum (order-independent: the sum over files of
 * mix(fnv1a(relative path) + fnv1a(content)), which bench/peers recomputes from the layers).
 * libnfs keeps no lookup cache: every stat and every open walks the path from the export
 * root, one LOOKUP per component.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <nfsc/libnfs.h>
#include <nfsc/libnfs-raw-nfs.h>

#define CHUNK (1 << 20)

static struct nfs_context *nfs;
static char *buf;
static uint64_t files, dirs, bytes, sum;

static uint64_t fnv(uint64_t h, const unsigned char *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		h ^= p[i];
		h *= 0x100000001b3ULL;
	}
	return h;
}
#define FNV0 0xcbf29ce484222325ULL

static uint64_t mix(uint64_t z)
{
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *what, const char *path)
{
	fprintf(stderr, "nfsclient: %s %s: %s\n", what, path, nfs_get_error(nfs));
	exit(1);
}

/* readwhole reads path to its end and returns the content's fnv1a. */
static uint64_t readwhole(const char *path, uint64_t *n)
{
	struct nfsfh *fh;
	uint64_t h = FNV0, off = 0;
	if (nfs_open(nfs, path, O_RDONLY, &fh) != 0)
		die("open", path);
	for (;;) {
		int k = nfs_pread(nfs, fh, off, CHUNK, buf);
		if (k < 0)
			die("read", path);
		if (k == 0)
			break;
		h = fnv(h, (unsigned char *)buf, k);
		off += k;
	}
	nfs_close(nfs, fh);
	*n = off;
	return h;
}

/* walk visits dir; rel is dir relative to the walk's root ("" for the root). */
static void walk(const char *dir, const char *rel)
{
	struct nfsdir *d;
	struct nfsdirent *e;
	char **subs = NULL;
	size_t nsubs = 0;
	if (nfs_opendir(nfs, dir, &d) != 0)
		die("opendir", dir);
	dirs++;
	while ((e = nfs_readdir(nfs, d)) != NULL) {
		if (!strcmp(e->name, ".") || !strcmp(e->name, ".."))
			continue;
		size_t pl = strlen(dir) + strlen(e->name) + 2, rl = strlen(rel) + strlen(e->name) + 2;
		char *path = malloc(pl), *r = malloc(rl);
		snprintf(path, pl, "%s/%s", dir, e->name);
		snprintf(r, rl, "%s%s%s", rel, *rel ? "/" : "", e->name);
		if (e->type == NF3DIR) {
			subs = realloc(subs, (nsubs + 2) * sizeof *subs);
			subs[nsubs++] = path;
			subs[nsubs++] = r;
			continue;
		}
		if (e->type == NF3REG) {
			struct nfs_stat_64 st;
			uint64_t n;
			if (nfs_stat64(nfs, path, &st) != 0)
				die("stat", path);
			uint64_t h = readwhole(path, &n);
			if (n != st.nfs_size) {
				fprintf(stderr, "nfsclient: %s: read %" PRIu64 " bytes, stat said %" PRIu64 "\n", path, n, (uint64_t)st.nfs_size);
				exit(1);
			}
			files++;
			bytes += n;
			sum += mix(fnv(FNV0, (unsigned char *)r, strlen(r)) + h);
		}
		free(path);
		free(r);
	}
	nfs_closedir(nfs, d);
	for (size_t i = 0; i < nsubs; i += 2) {
		walk(subs[i], subs[i + 1]);
		free(subs[i]);
		free(subs[i + 1]);
	}
	free(subs);
}

int main(int argc, char **argv)
{
	if (argc < 4) {
		fprintf(stderr, "usage: nfsclient URL toolchain DIR | write FILE OFF LEN | sum FILE\n");
		return 2;
	}
	nfs = nfs_init_context();
	struct nfs_url *u = nfs_parse_url_dir(nfs, argv[1]);
	if (u == NULL)
		die("parse url", argv[1]);
	if (nfs_mount(nfs, u->server, u->path) != 0)
		die("mount", argv[1]);
	buf = malloc(CHUNK);
	double t0 = now();
	if (!strcmp(argv[2], "toolchain")) {
		walk(argv[3], "");
	} else if (!strcmp(argv[2], "write") && argc == 6) {
		struct nfsfh *fh;
		struct nfs_stat_64 st;
		int64_t off = strtoll(argv[4], NULL, 10);
		uint64_t len = strtoull(argv[5], NULL, 10);
		char *w = malloc(len);
		for (uint64_t i = 0; i < len; i++)
			w[i] = (char)(i * 7 + 1);
		if (nfs_open(nfs, argv[3], O_WRONLY, &fh) != 0)
			die("open", argv[3]);
		if (off < 0) {
			if (nfs_fstat64(nfs, fh, &st) != 0)
				die("fstat", argv[3]);
			off = st.nfs_size;
		}
		int k = nfs_pwrite(nfs, fh, off, len, w);
		if (k < 0 || (uint64_t)k != len)
			die("write", argv[3]);
		if (nfs_fsync(nfs, fh) != 0)
			die("commit", argv[3]);
		if (nfs_fstat64(nfs, fh, &st) != 0)
			die("fstat", argv[3]);
		nfs_close(nfs, fh);
		files = 1;
		bytes = st.nfs_size; /* the file's size afterwards */
	} else if (!strcmp(argv[2], "sum")) {
		uint64_t n;
		sum = readwhole(argv[3], &n);
		files = 1;
		bytes = n;
	} else {
		fprintf(stderr, "nfsclient: unknown job %s\n", argv[2]);
		return 2;
	}
	double t = now() - t0;
	printf("seconds=%.6f files=%" PRIu64 " dirs=%" PRIu64 " bytes=%" PRIu64 " sum=%016" PRIx64 "\n", t, files, dirs, bytes, sum);
	nfs_umount(nfs);
	nfs_destroy_context(nfs);
	nfs_destroy_url(u);
	return 0;
}
