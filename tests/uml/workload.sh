#!/bin/sh
# workload.sh ROOT: the file operations the UML test runs in the union mounted at ROOT.
# It runs twice on identical layer copies: inside the UML guest on the ovlnfs export
# (the real Linux NFS client) and on the host on a kernel overlay mount (the oracle). The
# transcripts and the resulting trees must match.
#
# Every step prints "## name", its output, and "exit status N" when N is not 0, so a diff of the two transcripts
# names the operation that diverged. Steps keep going after a failure.
# The layer fixture is built by the Go test (see layers in uml_test.go).
cd "$1" || exit 1
umask 022
export LC_ALL=C TZ=UTC

# step NAME CMD...: a header, the command's output with the mount point replaced by ROOT.
step() {
	name=$1
	shift
	echo "## $name"
	"$@" 2>&1 | sed -e "s,$PWD,ROOT,g"
}
# run CMD...: CMD, then its exit status when it is not 0 (a pipe would hide it).
run() {
	"$@"
	rc=$?
	[ $rc -eq 0 ] || echo "exit status $rc"
	return 0
}
show() { for f in "$@"; do printf '%s: ' "$f"; cat "$f" 2>&1 || true; done; }

step "create"            run sh -c 'echo created > created.txt'
step "create in lower dir" run sh -c 'echo hi > shared/created-in-merged.txt'
step "append to lower file" run sh -c 'echo appended >> base.txt'
step "append to upper file" run sh -c 'echo appended >> upper-only.txt'
step "read after append"   show base.txt upper-only.txt
step "overwrite lower file" run sh -c 'printf "overwritten\n" > shared/both.txt'
step "overwrite via cp"    run cp base.txt shared/from_l2.txt
step "truncate shrink lower" run truncate -s 3 lowfile.txt
step "truncate grow"       run truncate -s 10000 created.txt
step "truncate to zero"    run sh -c ': > shared/from_l1.txt'
step "read after truncate" show lowfile.txt shared/from_l1.txt
step "chmod lower file"    run chmod 0640 shared/both.txt
step "chmod lower dir"     run chmod 0700 project
step "chmod new file"      run chmod 0755 created.txt
step "chown lower file"    run chown 1234:5678 chownme.txt
step "chown upper file"    run chown 42:43 upper-only.txt
step "chgrp lower dir"     run chgrp 99 shared
step "touch -d lower file" run touch -d "2005-06-07 08:09:10" base.txt
step "touch -d new file"   run touch -d "2006-01-02 03:04:05" created.txt
step "touch -d lower dir"  run touch -d "2007-01-01 00:00:00" movedir
step "touch create"        run touch -d "2008-02-03 04:05:06" touched-new.txt
step "mkdir -p new"        run mkdir -p newdir/x/y/z
step "mkdir -p in lower"   run mkdir -p shared/deeper/and/deeper
step "mkdir existing"      run mkdir shared
step "rm upper file"       run rm upper-only2.txt
step "rm lower file"       run rm shared/from_l1.txt
step "rm missing"          run rm no-such-file
step "rmdir new"           run sh -c 'mkdir emptydir && rmdir emptydir'
step "rmdir lower empty dir" run rmdir emptylow
step "rmdir non-empty"     run rmdir shared
step "rm -rf merged tree"  run rm -rf tree
step "recreate removed dir" run sh -c 'mkdir tree && echo fresh > tree/fresh.txt'
step "ls recreated dir"    run ls tree
step "mv new file"         run mv created.txt renamed.txt
step "mv lower file"       run mv lowfile.txt shared/lowfile-moved.txt
step "mv over lower file"  run mv touched-new.txt shared/from_l2.txt
step "mv upper file"       run mv upper-only.txt upper-renamed.txt
step "mv lower dir"        run mv movedir moved-dir
step "ls moved dir"        run ls -R moved-dir
step "read in moved dir"   show moved-dir/m1.txt moved-dir/sub/m2.txt
# Directories with lower parts move with a redirect, their trees staying in the lowers.
step "mv lower dir elsewhere" run sh -c 'mkdir -p newplace && mv deepdir/a newplace/a2 && ls -R newplace && cat newplace/a2/top.txt newplace/a2/b/leaf.txt'
step "mv it again, and back" run sh -c 'mv newplace/a2 a3 && mv a3 deepdir/a && ls -R deepdir && ! ls newplace/a2 a3 2>/dev/null'
step "mv out of a moved dir" run sh -c 'mv moved-dir/sub sub-out && mv moved-dir moved-again && ls -R moved-again sub-out && cat sub-out/m2.txt'
# npm's pattern: the old tree aside, the new one in its place, the old one removed.
step "rename-over (npm)"   run sh -c 'mkdir npmpkg.new && echo "{\"version\": \"2.0.0\"}" > npmpkg.new/package.json && mv npmpkg npmpkg.old && mv npmpkg.new npmpkg && rm -rf npmpkg.old && cat npmpkg/package.json && ls -A npmpkg && ! ls npmpkg.old 2>/dev/null'
step "mv dir onto empty lower dir" run sh -c 'mv -T overdir emptytarget && ls emptytarget && cat emptytarget/keep.txt && ! ls overdir 2>/dev/null'
step "mv dir onto removed name" run sh -c 'rm chownme.txt && mv renamesrc chownme.txt && ls chownme.txt && cat chownme.txt/r.txt'
# A process keeps a renamed directory as its cwd, another a file open inside one.
step "cwd in renamed dir"  run sh -c 'cd cwddir && mv ../cwddir ../cwddir2 && cat file.txt && echo made > made.txt && ls && ls ../cwddir2'
step "open file in renamed dir" run sh -c 'exec 3< opendir/file.txt && mv opendir opendir2 && cat <&3 && cat opendir2/file.txt'
step "rm -rf renamed dir"  run sh -c 'rm -rf moved-again && ! ls moved-again 2>/dev/null && ls -A sub-out'
step "mv new dir"          run mv newdir newdir-renamed
step "mv dir into itself"  run mv shared shared/deeper
step "symlink"             run ln -s base.txt sym-new
step "symlink dangling"    run ln -s no/such/target sym-dangling
step "readlink new"        run readlink sym-new
step "readlink lower"      run readlink link-to-base
step "read through symlink" run cat sym-new
step "hard link lower file" run ln hard.txt hard2.txt
step "hard link new file"  run ln renamed.txt renamed-link.txt
step "hard link count"     run stat -c '%h %n' hard.txt hard2.txt renamed.txt renamed-link.txt
step "write through link"  run sh -c 'echo via-link >> hard2.txt'
step "read other link"     show hard.txt
step "same inode, link count" run sh -c '[ "$(stat -c %i hard.txt)" = "$(stat -c %i hard2.txt)" ] && echo same inode; stat -c "%h %n" hard.txt hard2.txt'
# A lower file with two names (index=on): a link to one, a write through the new name;
# every name shows the write, one inode and the count of names.
step "hard link lower multi-link file" run sh -c 'ln multi.txt multi3.txt && echo via-multi3 >> multi3.txt && cat multi.txt multi-dir/alias.txt multi3.txt && stat -c "%h %s %n" multi.txt multi-dir/alias.txt multi3.txt'
step "multi-link names one inode" run sh -c 'i=$(stat -c %i multi.txt); for n in multi-dir/alias.txt multi3.txt; do [ "$(stat -c %i $n)" = "$i" ] || echo "$n differs"; done; echo checked'
step "write through lower alias" run sh -c 'echo via-alias >> multi-dir/alias.txt && cat multi.txt && rm multi.txt && stat -c "%h %n" multi-dir/alias.txt multi3.txt'
step "cp -a tree"          run cp -a cpsrc cpdst
# "total" (blocks used) is left out: NFSv3 servers report usage their own way.
step "cp -a result"        run sh -c 'ls -lR --time-style=+%Y cpdst | grep -v "^total"'

# A developer workflow in a directory that comes from a lower layer.
export HOME=/nonexistent GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null
export GIT_AUTHOR_NAME=ovlnfs GIT_AUTHOR_EMAIL=test@ovlnfs.invalid
export GIT_COMMITTER_NAME=ovlnfs GIT_COMMITTER_EMAIL=test@ovlnfs.invalid
export GIT_AUTHOR_DATE="2010-01-01T00:00:00Z" GIT_COMMITTER_DATE="2010-01-01T00:00:00Z"
step "git init"            run git -C project -c init.defaultBranch=main init -q
step "git add"             run git -C project add -A
step "git commit"          run git -C project commit -q -m "initial import"
step "git status"          run git -C project status --porcelain
step "git log"             run git -C project log --format='%H %s'
step "git edit+commit"     run sh -c 'echo "int x;" >> project/main.c && git -C project commit -q -am "edit" && git -C project status --porcelain'
step "git fsck"            run git -C project fsck --no-progress
step "git mv lower dir"    run sh -c 'git -C project mv src lib && git -C project commit -q -m "src is lib" && git -C project status --porcelain && ls project/lib && cat project/lib/util.c && git -C project log --format=%s --name-status -1'
step "git fsck after mv"   run git -C project fsck --no-progress

# Durability: conv=fsync ends in a COMMIT, oflag=sync sends stable WRITEs (the test checks
# the server synced before answering).
step "dd conv=fsync"       run sh -c 'dd if=/dev/zero of=synced.bin bs=1M count=4 conv=fsync 2>/dev/null && cksum synced.bin'
step "dd oflag=sync"       run sh -c 'dd if=/dev/zero of=osync.bin bs=4k count=4 oflag=sync 2>/dev/null && cksum osync.bin'

# Errors: each must reach the program as the errno the kernel overlay gives (the transcript
# holds the messages), never as EIO.
long=$(printf '%0256d' 0)
step "rmdir on a file"     run rmdir hard.txt
step "mkdir on a file"     run mkdir base.txt
step "mkdir on a dir"      run mkdir project
# In a directory of the upper alone: the kernel overlay marks a directory it is about to
# rename into a merged directory opaque even when the rename then fails, which the union
# does not copy.
step "mv dir onto non-empty dir" run sh -c 'mkdir -p errs/ne-src errs/ne-dst/sub && mv -T errs/ne-src errs/ne-dst'
step "mv dir onto file"    run sh -c 'echo f > errs/file && mv -T errs/ne-src errs/file'
step "mv file onto dir"    run mv -T errs/file errs/ne-dst
step "ln onto existing"    run ln hard.txt base.txt
step "ln -s onto existing" run ln -s hard.txt base.txt
step "mknod fifo onto existing" run mkfifo base.txt
step "rm a dir"            run rm errs/ne-dst/sub
step "unlink a dir"        run unlink errs/ne-dst/sub
step "cd into a file"      run sh -c 'cd hard.txt'
step "create under a file" run sh -c 'echo x > hard.txt/new'
step "name of 256 bytes"   run touch "$long"
step "mkdir name of 256 bytes" run mkdir "$long"
step "name of 255 bytes"   run sh -c 'touch "$(printf "%0255d" 0)" && ls | grep -c "^00000"'
step "mv merged dir"       run sh -c 'mv shared shared-moved && ls -A shared-moved && ! ls shared 2>/dev/null'
step "truncate a dir"      run truncate -s 0 errs/ne-dst
# O_CREAT|O_EXCL is an EXCLUSIVE CREATE over NFSv3 (noclobber opens with O_EXCL).
step "exclusive create"    run sh -c 'set -C; echo one > excl.txt; echo two > excl.txt; cat excl.txt; stat -c "%a %s" excl.txt'
step "exclusive create on lower" run sh -c 'set -C; echo x > hard.txt'
# Attributes: special mode bits, atime apart from mtime, ctime moving on chmod.
step "setuid setgid sticky" run sh -c 'echo s > suid.sh && chmod 4755 suid.sh && chmod 2755 errs && chmod +t errs/ne-dst && stat -c "%a %A %n" suid.sh errs errs/ne-dst'
step "atime apart from mtime" run sh -c 'touch -a -d "2001-01-01 00:00:01" suid.sh && touch -m -d "2002-02-02 00:00:02" suid.sh && stat -c "%X %Y" suid.sh'
step "ctime moves on chmod" run sh -c 'a=$(stat -c %Z suid.sh); sleep 1; chmod 700 suid.sh; b=$(stat -c %Z suid.sh); [ "$a" != "$b" ] && echo ctime changed'
# Special files through MKNOD (as root).
step "mknod chr blk fifo"  run sh -c 'mknod errs/cdev c 1 3 && mknod errs/bdev b 7 0 && mkfifo errs/fifo && stat -c "%F %t:%T %a %n" errs/cdev errs/bdev errs/fifo'
step "mknod socket"        run python3 -c 'import socket, os; s = socket.socket(socket.AF_UNIX); s.bind("errs/sock"); print(oct(os.lstat("errs/sock").st_mode))'
step "mknod whiteout-like" run mknod errs/wh c 0 0
# Credentials: what a user creates is that user's, and the mode bits decide what it may do
# (ACCESS answers for the caller's uid and groups, not for the server).
as_user() { setpriv --reuid=1000 --regid=1000 --clear-groups "$@"; }
step "user dir"            run sh -c 'mkdir userdir && chmod 1777 userdir && echo secret > secret.txt && chmod 600 secret.txt'
step "user creates"        run as_user sh -c 'echo mine > userdir/mine.txt && mkdir userdir/mydir && ln -s mine.txt userdir/mylink && mkfifo userdir/myfifo && stat -c "%u:%g %a %n" userdir/mine.txt userdir/mydir userdir/mylink userdir/myfifo'
step "user reads own file" run as_user cat userdir/mine.txt
step "user reads 0600 file" run as_user cat secret.txt
step "user writes root's file" run as_user sh -c 'echo no >> base.txt'
step "user lists 0700 dir" run as_user ls project
step "user creates in root's dir" run as_user touch not-mine.txt
step "user removes root's file" run as_user rm -f secret.txt
step "root reads user file" run cat userdir/mine.txt
step "final listing"       run sh -c 'ls -A . shared-moved'
