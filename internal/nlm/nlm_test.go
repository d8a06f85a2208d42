package nlm_test

import (
	"bytes"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ovlnfs/ovlnfs/internal/locks"
	"github.com/ovlnfs/ovlnfs/internal/nlm"
	"github.com/ovlnfs/ovlnfs/internal/nsm"
	"github.com/ovlnfs/ovlnfs/internal/oncrpc"
	"github.com/ovlnfs/ovlnfs/internal/xdr"
)

// TestTestLockUnlock: in every version and over both transports, two clients contend
// for one range: the second is denied (TEST names the first's lock), is granted once the
// first unlocks; a shared lock is shared, other ranges are free, a stale handle is
// refused in the version's terms.
func TestTestLockUnlock(t *testing.T) {
	for _, vers := range []uint32{nlm.Version1, nlm.Version3, nlm.Version4} {
		for _, netid := range []string{"tcp", "udp"} {
			t.Run(netid+"-v"+string(rune('0'+vers)), func(t *testing.T) {
				s := startServer(t, serverOpts{})
				a := &client{t: t, s: s, netid: netid, vers: vers, name: "hosta"}
				b := &client{t: t, s: s, netid: netid, vers: vers, name: "hostb"}
				la := a.lockOf("f", 11, 100, 50)
				if st := a.lock(nlm.LockArgs{Cookie: []byte("c1"), Exclusive: true, Lock: la, State: 1}); st != nlm.StatGranted {
					t.Fatalf("first LOCK: %d", st)
				}
				lb := b.lockOf("f", 22, 120, 10)
				res := b.test(true, lb)
				if res.Stat != nlm.StatDenied || !res.Holder.Exclusive || res.Holder.SVID != 11 ||
					string(res.Holder.OH) != "11@hosta" || res.Holder.Offset != 100 || res.Holder.Length != 50 ||
					string(res.Cookie) != "t" {
					t.Fatalf("TEST: %+v", res)
				}
				if st := b.lock(nlm.LockArgs{Cookie: []byte("c2"), Exclusive: false, Lock: lb}); st != nlm.StatDenied {
					t.Fatalf("conflicting LOCK: %d", st)
				}
				if st := b.lock(nlm.LockArgs{Exclusive: true, Lock: b.lockOf("f", 22, 150, 0)}); st != nlm.StatGranted {
					t.Fatalf("LOCK of the rest of the file: %d", st)
				}
				if got := b.test(false, b.lockOf("g", 22, 0, 0)); got.Stat != nlm.StatGranted {
					t.Fatalf("TEST of another file: %+v", got)
				}
				if st := a.unlock(a.lockOf("f", 11, 0, 0)); st != nlm.StatGranted {
					t.Fatalf("UNLOCK: %d", st)
				}
				if st := b.lock(nlm.LockArgs{Exclusive: true, Lock: lb}); st != nlm.StatGranted {
					t.Fatalf("LOCK after the unlock: %d", st)
				}
				// Shared with shared.
				if st := a.lock(nlm.LockArgs{Lock: a.lockOf("s", 1, 0, 0)}); st != nlm.StatGranted {
					t.Fatal(st)
				}
				if st := b.lock(nlm.LockArgs{Lock: b.lockOf("s", 2, 0, 0)}); st != nlm.StatGranted {
					t.Fatal(st)
				}
				if got := a.test(true, a.lockOf("s", 1, 0, 0)); got.Stat != nlm.StatDenied || got.Holder.SVID != 2 || got.Holder.Exclusive {
					t.Fatalf("TEST of an upgrade: %+v", got)
				}
				stale := nlm.Lock{CallerName: []byte("hosta"), FH: staleFH, OH: []byte("x")}
				want := uint32(nlm.StatStaleFH)
				if vers != nlm.Version4 {
					want = nlm.StatDeniedNoLocks
				}
				if st := a.lock(nlm.LockArgs{Lock: stale}); st != want {
					t.Fatalf("LOCK of a stale handle: %d, want %d", st, want)
				}
				if got := a.test(false, stale); got.Stat != want {
					t.Fatalf("TEST of a stale handle: %d, want %d", got.Stat, want)
				}
			})
		}
	}
}

// TestBlockingLockGranted: a blocked lock is answered BLOCKED and, once the holder
// unlocks, taken and announced with a GRANTED call to the client's lock manager (found
// through its portmapper, over the transport the request came on) that names the
// request; while the client takes the grant the lock is held.
func TestBlockingLockGranted(t *testing.T) {
	for _, netid := range []string{"tcp", "udp"} {
		for _, vers := range []uint32{nlm.Version1, nlm.Version4} {
			t.Run(netid, func(t *testing.T) {
				ch := startClientHost(t)
				s := startServer(t, serverOpts{pmPort: ch.pmPort})
				a := &client{t: t, s: s, netid: netid, vers: vers, name: "hosta"}
				b := &client{t: t, s: s, netid: netid, vers: vers, name: "hostb"}
				c := &client{t: t, s: s, netid: netid, vers: vers, name: "hostc"}
				if st := a.lock(nlm.LockArgs{Exclusive: true, Lock: a.lockOf("f", 1, 0, 0)}); st != nlm.StatGranted {
					t.Fatal(st)
				}
				lb := b.lockOf("f", 2, 10, 20)
				args := nlm.LockArgs{Cookie: []byte("wait"), Block: true, Exclusive: true, Lock: lb}
				if st := b.lock(args); st != nlm.StatBlocked {
					t.Fatalf("blocking LOCK: %d", st)
				}
				// Asking again (the Linux client does, every 30 s) keeps one waiter.
				if st := b.lock(args); st != nlm.StatBlocked {
					t.Fatalf("blocking LOCK again: %d", st)
				}
				ch.quiet(100 * time.Millisecond)
				ch.grantAnswer.Store(nlm.StatGranted)
				if st := a.unlock(a.lockOf("f", 1, 0, 0)); st != nlm.StatGranted {
					t.Fatal(st)
				}
				cc := ch.expect(nlm.ProgramNumber, uint32(nlm.ProcGranted))
				if cc.netid != netid || cc.vers != vers {
					t.Errorf("GRANTED came over %s v%d", cc.netid, cc.vers)
				}
				g, err := nlm.DecodeTestArgs(xdr.NewReader(cc.args, 0), cc.vers)
				if err != nil {
					t.Fatal(err)
				}
				if !g.Exclusive || g.Lock.SVID != 2 || !bytes.Equal(g.Lock.FH, lb.FH) || !bytes.Equal(g.Lock.OH, lb.OH) ||
					g.Lock.Offset != 10 || g.Lock.Length != 20 || string(g.Lock.CallerName) != "testserver" {
					t.Errorf("GRANTED arguments: %+v", g)
				}
				got := c.test(false, c.lockOf("f", 3, 15, 1))
				if got.Stat != nlm.StatDenied || got.Holder.SVID != 2 {
					t.Fatalf("TEST after the grant: %+v", got)
				}
				ch.quiet(200 * time.Millisecond)
				if ls := heldBy(s, "f"); len(ls) != 1 || ls[0].Owner.SVID != 2 {
					t.Fatalf("held after the grant was taken: %+v", ls)
				}
			})
		}
	}
}

// TestGrantRefusedOrUndeliverable: a client that answers a GRANTED call denied (it no
// longer waits) has the lock released, and so has one that cannot be reached after the
// tries, and the next waiter gets it.
func TestGrantRefusedOrUndeliverable(t *testing.T) {
	ch := startClientHost(t)
	s := startServer(t, serverOpts{pmPort: ch.pmPort, attempts: 2})
	a := &client{t: t, s: s, netid: "tcp", vers: 4, name: "hosta"}
	b := &client{t: t, s: s, netid: "tcp", vers: 4, name: "hostb"}
	if st := a.lock(nlm.LockArgs{Exclusive: true, Lock: a.lockOf("f", 1, 0, 0)}); st != nlm.StatGranted {
		t.Fatal(st)
	}
	if st := b.lock(nlm.LockArgs{Block: true, Exclusive: true, Lock: b.lockOf("f", 2, 0, 0)}); st != nlm.StatBlocked {
		t.Fatal(st)
	}
	ch.grantAnswer.Store(nlm.StatDenied)
	a.unlock(a.lockOf("f", 1, 0, 0))
	ch.expect(nlm.ProgramNumber, uint32(nlm.ProcGranted))
	eventually(t, "the refused grant released", func() bool { return len(heldBy(s, "f")) == 0 })

	// Unreachable: a portmapper that maps nothing on the port asked.
	s2 := startServer(t, serverOpts{pmPort: 1, attempts: 2, callTimeout: 300 * time.Millisecond})
	a = &client{t: t, s: s2, netid: "udp", vers: 4, name: "hosta"}
	b = &client{t: t, s: s2, netid: "udp", vers: 4, name: "hostb"}
	c := &client{t: t, s: s2, netid: "udp", vers: 4, name: "hostc"}
	a.lock(nlm.LockArgs{Exclusive: true, Lock: a.lockOf("f", 1, 0, 0)})
	if st := b.lock(nlm.LockArgs{Block: true, Exclusive: true, Lock: b.lockOf("f", 2, 0, 0)}); st != nlm.StatBlocked {
		t.Fatal(st)
	}
	if st := c.lock(nlm.LockArgs{Block: true, Exclusive: true, Lock: c.lockOf("f", 3, 0, 0)}); st != nlm.StatBlocked {
		t.Fatal(st)
	}
	a.unlock(a.lockOf("f", 1, 0, 0))
	eventually(t, "the undeliverable grant released to the next waiter", func() bool {
		ls := heldBy(s2, "f")
		return len(ls) == 1 && ls[0].Owner.SVID == 3
	})
}

// TestCancel: a cancelled blocked lock is never granted; the grant of a lock cancelled
// while its GRANTED call is under way is undone.
func TestCancel(t *testing.T) {
	ch := startClientHost(t)
	s := startServer(t, serverOpts{pmPort: ch.pmPort})
	a := &client{t: t, s: s, netid: "tcp", vers: 4, name: "hosta"}
	b := &client{t: t, s: s, netid: "tcp", vers: 4, name: "hostb"}
	a.lock(nlm.LockArgs{Exclusive: true, Lock: a.lockOf("f", 1, 0, 0)})
	lb := b.lockOf("f", 2, 0, 0)
	if st := b.lock(nlm.LockArgs{Block: true, Exclusive: true, Lock: lb}); st != nlm.StatBlocked {
		t.Fatal(st)
	}
	if st := b.cancel(nlm.CancelArgs{Cookie: []byte("c"), Block: true, Exclusive: true, Lock: lb}); st != nlm.StatGranted {
		t.Fatalf("CANCEL: %d", st)
	}
	a.unlock(a.lockOf("f", 1, 0, 0))
	ch.quiet(300 * time.Millisecond)
	if ls := heldBy(s, "f"); len(ls) != 0 {
		t.Fatalf("a cancelled lock is held: %+v", ls)
	}
	// Cancelled during the GRANTED call: the client holds its answer back, cancels, then
	// takes the grant; the lock is released by the cancel.
	a.lock(nlm.LockArgs{Exclusive: true, Lock: a.lockOf("f", 1, 0, 0)})
	b.lock(nlm.LockArgs{Block: true, Exclusive: true, Lock: lb})
	ch.grantAnswer.Store(nlm.StatGranted)
	ch.grantDelay.Store(int64(500 * time.Millisecond))
	a.unlock(a.lockOf("f", 1, 0, 0))
	time.Sleep(100 * time.Millisecond)
	if ls := heldBy(s, "f"); len(ls) != 1 || ls[0].Owner.SVID != 2 {
		t.Fatalf("granted, being announced: %+v", ls)
	}
	b.cancel(nlm.CancelArgs{Block: true, Exclusive: true, Lock: lb})
	if ls := heldBy(s, "f"); len(ls) != 0 {
		t.Fatalf("held after the cancel: %+v", ls)
	}
	ch.expect(nlm.ProgramNumber, uint32(nlm.ProcGranted))
}

// TestAsyncForms: TEST_MSG, LOCK_MSG, CANCEL_MSG and UNLOCK_MSG get an empty reply and
// their results as TEST_RES, LOCK_RES, CANCEL_RES and UNLOCK_RES calls with the cookie;
// a lock blocked through LOCK_MSG is announced with GRANTED_MSG and settled by the
// client's GRANTED_RES.
func TestAsyncForms(t *testing.T) {
	for _, netid := range []string{"udp", "tcp"} {
		t.Run(netid, func(t *testing.T) {
			ch := startClientHost(t)
			s := startServer(t, serverOpts{pmPort: ch.pmPort})
			a := &client{t: t, s: s, netid: netid, vers: 4, name: "hosta"}
			b := &client{t: t, s: s, netid: netid, vers: 4, name: "hostb"}
			send := func(c *client, proc nlm.Proc, enc func(w *xdr.Writer)) {
				t.Helper()
				var w xdr.Writer
				enc(&w)
				out, err := c.call(proc, w.Buf)
				if err != nil || len(out) != 0 {
					t.Fatalf("%v: %v, %d bytes of results", proc, err, len(out))
				}
			}
			resOf := func(proc nlm.Proc) nlm.Res {
				t.Helper()
				cc := ch.expect(nlm.ProgramNumber, uint32(proc))
				r, err := nlm.DecodeRes(xdr.NewReader(cc.args, 0), cc.vers)
				if err != nil {
					t.Fatal(err)
				}
				return r
			}
			la := a.lockOf("f", 1, 0, 10)
			send(a, nlm.ProcLockMsg, func(w *xdr.Writer) { nlm.LockArgs{Cookie: []byte("L1"), Exclusive: true, Lock: la}.Encode(w, 4) })
			if r := resOf(nlm.ProcLockRes); r.Stat != nlm.StatGranted || string(r.Cookie) != "L1" {
				t.Fatalf("LOCK_RES: %+v", r)
			}
			lb := b.lockOf("f", 2, 5, 1)
			send(b, nlm.ProcTestMsg, func(w *xdr.Writer) { nlm.TestArgs{Cookie: []byte("T1"), Exclusive: false, Lock: lb}.Encode(w, 4) })
			cc := ch.expect(nlm.ProgramNumber, uint32(nlm.ProcTestRes))
			tr, err := nlm.DecodeTestRes(xdr.NewReader(cc.args, 0), 4)
			if err != nil || tr.Stat != nlm.StatDenied || string(tr.Cookie) != "T1" || tr.Holder.SVID != 1 || tr.Holder.Length != 10 {
				t.Fatalf("TEST_RES: %+v %v", tr, err)
			}
			send(b, nlm.ProcLockMsg, func(w *xdr.Writer) {
				nlm.LockArgs{Cookie: []byte("L2"), Block: true, Exclusive: true, Lock: lb}.Encode(w, 4)
			})
			if r := resOf(nlm.ProcLockRes); r.Stat != nlm.StatBlocked || string(r.Cookie) != "L2" {
				t.Fatalf("LOCK_RES of the blocked lock: %+v", r)
			}
			send(a, nlm.ProcUnlockMsg, func(w *xdr.Writer) { nlm.UnlockArgs{Cookie: []byte("U1"), Lock: la}.Encode(w, 4) })
			// UNLOCK_RES and GRANTED_MSG, in either order.
			var granted clientCall
			for range 2 {
				cc, ok := ch.next(5 * time.Second)
				if !ok {
					t.Fatal("UNLOCK_RES and GRANTED_MSG did not both come")
				}
				switch nlm.Proc(cc.proc) {
				case nlm.ProcUnlockRes:
					if r, _ := nlm.DecodeRes(xdr.NewReader(cc.args, 0), 4); r.Stat != nlm.StatGranted || string(r.Cookie) != "U1" {
						t.Fatalf("UNLOCK_RES: %+v", r)
					}
				case nlm.ProcGrantedMsg:
					granted = cc
				default:
					t.Fatalf("unexpected proc %d", cc.proc)
				}
			}
			g, err := nlm.DecodeTestArgs(xdr.NewReader(granted.args, 0), 4)
			if err != nil || g.Lock.SVID != 2 || g.Lock.Offset != 5 || g.Lock.Length != 1 {
				t.Fatalf("GRANTED_MSG: %+v %v", g, err)
			}
			// The client takes it.
			send(b, nlm.ProcGrantedRes, func(w *xdr.Writer) { nlm.Res{Cookie: g.Cookie, Stat: nlm.StatGranted}.Encode(w) })
			ch.quiet(300 * time.Millisecond) // no GRANTED_MSG again
			if ls := heldBy(s, "f"); len(ls) != 1 || ls[0].Owner.SVID != 2 {
				t.Fatalf("held after GRANTED_RES: %+v", ls)
			}
			send(b, nlm.ProcCancelMsg, func(w *xdr.Writer) {
				nlm.CancelArgs{Cookie: []byte("C1"), Block: true, Exclusive: true, Lock: lb}.Encode(w, 4)
			})
			if r := resOf(nlm.ProcCancelRes); r.Stat != nlm.StatGranted || string(r.Cookie) != "C1" {
				t.Fatalf("CANCEL_RES: %+v", r)
			}
			// A GRANTED_RES that refuses: the next grant, refused, is released.
			send(a, nlm.ProcLockMsg, func(w *xdr.Writer) {
				nlm.LockArgs{Cookie: []byte("L3"), Block: true, Exclusive: true, Lock: la}.Encode(w, 4)
			})
			if r := resOf(nlm.ProcLockRes); r.Stat != nlm.StatBlocked {
				t.Fatalf("LOCK_RES: %+v", r)
			}
			b.unlock(lb)
			cc = ch.expect(nlm.ProgramNumber, uint32(nlm.ProcGrantedMsg))
			g, _ = nlm.DecodeTestArgs(xdr.NewReader(cc.args, 0), 4)
			send(a, nlm.ProcGrantedRes, func(w *xdr.Writer) { nlm.Res{Cookie: g.Cookie, Stat: nlm.StatDenied}.Encode(w) })
			eventually(t, "the refused GRANTED_MSG released", func() bool { return len(heldBy(s, "f")) == 0 })
		})
	}
}

// TestShares: SHARE and UNSHARE (versions 3 and 4 only) reserve files in DOS share modes.
func TestShares(t *testing.T) {
	s := startServer(t, serverOpts{})
	for _, vers := range []uint32{nlm.Version3, nlm.Version4} {
		a := &client{t: t, s: s, netid: "tcp", vers: vers, name: "hosta"}
		b := &client{t: t, s: s, netid: "udp", vers: vers, name: "hostb"}
		fh := "share" + string(rune('0'+vers))
		sh := func(c *client, access, mode uint32) nlm.ShareArgs {
			return nlm.ShareArgs{Cookie: []byte("s"), Share: nlm.Share{CallerName: []byte(c.name), FH: []byte(fh), OH: []byte("oh-" + c.name), Mode: mode, Access: access}}
		}
		if r := a.share(sh(a, nlm.AccessRead, nlm.DenyWrite), nlm.ProcShare); r.Stat != nlm.StatGranted || string(r.Cookie) != "s" {
			t.Fatalf("SHARE: %+v", r)
		}
		if r := b.share(sh(b, nlm.AccessReadWrite, nlm.DenyNone), nlm.ProcShare); r.Stat != nlm.StatDenied {
			t.Fatalf("SHARE for writing against deny-write: %+v", r)
		}
		if r := b.share(sh(b, nlm.AccessRead, nlm.DenyNone), nlm.ProcShare); r.Stat != nlm.StatGranted {
			t.Fatalf("SHARE for reading: %+v", r)
		}
		if r := a.share(sh(a, nlm.AccessRead, nlm.DenyWrite), nlm.ProcUnshare); r.Stat != nlm.StatGranted {
			t.Fatalf("UNSHARE: %+v", r)
		}
		if r := b.share(sh(b, nlm.AccessReadWrite, nlm.DenyRead), nlm.ProcShare); r.Stat != nlm.StatGranted {
			t.Fatalf("SHARE after the unshare (replacing its own): %+v", r)
		}
		if r := a.share(sh(a, nlm.AccessRead, nlm.DenyNone), nlm.ProcShare); r.Stat != nlm.StatDenied {
			t.Fatalf("SHARE for reading against deny-read: %+v", r)
		}
	}
	v1 := &client{t: t, s: s, netid: "tcp", vers: 1, name: "hosta"}
	var w xdr.Writer
	nlm.ShareArgs{Share: nlm.Share{FH: []byte("x")}}.Encode(&w)
	var re *oncrpc.ReplyError
	if _, err := v1.call(nlm.ProcShare, w.Buf); !errors.As(err, &re) || re.Outcome != "PROC_UNAVAIL" {
		t.Fatalf("SHARE in version 1: %v", err)
	}
}

// TestRebootAndFreeAll: SM_NOTIFY naming a client host drops all it held, and the waiter
// behind it is granted; FREE_ALL does the same for a caller name; SM_NOTIFY from a
// host's address drops every client there.
func TestRebootAndFreeAll(t *testing.T) {
	ch := startClientHost(t)
	s := startServer(t, serverOpts{pmPort: ch.pmPort})
	ch.grantAnswer.Store(nlm.StatGranted)
	// Every client of the tests comes from 127.0.0.1; they differ by caller name.
	a := &client{t: t, s: s, netid: "tcp", vers: 4, name: "hosta"}
	b := &client{t: t, s: s, netid: "tcp", vers: 4, name: "hostb"}
	a.lock(nlm.LockArgs{Exclusive: true, Lock: a.lockOf("f", 1, 0, 0), State: 5})
	a.lock(nlm.LockArgs{Exclusive: true, Lock: a.lockOf("g", 1, 0, 0), State: 5})
	if st := b.lock(nlm.LockArgs{Block: true, Exclusive: true, Lock: b.lockOf("f", 2, 0, 0), State: 9}); st != nlm.StatBlocked {
		t.Fatal(st)
	}
	// The notices come from another address: they name the host.
	other := &client{t: t, s: s, netid: "udp", vers: 4, from: "127.0.0.2"}
	notify := func(from *client, name string, state int32) {
		t.Helper()
		var w xdr.Writer
		w.String(name)
		w.Uint32(uint32(state))
		out, err := from.callProg(nsm.ProgramNumber, nsm.Version, uint32(nsm.ProcNotify), w.Buf)
		if err != nil || len(out) != 0 {
			t.Fatalf("SM_NOTIFY: %v %x", err, out)
		}
	}
	// A notice with the state the locks were taken with is older news: nothing goes.
	s.nlm.Rebooted(netip.MustParseAddr("192.0.2.1"), "hosta", 5)
	if len(heldBy(s, "g")) != 1 {
		t.Fatal("locks dropped by a notice of the state they were taken in")
	}
	notify(other, "hosta", 7)
	cc := ch.expect(nlm.ProgramNumber, uint32(nlm.ProcGranted))
	if g, _ := nlm.DecodeTestArgs(xdr.NewReader(cc.args, 0), 4); g.Lock.SVID != 2 {
		t.Fatalf("granted to svid %d", g.Lock.SVID)
	}
	if len(heldBy(s, "g")) != 0 {
		t.Fatal("the rebooted client still holds g")
	}
	if ls := heldBy(s, "f"); len(ls) != 1 || ls[0].Owner.SVID != 2 {
		t.Fatalf("f: %+v", ls)
	}
	// FREE_ALL from hostb: its lock goes.
	var w xdr.Writer
	nlm.Notify{Name: []byte("hostb"), State: 10}.Encode(&w)
	if out, err := b.call(nlm.ProcFreeAll, w.Buf); err != nil || len(out) != 0 {
		t.Fatalf("FREE_ALL: %v", err)
	}
	if ls := heldBy(s, "f"); len(ls) != 0 {
		t.Fatalf("f after FREE_ALL: %+v", ls)
	}
	// From the clients' address, whatever the name: both go.
	a.lock(nlm.LockArgs{Exclusive: true, Lock: a.lockOf("f", 1, 0, 10)})
	b.lock(nlm.LockArgs{Exclusive: true, Lock: b.lockOf("f", 2, 20, 10)})
	notify(a, "some-name", 11)
	if ls := heldBy(s, "f"); len(ls) != 0 {
		t.Fatalf("f after a notice from the clients' address: %+v", ls)
	}
}

// TestRestartGraceAndNotify: a client that took a lock is on disk; after a restart the
// server tells it (SM_NOTIFY to its status monitor, mon_name the address it used, a new
// odd state), and for the grace period takes only reclaims: a new lock or a TEST is
// DENIED_GRACE_PERIOD, a reclaim is granted; after it a reclaim is refused and the
// reclaimed lock is what TEST sees. A restart with no client on disk has no grace.
func TestRestartGraceAndNotify(t *testing.T) {
	dir := t.TempDir()
	ch := startClientHost(t)
	s := startServer(t, serverOpts{dir: dir, pmPort: ch.pmPort, grace: 1500 * time.Millisecond})
	firstState := s.mon.State()
	if s.table.InGrace() || firstState%2 != 1 {
		t.Fatalf("first start: grace %v, state %d", s.table.InGrace(), firstState)
	}
	a := &client{t: t, s: s, netid: "udp", vers: 4, name: "hosta"}
	if st := a.lock(nlm.LockArgs{Exclusive: true, Lock: a.lockOf("f", 1, 0, 0)}); st != nlm.StatGranted {
		t.Fatal(st)
	}
	files, _ := os.ReadDir(filepath.Join(dir, "peers"))
	if len(files) != 1 {
		t.Fatalf("peers on disk: %v", files)
	}
	s.stop()

	s = startServer(t, serverOpts{dir: dir, pmPort: ch.pmPort, grace: 1500 * time.Millisecond})
	if !s.table.InGrace() || s.mon.State() != firstState+2 || len(s.mon.Previous()) != 1 {
		t.Fatalf("restart: grace %v, state %d (was %d), previous %v", s.table.InGrace(), s.mon.State(), firstState, s.mon.Previous())
	}
	s.mon.NotifyRestart()
	cc := ch.expect(nsm.ProgramNumber, uint32(nsm.ProcNotify))
	r := xdr.NewReader(cc.args, 0)
	name, state := string(r.Opaque()), int32(r.Uint32())
	if name != "127.0.0.1" || state != s.mon.State() || cc.netid != "udp" {
		t.Fatalf("SM_NOTIFY to the client: mon_name %q state %d over %s", name, state, cc.netid)
	}
	a.s, a.netid = s, "tcp"
	b := &client{t: t, s: s, netid: "tcp", vers: 4, name: "hostb"}
	if st := b.lock(nlm.LockArgs{Exclusive: true, Lock: b.lockOf("f", 2, 0, 0)}); st != nlm.StatDeniedGrace {
		t.Fatalf("a new lock in grace: %d", st)
	}
	if st := b.lock(nlm.LockArgs{Block: true, Exclusive: true, Lock: b.lockOf("f", 2, 0, 0)}); st != nlm.StatDeniedGrace {
		t.Fatalf("a new blocking lock in grace: %d", st)
	}
	if got := b.test(true, b.lockOf("f", 2, 0, 0)); got.Stat != nlm.StatDeniedGrace {
		t.Fatalf("TEST in grace: %+v", got)
	}
	v1 := &client{t: t, s: s, netid: "tcp", vers: 1, name: "hostb"}
	if st := v1.lock(nlm.LockArgs{Exclusive: true, Lock: v1.lockOf("h", 2, 0, 0)}); st != nlm.StatDeniedGrace {
		t.Fatalf("a new v1 lock in grace: %d", st)
	}
	if st := a.lock(nlm.LockArgs{Exclusive: true, Reclaim: true, Lock: a.lockOf("f", 1, 0, 0)}); st != nlm.StatGranted {
		t.Fatalf("reclaim in grace: %d", st)
	}
	eventually(t, "the grace period's end", func() bool { return !s.table.InGrace() })
	if st := a.lock(nlm.LockArgs{Exclusive: true, Reclaim: true, Lock: a.lockOf("g", 1, 0, 0)}); st != nlm.StatDeniedGrace {
		t.Fatalf("reclaim after grace: %d", st)
	}
	got := b.test(true, b.lockOf("f", 2, 0, 0))
	if got.Stat != nlm.StatDenied || got.Holder.SVID != 1 {
		t.Fatalf("TEST after grace: %+v", got)
	}
	// Every lock released and the idle client forgotten: the next restart has no grace.
	a.unlock(a.lockOf("f", 1, 0, 0))
	s.stop()
	s = startServer(t, serverOpts{dir: dir, pmPort: ch.pmPort, grace: time.Hour, idle: 50 * time.Millisecond})
	eventually(t, "the idle client forgotten", func() bool { return len(s.mon.Peers()) == 0 })
	s.stop()
	s = startServer(t, serverOpts{dir: dir, pmPort: ch.pmPort, grace: time.Hour})
	if s.table.InGrace() {
		t.Fatal("grace after a run whose clients held nothing")
	}
}

// TestBadCalls: arguments that do not decode exactly are GARBAGE_ARGS and change
// nothing; other versions are PROG_MISMATCH 1..4; the Linux-private procedure 16 and
// SM_SIMU_CRASH are PROC_UNAVAIL; SM_MON from another host is refused.
func TestBadCalls(t *testing.T) {
	s := startServer(t, serverOpts{})
	c := &client{t: t, s: s, netid: "tcp", vers: 4, name: "hosta"}
	good := func() []byte {
		var w xdr.Writer
		nlm.LockArgs{Exclusive: true, Lock: c.lockOf("f", 1, 0, 0)}.Encode(&w, 4)
		return w.Buf
	}
	bad := map[string][]byte{
		"short":         good()[:len(good())-2],
		"trailing":      append(good(), 0, 0, 0, 0),
		"bool 2":        func() []byte { b := good(); b[11] = 2; return b }(), // block, after an empty cookie
		"no arguments":  nil,
		"cookie 1025":   append(append([]byte{0, 0, 4, 1}, make([]byte, 1028)...), good()[4:]...),
		"length beyond": {0, 0, 0, 9, 0, 0, 0, 0},
	}
	var re *oncrpc.ReplyError
	for name, args := range bad {
		if _, err := c.call(nlm.ProcLock, args); !errors.As(err, &re) || re.Outcome != "GARBAGE_ARGS" {
			t.Errorf("LOCK with %s arguments: %v", name, err)
		}
	}
	if len(s.table.Hosts()) != 0 {
		t.Fatalf("bad calls left state: %v", s.table.Hosts())
	}
	if _, err := c.call(nlm.ProcNull, []byte{0, 0, 0, 0}); !errors.As(err, &re) || re.Outcome != "GARBAGE_ARGS" {
		t.Errorf("NULL with arguments: %v", err)
	}
	if _, err := c.callProg(nlm.ProgramNumber, 2, 0, nil); !errors.As(err, &re) || re.Outcome != "PROG_MISMATCH" || re.Low != 1 || re.High != 4 {
		t.Errorf("version 2: %v", err)
	}
	if _, err := c.call(16, nil); !errors.As(err, &re) || re.Outcome != "PROC_UNAVAIL" {
		t.Errorf("procedure 16: %v", err)
	}
	if _, err := c.callProg(nsm.ProgramNumber, 1, uint32(nsm.ProcSimuCrash), nil); !errors.As(err, &re) || re.Outcome != "PROC_UNAVAIL" {
		t.Errorf("SM_SIMU_CRASH: %v", err)
	}
	// A share mode past fsm_DRW.
	var w xdr.Writer
	nlm.ShareArgs{Share: nlm.Share{FH: []byte("x"), Mode: 4}}.Encode(&w)
	if _, err := c.call(nlm.ProcShare, w.Buf); !errors.As(err, &re) || re.Outcome != "GARBAGE_ARGS" {
		t.Errorf("SHARE with mode 4: %v", err)
	}
}

// TestStatusMonitorProcedures: SM_STAT answers the state; SM_MON from this host is taken
// and called back on the host's SM_NOTIFY; SM_UNMON withdraws it.
func TestStatusMonitorProcedures(t *testing.T) {
	ch := startClientHost(t) // stands in for this host's lock manager and portmapper
	s := startServer(t, serverOpts{pmPort: ch.pmPort})
	c := &client{t: t, s: s, netid: "udp", vers: 4, name: "x"}
	var w xdr.Writer
	w.String("somehost")
	out, err := c.callProg(nsm.ProgramNumber, 1, uint32(nsm.ProcStat), w.Buf)
	r := xdr.NewReader(out, 0)
	if err != nil || r.Uint32() != 0 || int32(r.Uint32()) != s.mon.State() {
		t.Fatalf("SM_STAT: %v %x", err, out)
	}
	mon := func(proc nsm.Proc, name string) []byte {
		var w xdr.Writer
		w.String(name)
		w.String("localhost")
		w.Uint32(nlm.ProgramNumber)
		w.Uint32(4)
		w.Uint32(uint32(nlm.ProcGrantedRes)) // any procedure of the client host's lock manager
		if proc == nsm.ProcMon {
			w.Fixed([]byte("0123456789abcdef"))
		}
		out, err := c.callProg(nsm.ProgramNumber, 1, uint32(proc), w.Buf)
		if err != nil {
			t.Fatalf("%v: %v", proc, err)
		}
		return out
	}
	if out := mon(nsm.ProcMon, "127.0.0.1"); out[3] != 0 {
		t.Fatalf("SM_MON from loopback: %x", out)
	}
	var n xdr.Writer
	n.String("127.0.0.1")
	n.Uint32(41)
	if _, err := c.callProg(nsm.ProgramNumber, 1, uint32(nsm.ProcNotify), n.Buf); err != nil {
		t.Fatal(err)
	}
	cc := ch.expect(nlm.ProgramNumber, uint32(nlm.ProcGrantedRes))
	cr := xdr.NewReader(cc.args, 0)
	if name, st, priv := string(cr.Opaque()), cr.Uint32(), string(cr.Fixed(16)); name != "127.0.0.1" || st != 41 || priv != "0123456789abcdef" {
		t.Fatalf("callback sm_status: %q %d %q", name, st, priv)
	}
	mon(nsm.ProcUnmon, "127.0.0.1")
	if _, err := c.callProg(nsm.ProgramNumber, 1, uint32(nsm.ProcNotify), n.Buf); err != nil {
		t.Fatal(err)
	}
	ch.quiet(300 * time.Millisecond)
}

// TestDeadlockAndVersions: a blocking lock that would deadlock is NLM4_DEADLCK in
// version 4 and denied before it; a version-4 lock past what 32 bits hold is shown to a
// version-1 client as running from the largest offset to the end of the file.
func TestDeadlockAndVersions(t *testing.T) {
	s := startServer(t, serverOpts{})
	for _, vers := range []uint32{nlm.Version4, nlm.Version3} {
		a := &client{t: t, s: s, netid: "tcp", vers: vers, name: "hosta"}
		b := &client{t: t, s: s, netid: "tcp", vers: vers, name: "hostb"}
		x, y := "x"+string(rune('0'+vers)), "y"+string(rune('0'+vers))
		a.lock(nlm.LockArgs{Exclusive: true, Lock: a.lockOf(x, 1, 0, 0)})
		b.lock(nlm.LockArgs{Exclusive: true, Lock: b.lockOf(y, 2, 0, 0)})
		if st := a.lock(nlm.LockArgs{Block: true, Exclusive: true, Lock: a.lockOf(y, 1, 0, 0)}); st != nlm.StatBlocked {
			t.Fatal(st)
		}
		want := uint32(nlm.StatDeadlock)
		if vers != nlm.Version4 {
			want = nlm.StatDenied
		}
		if st := b.lock(nlm.LockArgs{Block: true, Exclusive: true, Lock: b.lockOf(x, 2, 0, 0)}); st != want {
			t.Fatalf("v%d deadlock: %d, want %d", vers, st, want)
		}
	}
	v4 := &client{t: t, s: s, netid: "tcp", vers: 4, name: "hosta"}
	v1 := &client{t: t, s: s, netid: "udp", vers: 1, name: "hostb"}
	v4.lock(nlm.LockArgs{Exclusive: true, Lock: v4.lockOf("big", 1, 1<<32-10, 100)})
	got := v1.test(true, v1.lockOf("big", 2, 1<<32-5, 1))
	if got.Stat != nlm.StatDenied || got.Holder.Offset != 1<<32-10 || got.Holder.Length != 100 {
		t.Fatalf("a lock across 4 GiB seen in version 1: %+v", got)
	}
	if ls := s.table.Locks("file:big"); len(ls) != 1 || ls[0].Range != (locks.Range{Start: 1<<32 - 10, End: 1<<32 + 89}) {
		t.Fatalf("held: %+v", ls)
	}
	v4.lock(nlm.LockArgs{Exclusive: true, Lock: v4.lockOf("big2", 1, 1<<33, 1<<33)})
	got = v1.test(true, v1.lockOf("big2", 2, 1<<32-1, 0))
	if got.Stat != nlm.StatDenied || got.Holder.Offset != 1<<32-1 || got.Holder.Length != 0 {
		t.Fatalf("a lock past 4 GiB seen in version 1: %+v", got)
	}
}
