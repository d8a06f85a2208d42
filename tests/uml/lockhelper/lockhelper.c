/*
 * lockhelper FILE STEP...: POSIX record locks (fcntl) on one open file, step by step,
 * for the UML lock workload. The test builds it on the host with gcc -static, since the
 * guest may have no compiler and no python. Steps:
 *
 *   lock r|w START LEN    F_SETLK: "ok" or the errno's name (EAGAIN, EACCES, ENOLCK...)
 *   lockw r|w START LEN   F_SETLKW: waits; "ok" or the errno's name
 *   unlock START LEN      F_SETLK F_UNLCK
 *   getlk r|w START LEN   F_GETLK: "unlocked" or "held r|w START LEN"
 *   sleep MS
 *   touch PATH            create PATH (a signal to the host or another process)
 *   waitfile PATH         wait until PATH exists (at most 3 minutes)
 *
 * Each step prints one line: the step, its outcome and how long it took in ms. The locks
 * go with the process: they are released when it exits. Exit status 0 unless a step's
 * arguments are wrong.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static long long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static const char *errname(int e)
{
	switch (e) {
	case EAGAIN: return "EAGAIN";
	case EACCES: return "EACCES";
	case ENOLCK: return "ENOLCK";
	case EDEADLK: return "EDEADLK";
	case EINTR: return "EINTR";
	case EIO: return "EIO";
	case EBADF: return "EBADF";
	case EINVAL: return "EINVAL";
	}
	return strerror(e);
}

static int usage(void)
{
	fprintf(stderr, "usage: lockhelper FILE STEP... (see the source)\n");
	return 2;
}

int main(int argc, char **argv)
{
	if (argc < 2)
		return usage();
	int fd = open(argv[1], O_RDWR | O_CREAT, 0644);
	if (fd < 0) {
		printf("open %s: %s\n", argv[1], errname(errno));
		return 1;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	for (int i = 2; i < argc;) {
		const char *step = argv[i];
		long long t0 = now_ms();
		if (!strcmp(step, "lock") || !strcmp(step, "lockw") || !strcmp(step, "getlk")) {
			if (i + 3 >= argc)
				return usage();
			struct flock fl = {0};
			fl.l_type = argv[i + 1][0] == 'w' ? F_WRLCK : F_RDLCK;
			fl.l_whence = SEEK_SET;
			fl.l_start = atoll(argv[i + 2]);
			fl.l_len = atoll(argv[i + 3]);
			if (!strcmp(step, "getlk")) {
				int r = fcntl(fd, F_GETLK, &fl);
				if (r < 0)
					printf("getlk %s %s %s: %s", argv[i + 1], argv[i + 2], argv[i + 3], errname(errno));
				else if (fl.l_type == F_UNLCK)
					printf("getlk %s %s %s: unlocked", argv[i + 1], argv[i + 2], argv[i + 3]);
				else
					printf("getlk %s %s %s: held %s %lld %lld", argv[i + 1], argv[i + 2], argv[i + 3],
					       fl.l_type == F_WRLCK ? "w" : "r", (long long)fl.l_start, (long long)fl.l_len);
			} else {
				int r = fcntl(fd, !strcmp(step, "lock") ? F_SETLK : F_SETLKW, &fl);
				printf("%s %s %s %s: %s", step, argv[i + 1], argv[i + 2], argv[i + 3], r < 0 ? errname(errno) : "ok");
			}
			i += 4;
		} else if (!strcmp(step, "unlock")) {
			if (i + 2 >= argc)
				return usage();
			struct flock fl = {0};
			fl.l_type = F_UNLCK;
			fl.l_whence = SEEK_SET;
			fl.l_start = atoll(argv[i + 1]);
			fl.l_len = atoll(argv[i + 2]);
			int r = fcntl(fd, F_SETLK, &fl);
			printf("unlock %s %s: %s", argv[i + 1], argv[i + 2], r < 0 ? errname(errno) : "ok");
			i += 3;
		} else if (!strcmp(step, "sleep")) {
			if (i + 1 >= argc)
				return usage();
			long ms = atol(argv[i + 1]);
			struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
			nanosleep(&ts, NULL);
			printf("sleep %ld", ms);
			i += 2;
		} else if (!strcmp(step, "touch")) {
			if (i + 1 >= argc)
				return usage();
			int f = open(argv[i + 1], O_WRONLY | O_CREAT, 0644);
			printf("touch %s: %s", argv[i + 1], f < 0 ? errname(errno) : "ok");
			if (f >= 0)
				close(f);
			i += 2;
		} else if (!strcmp(step, "waitfile")) {
			if (i + 1 >= argc)
				return usage();
			int ok = 0;
			for (int n = 0; n < 1800 && !ok; n++) {
				ok = access(argv[i + 1], F_OK) == 0;
				if (!ok) {
					struct timespec ts = {0, 100000000};
					nanosleep(&ts, NULL);
				}
			}
			printf("waitfile %s: %s", argv[i + 1], ok ? "ok" : "timeout");
			i += 2;
		} else {
			return usage();
		}
		printf(" (%lld ms)\n", now_ms() - t0);
	}
	return 0;
}
