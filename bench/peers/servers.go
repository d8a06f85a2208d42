package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/ovlnfs/ovlnfs/bench/benchenv"
	"golang.org/x/sys/unix"
)

// contender is one server under test, started afresh for each round over its own
// copy of the lower layer and a fresh upper.
type contender struct {
	name  string
	short string // "ovlnfs" or "ganesha"
	base  string // its directory: lower/, and per round r<N>/upper, r<N>/work
	lower string
	// set by start for the running round
	upper string
	view  string // where the job checks the files it wrote: ovlnfs's upper, the kernel overlay's mount
	url   string // libnfs URL of the export
	// metrics is the HOST:PORT of ovlnfs's /metrics (empty for Ganesha)
	metrics string
	cmd     *exec.Cmd
	logf    *os.File
	start   func(c *contender, round int) error
	stop    func(c *contender)
	exited  chan struct{}
}

func (c *contender) alive() bool {
	if c.cmd == nil {
		return false
	}
	select {
	case <-c.exited:
		return false
	default:
		return true
	}
}

// cpu returns the server process's user+system CPU seconds so far (all its threads).
func (c *contender) cpu() float64 {
	if c.cmd == nil || c.cmd.Process == nil {
		return 0
	}
	return benchenv.CPUSeconds(c.cmd.Process.Pid)
}

func (c *contender) roundDirs(round int) (upper, work string, err error) {
	r := filepath.Join(c.base, fmt.Sprintf("r%d", round))
	os.RemoveAll(r)
	upper, work = filepath.Join(r, "upper"), filepath.Join(r, "work")
	if err = os.MkdirAll(upper, 0o755); err == nil {
		err = os.MkdirAll(work, 0o755)
	}
	return upper, work, err
}

func (c *contender) cleanRound(round int) {
	os.RemoveAll(filepath.Join(c.base, fmt.Sprintf("r%d", round)))
}

// launch starts a server process with its output appended to log, and waits until
// addr accepts connections.
func (c *contender) launch(log string, addr string, bin string, args ...string) error {
	lf, err := os.OpenFile(log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = lf, lf
	if err := cmd.Start(); err != nil {
		lf.Close()
		return err
	}
	c.cmd, c.logf, c.exited = cmd, lf, make(chan struct{})
	go func() { cmd.Wait(); close(c.exited) }()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if !c.alive() {
			return fmt.Errorf("%s exited at start: %s", bin, benchenv.Tail(log))
		}
		if conn, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			conn.Close()
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	c.kill()
	return fmt.Errorf("%s did not listen on %s: %s", bin, addr, benchenv.Tail(log))
}

// kill stops the server: SIGTERM, then SIGKILL after 20 s.
func (c *contender) kill() {
	if c.cmd == nil {
		return
	}
	if c.alive() {
		c.cmd.Process.Signal(unix.SIGTERM)
		select {
		case <-c.exited:
		case <-time.After(20 * time.Second):
			c.cmd.Process.Kill()
			<-c.exited
		}
	}
	c.logf.Close()
	c.cmd = nil
}

func libnfsURL(export string, nfsPort, mountPort int) string {
	return fmt.Sprintf("nfs://127.0.0.1%s?version=3&nfsport=%d&mountport=%d&auto-traverse-mounts=0", export, nfsPort, mountPort)
}

// newOvlnfs is contender A: `ovlnfs serve` over the lower and a fresh upper, NFS and
// MOUNT on one port of 127.0.0.1.
func newOvlnfs(base, bin, logDir string) *contender {
	return &contender{
		name: "ovlnfs", short: "ovlnfs", base: base, lower: filepath.Join(base, "lower"),
		start: func(c *contender, round int) error {
			upper, work, err := c.roundDirs(round)
			if err != nil {
				return err
			}
			port, err := benchenv.FreePort()
			if err != nil {
				return err
			}
			mport, err := benchenv.FreePort()
			for err == nil && mport == port {
				mport, err = benchenv.FreePort()
			}
			if err != nil {
				return err
			}
			addr := fmt.Sprintf("127.0.0.1:%d", port)
			maddr := fmt.Sprintf("127.0.0.1:%d", mport)
			if err := c.launch(filepath.Join(logDir, "ovlnfs.log"), addr, bin, "serve", "--lowerdir="+c.lower,
				"--upperdir="+upper, "--workdir="+work, "--listen="+addr, "--metrics-listen="+maddr, "--log-level=warn"); err != nil {
				return err
			}
			c.upper, c.view, c.url, c.metrics = upper, upper, libnfsURL("/", port, port), maddr
			return nil
		},
		stop: func(c *contender) { c.kill() },
	}
}

// rpcbind runs `rpcbind -f` in a network namespace of its own (its 0.0.0.0:111
// listener stays there); Ganesha registers through /run/rpcbind.sock.
type rpcbind struct {
	ns      string
	cmd     *exec.Cmd
	created []string // files under /run this process created
}

func startRpcbind() (*rpcbind, error) {
	r := &rpcbind{ns: fmt.Sprintf("ovlnfs-peers-%d", os.Getpid())}
	if _, err := os.Stat("/run/rpcbind.sock"); err == nil {
		return r, nil // an rpcbind is already running: Ganesha registers with it
	}
	// rpcbind leaves its socket and lock file, and its state files on exit
	for _, f := range []string{"/run/rpcbind.sock", "/run/rpcbind.lock", "/run/rpcbind/rpcbind.xdr", "/run/rpcbind/portmap.xdr", "/run/rpcbind"} {
		if _, err := os.Stat(f); errors.Is(err, os.ErrNotExist) {
			r.created = append(r.created, f)
		}
	}
	os.MkdirAll("/run/rpcbind", 0o755)
	if o, err := exec.Command("ip", "netns", "add", r.ns).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("ip netns add: %v %s", err, o)
	}
	exec.Command("ip", "netns", "exec", r.ns, "ip", "link", "set", "lo", "up").Run()
	r.cmd = exec.Command("ip", "netns", "exec", r.ns, "rpcbind", "-f")
	if err := r.cmd.Start(); err != nil {
		r.stop()
		return nil, err
	}
	for i := 0; i < 100; i++ {
		if _, err := os.Stat("/run/rpcbind.sock"); err == nil {
			return r, nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	r.stop()
	return nil, fmt.Errorf("rpcbind did not create /run/rpcbind.sock")
}

func (r *rpcbind) stop() {
	if r.cmd != nil && r.cmd.Process != nil {
		r.cmd.Process.Signal(unix.SIGTERM)
		done := make(chan struct{})
		go func() { r.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			r.cmd.Process.Kill()
			<-done
		}
	}
	for _, f := range r.created {
		os.Remove(f) // "/run/rpcbind" last, once empty
	}
	if r.cmd != nil {
		exec.Command("ip", "netns", "del", r.ns).Run()
	}
}

// newGanesha is contender B: NFS-Ganesha (FSAL VFS) exporting a kernel overlay mount
// (index=on,nfs_export=on) of its own copy of the same layers.
func newGanesha(base, logDir string) *contender {
	mnt := filepath.Join(base, "mnt")
	return &contender{
		name: "NFS-Ganesha + kernel overlay", short: "ganesha", base: base, lower: filepath.Join(base, "lower"),
		start: func(c *contender, round int) error {
			upper, work, err := c.roundDirs(round)
			if err != nil {
				return err
			}
			if err := os.MkdirAll(mnt, 0o755); err != nil {
				return err
			}
			opts := "lowerdir=" + c.lower + ",upperdir=" + upper + ",workdir=" + work + ",index=on,nfs_export=on"
			if err := unix.Mount("overlay", mnt, "overlay", 0, opts); err != nil {
				return fmt.Errorf("mount -t overlay -o %s: %w", opts, err)
			}
			nfsPort, err := benchenv.FreePort()
			if err != nil {
				return err
			}
			mntPort, err := benchenv.FreePort()
			for err == nil && mntPort == nfsPort {
				mntPort, err = benchenv.FreePort()
			}
			if err != nil {
				return err
			}
			state := filepath.Join(base, "ganesha-state")
			os.MkdirAll(state, 0o755)
			conf := filepath.Join(base, "ganesha.conf")
			if err := os.WriteFile(conf, []byte(fmt.Sprintf(ganeshaConf, nfsPort, mntPort, state, mnt)), 0o644); err != nil {
				return err
			}
			if err := c.launch(filepath.Join(logDir, "ganesha.log"), fmt.Sprintf("127.0.0.1:%d", nfsPort), "ganesha.nfsd",
				"-F", "-f", conf, "-L", filepath.Join(logDir, "ganesha.log"), "-p", filepath.Join(base, "ganesha.pid"), "-N", "NIV_EVENT"); err != nil {
				unix.Unmount(mnt, 0)
				return err
			}
			// the kernel overlay may copy a file up into its index directory (work/index)
			// when Ganesha opens it by handle, so its writes are checked in the mount
			c.upper, c.view, c.url = upper, mnt, libnfsURL(mnt, nfsPort, mntPort)
			return nil
		},
		stop: func(c *contender) {
			c.kill()
			for i := 0; i < 50; i++ {
				if err := unix.Unmount(mnt, 0); err == nil || errors.Is(err, unix.EINVAL) {
					return
				}
				time.Sleep(100 * time.Millisecond)
			}
			unix.Unmount(mnt, unix.MNT_DETACH)
		},
	}
}

const ganeshaConf = `NFS_CORE_PARAM {
	Protocols = 3;
	NFS_Port = %d;
	MNT_Port = %d;
	Bind_addr = 127.0.0.1;
	Enable_NLM = false;
	Enable_RQUOTA = false;
	Enable_UDP = false;
}
NFSV4 {
	Graceless = true;
	RecoveryBackend = fs;
	RecoveryRoot = "%s";
}
EXPORT {
	Export_Id = 1;
	Path = "%s";
	Pseudo = /peers;
	Protocols = 3;
	Transports = TCP;
	Access_Type = RW;
	Squash = No_Root_Squash;
	FSAL { Name = VFS; }
}
`
