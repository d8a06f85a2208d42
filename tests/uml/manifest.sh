#!/bin/sh
# manifest.sh DIR: everything the comparison needs about the tree under DIR, computed where
# the tree is visible (inside the UML guest over NFS, or on the host over the kernel
# overlay), so both sides use the same tools. The Go test parses and normalises it.
#   E<TAB>path<TAB>type<TAB>mode<TAB>uid:gid<TAB>nlink<TAB>size<TAB>inode<TAB>mtime<TAB>target
#   H<TAB>sha256<TAB>path
set -e
cd "$1"
find . -mindepth 1 -printf 'E\t%P\t%y\t%m\t%U:%G\t%n\t%s\t%i\t%T@\t%l\n' | LC_ALL=C sort
find . -type f -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum | sed 's,^\([0-9a-f]*\)  \./,H\t\1\t,'
