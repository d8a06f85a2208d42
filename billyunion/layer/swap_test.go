package layer

import (
	"errors"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// TestEntrySwappedForSymlinkBetweenSteps: the walk holds a descriptor on
// p and has looked d up as a directory; before the next step d is renamed
// away and a symlink out of the layer takes its name. Every way of
// continuing from the descriptor refuses the symlink.
func TestEntrySwappedForSymlinkBetweenSteps(t *testing.T) {
	for _, target := range []string{"abs", "../../outside", "..", "../.."} {
		t.Run(strings.ReplaceAll(target, "/", "_"), func(t *testing.T) {
			f := newFixture(t)
			f.mkdir(f.in("p"))
			f.mkdir(f.in("p/d"))
			f.write(f.in("p/d/file"), "inside\n")
			if target == "abs" {
				target = f.out
			}
			pd, err := OpenDir(f.l.Root, "p")
			if err != nil {
				t.Fatal(err)
			}
			defer unix.Close(pd)
			looked, err := Lstat(pd, "d")
			if err != nil || !IsDir(&looked) {
				t.Fatalf("lookup of d: %v", err)
			}
			before := f.outsideState()
			w := f.watchOutside()

			// The swap, between the lookup and the next step.
			if err := os.Rename(f.in("p/d"), f.in("p/d.away")); err != nil {
				t.Fatal(err)
			}
			f.symlink(target, f.in("p/d"))

			fd, err := OpenDir(pd, "d")
			if err == nil {
				unix.Close(fd)
			}
			wantErr(t, "OpenDir after the swap", err, unix.ENOTDIR)
			d, err := OpenDirForReading(pd, "d")
			closeIf(d)
			wantErr(t, "OpenDirForReading after the swap", err, unix.ENOTDIR)
			_, err = ReadNames(pd, "d")
			wantErr(t, "ReadNames after the swap", err, unix.ENOTDIR)
			file, err := OpenSame(pd, "d", unix.O_RDONLY|unix.O_DIRECTORY, &looked)
			closeIf(file)
			wantErr(t, "OpenSame after the swap", err, ErrReplaced)
			file, err = OpenFile(pd, "d", unix.O_RDONLY, 0)
			closeIf(file)
			wantErr(t, "OpenFile after the swap", err, unix.ELOOP)
			wantErr(t, "Chmod after the swap", Chmod(pd, "d", 0o700), unix.EOPNOTSUPP)
			if _, err := Getxattr(pd, "d", "user.where"); err != unix.ENODATA {
				t.Errorf("Getxattr after the swap: %v, want ENODATA", err)
			}
			if st, err := Lstat(pd, "d"); err != nil || st.Mode&unix.S_IFMT != unix.S_IFLNK {
				t.Errorf("Lstat after the swap: mode %o %v, want the symlink", st.Mode, err)
			}
			if err := RemoveAll(pd, "d"); err != nil {
				t.Errorf("RemoveAll of the swapped-in symlink: %v", err)
			}
			w.quiet()
			f.checkOutsideUnchanged(before)
			if b, err := os.ReadFile(f.in("p/d.away/file")); err != nil || string(b) != "inside\n" {
				t.Errorf("the renamed directory was touched: %q %v", b, err)
			}
		})
	}
}

// TestParentSwappedAfterItsDescriptorWasTaken: once the walk holds a
// descriptor on p, replacing the name p by a symlink out of the layer (whose
// target holds the same names) changes nothing for the rest of the walk,
// which goes on in the directory the descriptor names.
func TestParentSwappedAfterItsDescriptorWasTaken(t *testing.T) {
	f := newFixture(t)
	f.mkdir(f.in("p"))
	f.mkdir(f.in("p/d"))
	f.write(f.in("p/d/file"), "inside\n")
	f.write(f.in("p/pfile"), "inside p\n")
	f.mkdir(filepath.Join(f.out, "d"))
	f.write(filepath.Join(f.out, "d", "file"), "outside\n")
	f.write(filepath.Join(f.out, "pfile"), "outside\n")
	inD := lstatPath(t, f.in("p/d"))

	pd, err := OpenDir(f.l.Root, "p")
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(pd)
	before := f.outsideState()
	w := f.watchOutside()
	if err := os.Rename(f.in("p"), f.in("p.away")); err != nil {
		t.Fatal(err)
	}
	f.symlink(f.out, f.in("p"))

	dd, err := OpenDir(pd, "d")
	if err != nil {
		t.Fatalf("OpenDir from the held descriptor: %v", err)
	}
	defer unix.Close(dd)
	if st, _ := Fstat(dd); st.Ino != inD.Ino || st.Dev != inD.Dev {
		t.Errorf("the walk continued into ino %d, want the layer's d (%d)", st.Ino, inD.Ino)
	}
	file, err := OpenFile(dd, "file", unix.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got := readFD(t, file); got != "inside\n" {
		t.Errorf("read %q through the held descriptor", got)
	}
	file.Close()
	file, err = OpenFile(pd, "pfile", unix.O_RDWR|unix.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	file.WriteString("appended\n")
	file.Close()
	names, err := ReadNames(pd, "")
	sort.Strings(names)
	if err != nil || strings.Join(names, " ") != "d pfile" {
		t.Errorf("ReadNames(held p) = %v %v", names, err)
	}
	// A new walk from the root meets the symlink and stops.
	fd, err := OpenDir(f.l.Root, "p")
	if err == nil {
		unix.Close(fd)
	}
	wantErr(t, "a new walk through the swapped name", err, unix.ENOTDIR)
	w.quiet()
	f.checkOutsideUnchanged(before)
	if b, _ := os.ReadFile(f.in("p.away/pfile")); string(b) != "inside p\nappended\n" {
		t.Errorf("the write through the held descriptor went elsewhere: %q", b)
	}
}

// swapper exchanges two names in the layer root swaps times, atomically
// (RENAME_EXCHANGE) or by renaming the directory away, putting a symlink
// in its place and undoing both (so the walk also meets a missing name).
func swapper(root int, a, b string, swaps int, atomic bool, symTarget string) (wait func() error) {
	var wg sync.WaitGroup
	var err error
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < swaps && err == nil; i++ {
			if atomic {
				err = unix.Renameat2(root, a, root, b, unix.RENAME_EXCHANGE)
				continue
			}
			if err = unix.Renameat(root, a, root, b); err != nil {
				break
			}
			if err = unix.Symlinkat(symTarget, root, a); err != nil {
				break
			}
			if err = unix.Unlinkat(root, a, 0); err != nil {
				break
			}
			err = unix.Renameat(root, b, root, a)
		}
	}()
	return func() error { wg.Wait(); return err }
}

// raceRounds is how many swaps each race test makes; the walks run until
// the swapper is done and at least as many times.
const raceRounds = 2000

// TestWalkRacingDirectorySymlinkSwaps: while another thread keeps swapping
// the directory a for a symlink out of the layer (whose target holds the
// same names), walks a -> b -> file keep running. A walk may be refused;
// one that succeeds has only ever been inside the layer. Only that
// invariant is checked, never how the race went.
// openSameIsOrRefuses: OpenSame of name opens the layer's object want, or refuses with
// ErrReplaced; it never opens anything else.
func openSameIsOrRefuses(t *testing.T, dir int, name string, flags int, st *unix.Stat_t, want uint64) {
	t.Helper()
	f, err := OpenSame(dir, name, flags, st)
	if err != nil {
		if !errors.Is(err, ErrReplaced) {
			t.Fatalf("OpenSame %s: %v", name, err)
		}
		return
	}
	got, _ := Fstat(int(f.Fd()))
	f.Close()
	if got.Ino != want {
		t.Fatalf("OpenSame opened ino %d, not the layer's %s", got.Ino, name)
	}
}

func TestWalkRacingDirectorySymlinkSwaps(t *testing.T) {
	for _, atomic := range []bool{true, false} {
		name := "exchange"
		if !atomic {
			name = "replace"
		}
		t.Run(name, func(t *testing.T) {
			f := newFixture(t)
			f.mkdir(f.in("a"))
			f.mkdir(f.in("a/b"))
			f.write(f.in("a/b/file"), "inside\n")
			f.mkdir(filepath.Join(f.out, "b"))
			f.write(filepath.Join(f.out, "b", "file"), "outside\n")
			other := "a.sym"
			if atomic {
				f.symlink(f.out, f.in(other))
			} else {
				other = "a.away"
			}
			inA, inB := lstatPath(t, f.in("a")), lstatPath(t, f.in("a/b"))
			outIno := lstatPath(t, f.out).Ino
			before := f.outsideState()
			w := f.watchOutside()

			wait := swapper(f.l.Root, "a", other, raceRounds, atomic, f.out)
			var done bool
			var swapErr error
			stop := make(chan struct{})
			go func() { swapErr = wait(); close(stop) }()
			var walks, inside, refused int
			for !done || walks < raceRounds {
				select {
				case <-stop:
					done = true
				default:
				}
				walks++
				// The union's step: a lookup, then OpenDir of the name.
				if st, err := Lstat(f.l.Root, "a"); err == nil && st.Ino == outIno {
					t.Fatalf("Lstat of a followed the symlink")
				}
				fa, err := OpenDir(f.l.Root, "a")
				if err != nil {
					if !errors.Is(err, unix.ENOTDIR) && !errors.Is(err, unix.ENOENT) {
						t.Fatalf("OpenDir a: unexpected %v", err)
					}
					refused++
					continue
				}
				st, _ := Fstat(fa)
				if st.Ino != inA.Ino || st.Dev != inA.Dev {
					unix.Close(fa)
					t.Fatalf("walk %d: a opened as ino %d, not the layer's a (%d)", walks, st.Ino, inA.Ino)
				}
				fb, err := OpenDir(fa, "b")
				unix.Close(fa)
				if err != nil {
					t.Fatalf("walk %d: OpenDir b from a held a: %v", walks, err)
				}
				if st, _ := Fstat(fb); st.Ino != inB.Ino {
					unix.Close(fb)
					t.Fatalf("walk %d: b is ino %d, not the layer's b", walks, st.Ino)
				}
				file, err := OpenFile(fb, "file", unix.O_RDONLY, 0)
				unix.Close(fb)
				if err != nil {
					t.Fatalf("walk %d: open file: %v", walks, err)
				}
				got := readFD(t, file)
				file.Close()
				if got != "inside\n" {
					t.Fatalf("walk %d read %q", walks, got)
				}
				inside++
				// The same through a lookup and OpenSame.
				if st, err := Lstat(f.l.Root, "a"); err == nil && IsDir(&st) {
					openSameIsOrRefuses(t, f.l.Root, "a", unix.O_RDONLY|unix.O_DIRECTORY, &st, inA.Ino)
				}
			}
			if swapErr != nil {
				t.Fatalf("swapper: %v", swapErr)
			}
			t.Logf("%d walks: %d reached a/b/file inside the layer, %d refused", walks, inside, refused)
			w.quiet()
			f.checkOutsideUnchanged(before)
		})
	}
}

// TestOpenRacingFileSymlinkSwaps: while the regular file f keeps being
// exchanged with a symlink out of the layer (to an existing file and to a
// name that does not exist yet), opens for writing with O_CREAT, OpenSame,
// Chmod, SetTimes and Setxattr on f act on f or refuse: no outside object
// is ever opened, created or changed.
func TestOpenRacingFileSymlinkSwaps(t *testing.T) {
	for _, tc := range []struct{ name, target string }{
		{"existing", "sentinel"}, {"dangling", "created"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			f.symlink(filepath.Join(f.out, tc.target), f.in("f.sym"))
			inF := lstatPath(t, f.in("f"))
			before := f.outsideState()
			w := f.watchOutside()
			wait := swapper(f.l.Root, "f", "f.sym", raceRounds, true, "")
			var done bool
			var swapErr error
			stop := make(chan struct{})
			go func() { swapErr = wait(); close(stop) }()
			ts := unix.Timespec{Sec: 111}
			modes := []uint32{0o600, 0o640}
			var walks, opened int
			for !done || walks < raceRounds {
				select {
				case <-stop:
					done = true
				default:
				}
				walks++
				file, err := OpenFile(f.l.Root, "f", unix.O_WRONLY|unix.O_CREAT|unix.O_APPEND, 0o666)
				if err == nil {
					st, _ := Fstat(int(file.Fd()))
					file.Close()
					if st.Ino != inF.Ino {
						t.Fatalf("OpenFile O_CREAT opened ino %d, not the layer's f", st.Ino)
					}
					opened++
				} else if !errors.Is(err, unix.ELOOP) {
					t.Fatalf("OpenFile: %v", err)
				}
				openSameIsOrRefuses(t, f.l.Root, "f", unix.O_RDWR, &inF, inF.Ino)
				if err := Chmod(f.l.Root, "f", modes[walks%2]); err != nil && err != unix.EOPNOTSUPP {
					t.Fatalf("Chmod: %v", err)
				}
				if err := SetTimes(f.l.Root, "f", ts, ts); err != nil {
					t.Fatalf("SetTimes: %v", err)
				}
				// user.* cannot be set on a symlink: either f gets it or
				// the call fails with EPERM.
				if err := Setxattr(f.l.Root, "f", "user.race", []byte("x")); err != nil && err != unix.EPERM {
					t.Fatalf("Setxattr: %v", err)
				}
			}
			if swapErr != nil {
				t.Fatalf("swapper: %v", swapErr)
			}
			t.Logf("%d rounds, f opened %d times", walks, opened)
			w.quiet()
			f.checkOutsideUnchanged(before)
		})
	}
}

// TestRemoveAllRacingDirectorySymlinkSwaps: RemoveAll finds a directory
// (unlinkat says EISDIR) and then opens it; another thread exchanging the
// directory with a symlink to an outside directory in between must never
// make it empty the outside one. Each round removes a tree of empty
// directories, each next to such a symlink, while the thread exchanges the
// pairs until RemoveAll returns (at most swapsPerRound times). RemoveAll may
// fail; the outside directory stays as it was.
func TestRemoveAllRacingDirectorySymlinkSwaps(t *testing.T) {
	f := newFixture(t)
	victim := filepath.Join(f.out, "dir")
	f.mkdir(f.in("w"))
	wfd, err := OpenDir(f.l.Root, "w")
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(wfd)
	before := f.outsideState()
	w := f.watchOutside()
	const rounds, pairs, swapsPerRound = 80, 16, 1 << 16
	var failed int
	for round := 0; round < rounds; round++ {
		f.mkdir(f.in("w/x"))
		for i := 0; i < pairs; i++ {
			d := f.in("w/x/d" + strconv.Itoa(i))
			f.mkdir(d)
			f.symlink(victim, d+".sym")
		}
		xfd, err := OpenDir(wfd, "x")
		if err != nil {
			t.Fatal(err)
		}
		stop := make(chan struct{})
		swapped := make(chan error, 1)
		go func() {
			defer unix.Close(xfd)
			for j := 0; j < swapsPerRound; j++ {
				select {
				case <-stop:
					swapped <- nil
					return
				default:
				}
				d := "d" + strconv.Itoa(j%pairs)
				err := unix.Renameat2(xfd, d, xfd, d+".sym", unix.RENAME_EXCHANGE)
				if err != nil && err != unix.ENOENT { // ENOENT: RemoveAll got one
					swapped <- err
					return
				}
			}
			swapped <- nil
		}()
		if err := RemoveAll(wfd, "x"); err != nil {
			failed++
		}
		close(stop)
		if err := <-swapped; err != nil {
			t.Fatalf("swapper: %v", err)
		}
		if err := RemoveAll(wfd, "x"); err != nil {
			t.Fatalf("cleaning up: %v", err)
		}
		// A stat, not a listing: the watch must see nothing of the check.
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(victim, "inner"), &st); err != nil {
			t.Fatalf("round %d: RemoveAll reached the directory outside the layer: %v", round, err)
		}
	}
	t.Logf("%d rounds, RemoveAll refused %d times", rounds, failed)
	w.quiet()
	f.checkOutsideUnchanged(before)
}
