package layer

import (
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// hostileLink is a symlink stored in a layer that points out of it.
type hostileLink struct {
	name, target string
	// scratch: the target lies in the test's temporary directory, so the
	// calls that would change it if they followed the link are tried too.
	// Links to system paths only get calls that read.
	scratch bool
}

func (f *fixture) hostileLinks() []hostileLink {
	baseName := filepath.Base(f.base)
	links := []hostileLink{
		{"abs-file", filepath.Join(f.out, "sentinel"), true},
		{"abs-dir", f.out, true},
		{"abs-inner", filepath.Join(f.out, "dir", "inner"), true},
		{"rel-file", "../outside/sentinel", true},
		{"rel-dir", "../../" + baseName + "/outside", true},
		{"rel-deep", "../../../../../../../../.." + f.out, true},
		{"parent", "..", true},
		{"parent-abs", f.base, true},
		{"parent-file", "../parent-sentinel", true},
		{"dangling", filepath.Join(f.out, "created"), true},
		{"dangling-rel", "../outside/created-rel", true},
		{"loop", "loop", true},
		{"etc", "/etc", false},
		{"passwd", "/etc/passwd", false},
		{"slash", "/", false},
	}
	for _, l := range links {
		f.symlink(l.target, f.in(l.name))
	}
	return links
}

// TestSymlinksOutOfTheLayerAreNeverFollowed tries every call on symlinks
// that point out of the layer: each one either acts on the symlink itself
// or refuses, and nothing outside the layer is opened, created or changed.
func TestSymlinksOutOfTheLayerAreNeverFollowed(t *testing.T) {
	f := newFixture(t)
	links := f.hostileLinks()
	before := f.outsideState()
	w := f.watchOutside()
	root := f.l.Root
	ts := unix.Timespec{Sec: 987654321}
	for _, l := range links {
		t.Run(l.name, func(t *testing.T) {
			link := lstatPath(t, f.in(l.name))
			// What a call that followed the link would see; the link
			// itself when the target does not exist.
			followed := link
			var tst unix.Stat_t
			if unix.Stat(f.in(l.name), &tst) == nil {
				followed = tst
			}

			st, err := Lstat(root, l.name)
			if err != nil || st.Mode&unix.S_IFMT != unix.S_IFLNK || st.Ino != link.Ino {
				t.Errorf("Lstat: mode %o ino %d %v, want the symlink (ino %d)", st.Mode, st.Ino, err, link.Ino)
			}
			if got, err := Readlink(root, l.name); err != nil || got != l.target {
				t.Errorf("Readlink = %q %v, want %q", got, err, l.target)
			}
			fd, err := OpenDir(root, l.name)
			if err == nil {
				unix.Close(fd)
			}
			wantErr(t, "OpenDir", err, unix.ENOTDIR)
			d, err := OpenDirForReading(root, l.name)
			closeIf(d)
			wantErr(t, "OpenDirForReading", err, unix.ENOTDIR)
			names, err := ReadNames(root, l.name)
			wantErr(t, "ReadNames", err, unix.ENOTDIR)
			if len(names) != 0 {
				t.Errorf("ReadNames listed %v", names)
			}
			file, err := OpenFile(root, l.name, unix.O_RDONLY, 0)
			closeIf(file)
			wantErr(t, "OpenFile O_RDONLY", err, unix.ELOOP)
			file, err = OpenFile(root, l.name, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_DIRECTORY, 0)
			closeIf(file)
			if err == nil {
				t.Errorf("OpenFile O_DIRECTORY opened the symlink")
			}

			// O_PATH gives the symlink itself.
			file, err = OpenFile(root, l.name, unix.O_PATH, 0)
			if err != nil {
				t.Errorf("OpenFile O_PATH: %v", err)
			} else {
				st, err := Fstat(int(file.Fd()))
				if err != nil || st.Mode&unix.S_IFMT != unix.S_IFLNK || st.Ino != link.Ino {
					t.Errorf("OpenFile O_PATH opened mode %o ino %d %v, want the symlink", st.Mode, st.Ino, err)
				}
				file.Close()
			}

			// Asked for the object a follower would find (or the link
			// itself), OpenSame opens neither.
			for _, want := range []unix.Stat_t{followed, link} {
				file, err = OpenSame(root, l.name, unix.O_RDONLY|unix.O_NONBLOCK, &want)
				closeIf(file)
				wantErr(t, "OpenSame", err, ErrReplaced)
			}

			if _, err := Getxattr(root, l.name, "user.where"); err != unix.ENODATA {
				t.Errorf("Getxattr user.where: %v, want ENODATA (the target's attribute must not show)", err)
			}
			if ok, err := HasXattr(root, l.name, "user.where"); ok || err != nil {
				t.Errorf("HasXattr user.where = %v %v", ok, err)
			}
			if list, err := Listxattr(root, l.name); err != nil || contains(list, "user.where") {
				t.Errorf("Listxattr = %v %v", list, err)
			}

			rec, err := EncodeOrigin(root, l.name, [16]byte{})
			if err != nil {
				t.Fatalf("EncodeOrigin: %v", err)
			}
			if o, err := DecodeOrigin(rec); err != nil {
				t.Errorf("DecodeOrigin: %v", err)
			} else if st, err := StatOrigin(root, o); err == nil && (st.Ino != link.Ino || st.Mode&unix.S_IFMT != unix.S_IFLNK) {
				t.Errorf("the origin of a symlink names ino %d mode %o, want the symlink", st.Ino, st.Mode)
			} else if err != nil && err != unix.EPERM {
				t.Errorf("StatOrigin: %v", err)
			}

			if !l.scratch {
				return
			}
			for _, c := range []struct {
				flags int
				want  error
			}{
				{unix.O_WRONLY | unix.O_TRUNC, unix.ELOOP},
				{unix.O_WRONLY | unix.O_APPEND, unix.ELOOP},
				{unix.O_RDWR | unix.O_CREAT, unix.ELOOP},
				{unix.O_WRONLY | unix.O_CREAT | unix.O_TRUNC, unix.ELOOP},
				{unix.O_WRONLY | unix.O_CREAT | unix.O_EXCL, unix.EEXIST},
			} {
				file, err := OpenFile(root, l.name, c.flags, 0o666)
				if file != nil {
					file.WriteString("escaped\n")
					file.Close()
				}
				wantErr(t, "OpenFile for writing", err, c.want)
			}
			wantErr(t, "Chmod", Chmod(root, l.name, 0o777), unix.EOPNOTSUPP)
			if err := SetTimes(root, l.name, ts, ts); err != nil {
				t.Errorf("SetTimes: %v", err)
			} else if st := lstatPath(t, f.in(l.name)); st.Mtim != ts {
				t.Errorf("SetTimes did not set the symlink's own mtime: %v", st.Mtim)
			}
			if err := Setxattr(root, l.name, "user.where", []byte("changed")); err == nil {
				t.Errorf("Setxattr user.where on a symlink succeeded")
			}
			if err := Removexattr(root, l.name, "user.where"); err == nil {
				t.Errorf("Removexattr user.where through a symlink succeeded")
			}
			if os.Geteuid() == 0 {
				// trusted.* may be set on a symlink itself.
				if err := Setxattr(root, l.name, "trusted.layertest", []byte("link")); err != nil {
					t.Errorf("Setxattr trusted.layertest on the symlink: %v", err)
				} else if v, err := unix.Lgetxattr(f.in(l.name), "trusted.layertest", make([]byte, 16)); err != nil || v != 4 {
					t.Errorf("Setxattr did not reach the symlink itself: %d %v", v, err)
				}
			}
			if err := RemoveAll(root, l.name); err != nil {
				t.Errorf("RemoveAll: %v", err)
			}
			if _, err := os.Lstat(f.in(l.name)); !os.IsNotExist(err) {
				t.Errorf("RemoveAll left the symlink: %v", err)
			}
		})
	}
	w.quiet()
	f.checkOutsideUnchanged(before)
}

// walk resolves comps from the layer root one component at a time as the
// union does (OpenDir for each directory, Lstat for the last), returning
// the last object's stat.
func walk(root int, comps []string) (unix.Stat_t, error) {
	dir := root
	defer func() {
		if dir != root {
			unix.Close(dir)
		}
	}()
	for _, c := range comps[:len(comps)-1] {
		fd, err := OpenDir(dir, c)
		if err != nil {
			return unix.Stat_t{}, err
		}
		if dir != root {
			unix.Close(dir)
		}
		dir = fd
	}
	return Lstat(dir, comps[len(comps)-1])
}

// TestWalkThroughSymlinksStops: a walk that meets a symlink where it wants
// a directory stops there with ENOTDIR and never stats what lies beyond.
func TestWalkThroughSymlinksStops(t *testing.T) {
	f := newFixture(t)
	f.hostileLinks()
	if err := os.Mkdir(f.in("d/e"), 0o755); err != nil {
		t.Fatal(err)
	}
	f.symlink("../../outside", f.in("d/up"))
	f.symlink(f.out, f.in("d/e/out"))
	before := f.outsideState()
	w := f.watchOutside()
	for _, p := range []string{
		"abs-dir/sentinel", "abs-dir/dir/inner", "rel-dir/sentinel", "parent/outside/sentinel",
		"parent-abs/parent-sentinel", "etc/passwd", "slash/etc/passwd", "d/up/sentinel",
		"d/e/out/dir/inner", "dangling/x", "loop/x", "abs-file/x",
	} {
		st, err := walk(f.l.Root, strings.Split(p, "/"))
		wantErr(t, "walk "+p, err, unix.ENOTDIR)
		if st.Ino != 0 {
			t.Errorf("walk %s stat'ed ino %d beyond a symlink", p, st.Ino)
		}
	}
	if st, err := walk(f.l.Root, []string{"d", "e", "out"}); err != nil || st.Mode&unix.S_IFMT != unix.S_IFLNK {
		t.Errorf("walk to a symlink: mode %o %v, want the symlink itself", st.Mode, err)
	}
	if st, err := walk(f.l.Root, []string{"d", "g"}); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		t.Errorf("walk d/g: %o %v", st.Mode, err)
	}
	w.quiet()
	f.checkOutsideUnchanged(before)
}

// TestRemoveAllStaysInside removes a tree holding symlinks to outside
// directories and files, to the tree's own parents, a fifo and a whiteout:
// only the tree goes.
func TestRemoveAllStaysInside(t *testing.T) {
	f := newFixture(t)
	for _, d := range []string{"w", "w/tree", "w/tree/sub", "w/tree/sub/deeper"} {
		f.mkdir(f.in(d))
	}
	f.write(f.in("w/keep"), "keep\n")
	f.write(f.in("w/tree/file"), "x")
	f.write(f.in("w/tree/sub/deeper/y"), "y")
	f.symlink(f.out, f.in("w/tree/out-dir"))
	f.symlink("../../../outside", f.in("w/tree/out-rel"))
	f.symlink(filepath.Join(f.out, "sentinel"), f.in("w/tree/out-file"))
	f.symlink("..", f.in("w/tree/up"))
	f.symlink("../../..", f.in("w/tree/sub/up3"))
	f.symlink(f.root, f.in("w/tree/sub/deeper/root"))
	if err := unix.Mkfifo(f.in("w/tree/fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mknod(f.in("w/tree/sub/wo"), unix.S_IFCHR, 0); err != nil {
		t.Fatal(err)
	}
	// A directory without write or search permission for its owner is
	// still emptied (root's capabilities) and not escaped from.
	if err := os.Chmod(f.in("w/tree/sub/deeper"), 0); err != nil {
		t.Fatal(err)
	}
	f.symlink(f.out, f.in("abs-dir"))
	before := f.outsideState()
	w := f.watchOutside()

	wfd, err := OpenDir(f.l.Root, "w")
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(wfd)
	if err := RemoveAll(wfd, "tree"); err != nil {
		t.Fatalf("RemoveAll: %v", err)
	}
	if err := RemoveAll(f.l.Root, "abs-dir"); err != nil {
		t.Fatalf("RemoveAll of a symlink to a directory: %v", err)
	}
	if err := RemoveAll(wfd, "missing"); err != nil {
		t.Errorf("RemoveAll of a missing name: %v", err)
	}
	if err := RemoveAll(wfd, "keep"); err != nil {
		t.Errorf("RemoveAll of a file: %v", err)
	}
	w.quiet()
	f.checkOutsideUnchanged(before)
	var left []string
	filepath.WalkDir(f.root, func(p string, _ os.DirEntry, err error) error {
		if err == nil && p != f.root {
			rel, _ := filepath.Rel(f.root, p)
			left = append(left, rel)
		}
		return nil
	})
	sort.Strings(left)
	if got, want := strings.Join(left, " "), "d d/g f w"; got != want {
		t.Fatalf("left in the layer: %q, want %q", got, want)
	}
}

// TestNULNamesRefused: a name with a NUL byte would name its prefix to
// the kernel; every call refuses it with EINVAL before any system call, so
// nothing is created, opened or removed under the truncated name.
func TestNULNamesRefused(t *testing.T) {
	f := newFixture(t)
	f.symlink(filepath.Join(f.out, "sentinel"), f.in("link"))
	before := f.outsideState()
	w := f.watchOutside()
	rootBefore, _ := ReadNames(f.l.Root, "")
	sort.Strings(rootBefore)
	fst := lstatPath(t, f.in("f"))
	root := f.l.Root
	ts := unix.Timespec{Sec: 42}
	for _, name := range []string{"\x00", "f\x00", "f\x00x", "d\x00", "new\x00", "new\x00/x", "link\x00", "\x00f"} {
		calls := map[string]error{}
		_, calls["Lstat"] = Lstat(root, name)
		fd, err := OpenDir(root, name)
		if err == nil {
			unix.Close(fd)
		}
		calls["OpenDir"] = err
		d, err := OpenDirForReading(root, name)
		closeIf(d)
		calls["OpenDirForReading"] = err
		_, calls["ReadNames"] = ReadNames(root, name)
		for _, flags := range []int{unix.O_RDONLY, unix.O_RDWR | unix.O_CREAT, unix.O_WRONLY | unix.O_CREAT | unix.O_EXCL, unix.O_WRONLY | unix.O_TRUNC} {
			file, err := OpenFile(root, name, flags, 0o644)
			closeIf(file)
			if calls["OpenFile"] == nil {
				calls["OpenFile"] = err
			}
		}
		file, err := OpenSame(root, name, unix.O_RDWR|unix.O_TRUNC, &fst)
		closeIf(file)
		calls["OpenSame"] = err
		_, calls["Readlink"] = Readlink(root, name)
		_, calls["Getxattr"] = Getxattr(root, name, "user.where")
		_, calls["HasXattr"] = HasXattr(root, name, "user.where")
		calls["Setxattr"] = Setxattr(root, name, "user.nul", []byte("x"))
		calls["Removexattr"] = Removexattr(root, name, "user.where")
		_, calls["Listxattr"] = Listxattr(root, name)
		calls["SetTimes"] = SetTimes(root, name, ts, ts)
		calls["Chmod"] = Chmod(root, name, 0o777)
		calls["RemoveAll"] = RemoveAll(root, name)
		_, calls["EncodeOrigin"] = EncodeOrigin(root, name, [16]byte{})
		for call, err := range calls {
			if err != unix.EINVAL {
				t.Errorf("%s(%q): %v, want EINVAL", call, name, err)
			}
		}
	}
	// Attribute names with a NUL are refused as well.
	if err := Setxattr(root, "f", "user.a\x00b", []byte("x")); err != unix.EINVAL {
		t.Errorf("Setxattr with a NUL in the attribute name: %v", err)
	}
	w.quiet()
	f.checkOutsideUnchanged(before)
	rootAfter, _ := ReadNames(f.l.Root, "")
	sort.Strings(rootAfter)
	if strings.Join(rootAfter, " ") != strings.Join(rootBefore, " ") {
		t.Errorf("names in the layer changed: %v -> %v", rootBefore, rootAfter)
	}
	if st := lstatPath(t, f.in("f")); st.Ctim != fst.Ctim || st.Size != fst.Size || st.Mtim != fst.Mtim {
		t.Errorf("f was changed through a NUL name: %+v", st)
	}
	if list, _ := Listxattr(root, "f"); len(list) != 0 {
		t.Errorf("f got attributes: %v", list)
	}
	if st := lstatPath(t, f.in("d")); st.Mode&0o7777 != 0o755 {
		t.Errorf("d was changed through a NUL name: mode %o", st.Mode&0o7777)
	}
}
