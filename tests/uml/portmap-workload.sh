#!/bin/sh
# portmap-workload.sh ROOT: runs in the UML guest on an export mounted with no port
# options (the ports came from the server's portmapper). Reads a lower file, lists the
# root, creates and appends to a file and reads it back, renames it; the host checks
# every line.
cd "$1" || exit 1
export LC_ALL=C
echo "== ls"
ls
echo "== cat"
cat hello.txt
echo "== write"
echo "written through a mount found by the portmapper" >new.txt && echo more >>new.txt && cat new.txt
mv new.txt renamed.txt && ls renamed.txt
echo "== done"
