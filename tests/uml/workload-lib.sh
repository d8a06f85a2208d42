# workload-lib.sh: functions the guest's workload scripts share; they source it from
# /run/tests, where guest-init.sh finds them.

# ask NAME ANSWER: asks the host for a step and waits up to 60 s for its answer.
ask() {
	echo ready >"/mnt/$1"
	i=0
	while [ ! -e "/mnt/$2" ] && [ $i -lt 600 ]; do
		sleep 0.1
		i=$((i + 1))
	done
	if [ -e "/mnt/$2" ]; then
		echo "host answered $2: $(cat "/mnt/$2")"
	else
		echo "FAIL the host never wrote $2"
	fi
}

# err CMD...: the command's first line of error output, or "ok".
err() {
	if "$@" >/tmp/err.out 2>&1; then echo ok; else head -1 /tmp/err.out; fi
}

# fdwrite FD TEXT: writes a line through the shell's open fd FD: "ok" or the error
# (not through sh -c, whose start in a stale cwd has complaints of its own).
fdwrite() {
	if /bin/echo "$2" >&"$1" 2>/tmp/fd.err; then echo ok; else head -1 /tmp/fd.err; fi
}
