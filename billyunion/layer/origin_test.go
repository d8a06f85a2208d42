package layer

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

func bigEndianHost() bool {
	x := uint16(1)
	return (*[2]byte)(unsafe.Pointer(&x))[0] == 0
}

// TestOriginRoundTrip encodes the origin of a file, a directory and a
// symlink, decodes it and follows the handle back to the same object.
func TestOriginRoundTrip(t *testing.T) {
	f := newFixture(t)
	f.symlink(filepath.Join(f.out, "sentinel"), f.in("link"))
	uuid := [16]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}
	for _, name := range []string{"f", "d", "link"} {
		rec, err := EncodeOrigin(f.l.Root, name, uuid)
		if err != nil {
			t.Fatalf("EncodeOrigin(%s): %v", name, err)
		}
		h, _, err := unix.NameToHandleAt(f.l.Root, name, 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(rec) != originHeaderSize+len(h.Bytes()) || rec[0] != 0 || rec[1] != 0xfb || int(rec[2]) != len(rec) {
			t.Fatalf("%s: record header % x", name, rec[:5])
		}
		wantFlags := byte(0)
		if bigEndianHost() {
			wantFlags = 1
		}
		if rec[3] != wantFlags {
			t.Errorf("%s: flags %#x, want %#x", name, rec[3], wantFlags)
		}
		o, err := DecodeOrigin(rec)
		if err != nil {
			t.Fatalf("DecodeOrigin(%s): %v", name, err)
		}
		if o.Type != h.Type() || o.UUID != uuid || !bytes.Equal(o.FID, h.Bytes()) {
			t.Errorf("%s: decoded %+v, want type %d fid % x", name, o, h.Type(), h.Bytes())
		}
		st, err := StatOrigin(f.l.Root, o)
		if err == unix.EPERM {
			t.Skip("no CAP_DAC_READ_SEARCH")
		}
		want := lstatPath(t, f.in(name))
		if err != nil || st.Ino != want.Ino || st.Dev != want.Dev || st.Mode != want.Mode {
			t.Errorf("StatOrigin(%s) = ino %d mode %o %v, want ino %d mode %o", name, st.Ino, st.Mode, err, want.Ino, want.Mode)
		}
	}
}

func TestEncodeOriginErrors(t *testing.T) {
	f := newFixture(t)
	_, err := EncodeOrigin(f.l.Root, "missing", [16]byte{})
	wantErr(t, "EncodeOrigin of a missing name", err, unix.ENOENT)
	// A filesystem without file handles gives the empty "origin unknown"
	// record, not an error.
	proc, err := Open("/proc")
	if err != nil {
		t.Skip(err)
	}
	defer proc.Close()
	rec, err := EncodeOrigin(proc.Root, "version", [16]byte{})
	if err != nil || rec == nil || len(rec) != 0 {
		t.Fatalf("EncodeOrigin on procfs = %v (nil %v) %v, want an empty record", rec, rec == nil, err)
	}
	_, err = DecodeOrigin(rec)
	wantErr(t, "DecodeOrigin of the empty record", err, syscall.ENODATA)
}

// TestEncodeOriginMatchesTheKernel copies a file and a directory up through
// a kernel overlay mount and compares the origin xattr the kernel wrote
// with EncodeOrigin's, byte for byte. Skipped where overlay cannot be
// mounted.
func TestEncodeOriginMatchesTheKernel(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	bases := map[string]string{"tempdir": t.TempDir()}
	var sfs unix.Statfs_t
	if unix.Statfs("/dev/shm", &sfs) == nil && sfs.Type == unix.TMPFS_MAGIC {
		if d, err := os.MkdirTemp("/dev/shm", "layertest"); err == nil {
			t.Cleanup(func() { os.RemoveAll(d) })
			bases["tmpfs"] = d // a filesystem with a uuid
		}
	}
	for kind, base := range bases {
		t.Run(kind, func(t *testing.T) {
			lower, upper, work, merged := filepath.Join(base, "l"), filepath.Join(base, "u"), filepath.Join(base, "w"), filepath.Join(base, "m")
			for _, d := range []string{lower, upper, work, merged, filepath.Join(lower, "d")} {
				if err := os.Mkdir(d, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.WriteFile(filepath.Join(lower, "f"), []byte("lower\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			opts := "lowerdir=" + lower + ",upperdir=" + upper + ",workdir=" + work + ",uuid=on"
			if err := unix.Mount("overlay", merged, "overlay", 0, opts); err != nil {
				t.Skipf("mount overlay: %v", err)
			}
			t.Cleanup(func() { unix.Unmount(merged, unix.MNT_DETACH) })
			if err := os.Chmod(filepath.Join(merged, "f"), 0o640); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(merged, "d", "new"), nil, 0o644); err != nil {
				t.Fatal(err)
			}
			l, err := Open(lower)
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			uuid := FilesystemUUID(l.Root)
			for _, name := range []string{"f", "d"} {
				kernel := make([]byte, 256)
				n, err := unix.Lgetxattr(filepath.Join(upper, name), "trusted.overlay.origin", kernel)
				if err != nil {
					t.Fatalf("the kernel wrote no origin on %s: %v", name, err)
				}
				ours, err := EncodeOrigin(l.Root, name, uuid)
				if err != nil {
					t.Fatal(err)
				}
				if uuid == ([16]byte{}) && !bytes.Equal(kernel[5:originHeaderSize], make([]byte, 16)) {
					if _, err := rawFSUUID(l.Root); err != nil {
						t.Skipf("this kernel cannot report a filesystem's uuid: %v", err)
					}
				}
				if !bytes.Equal(ours, kernel[:n]) {
					t.Errorf("%s: EncodeOrigin\n % x\nkernel\n % x", name, ours, kernel[:n])
				}
				if _, err := DecodeOrigin(kernel[:n]); err != nil {
					t.Errorf("DecodeOrigin of the kernel's record: %v", err)
				}
			}
		})
	}
}

func validRecord(fid []byte) []byte {
	rec := make([]byte, originHeaderSize+len(fid))
	rec[1] = originMagic
	rec[2] = byte(len(rec))
	rec[4] = 1 // FILEID_INO32_GEN
	for i := 5; i < originHeaderSize; i++ {
		rec[i] = byte(0xa0 + i)
	}
	copy(rec[originHeaderSize:], fid)
	return rec
}

func TestDecodeOriginFields(t *testing.T) {
	fid := []byte{0x15, 0x5f, 0x98, 0x00, 0xa6, 0xfe, 0x1d, 0x57}
	rec := validRecord(fid)
	rec[3] = originFlagBigEnd // flags are not interpreted
	o, err := DecodeOrigin(rec)
	if err != nil {
		t.Fatal(err)
	}
	var uuid [16]byte
	copy(uuid[:], rec[5:originHeaderSize])
	if o.Type != 1 || o.UUID != uuid || !bytes.Equal(o.FID, fid) {
		t.Fatalf("decoded %+v", o)
	}
	// The handle is a copy: the caller's buffer may be reused.
	rec[originHeaderSize] ^= 0xff
	if o.FID[0] != fid[0] {
		t.Fatal("Origin.FID aliases the record")
	}
	// Handle types are a byte: 0xff stays 255.
	rec = validRecord(fid)
	rec[4] = 0xff
	if o, err := DecodeOrigin(rec); err != nil || o.Type != 255 {
		t.Fatalf("type 0xff: %+v %v", o, err)
	}
	// One byte of handle is the shortest record.
	if o, err := DecodeOrigin(validRecord([]byte{7})); err != nil || len(o.FID) != 1 {
		t.Fatalf("one-byte handle: %+v %v", o, err)
	}
}

func TestDecodeOriginMalformed(t *testing.T) {
	fid := []byte{1, 2, 3, 4, 5, 6, 7, 8}
	good := validRecord(fid)
	mod := func(f func(r []byte) []byte) []byte {
		return f(append([]byte(nil), good...))
	}
	for _, c := range []struct {
		name string
		rec  []byte
		want error
	}{
		{"nil", nil, syscall.ENODATA},
		{"empty", []byte{}, syscall.ENODATA},
		{"one byte", []byte{0}, syscall.EINVAL},
		{"header only", validRecord(nil), syscall.EINVAL},
		{"header cut short", good[:originHeaderSize-1], syscall.EINVAL},
		{"version 1", mod(func(r []byte) []byte { r[0] = 1; return r }), syscall.EINVAL},
		{"bad magic", mod(func(r []byte) []byte { r[1] = 0xfa; return r }), syscall.EINVAL},
		{"len too small", mod(func(r []byte) []byte { r[2]--; return r }), syscall.EINVAL},
		{"len too large", mod(func(r []byte) []byte { r[2]++; return r }), syscall.EINVAL},
		{"len zero", mod(func(r []byte) []byte { r[2] = 0; return r }), syscall.EINVAL},
		{"trailing byte", append(append([]byte(nil), good...), 0), syscall.EINVAL},
		{"truncated", good[:len(good)-1], syscall.EINVAL},
		{"one byte past 255", append(validRecord(make([]byte, 255-originHeaderSize)), 0), syscall.EINVAL},
		{"length byte wraps", mod(func(r []byte) []byte { return append(r, make([]byte, 256)...) }), syscall.EINVAL},
	} {
		o, err := DecodeOrigin(c.rec)
		if err != c.want {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
		if err != nil && (o.Type != 0 || o.FID != nil) {
			t.Errorf("%s: an error came with a decoded origin %+v", c.name, o)
		}
	}
	// Every truncation of a good record is refused.
	for n := 1; n < len(good); n++ {
		if _, err := DecodeOrigin(good[:n]); err != syscall.EINVAL {
			t.Errorf("record cut to %d bytes: %v", n, err)
		}
	}
	// The longest record a length byte can describe decodes.
	if o, err := DecodeOrigin(validRecord(make([]byte, 255-originHeaderSize))); err != nil || len(o.FID) != 255-originHeaderSize {
		t.Errorf("255-byte record: %v", err)
	}
}

// TestStatOriginBadHandles: handles that name nothing, or nothing any more,
// are errors, never a stat of something else.
func TestStatOriginBadHandles(t *testing.T) {
	f := newFixture(t)
	f.write(f.in("gone"), "x")
	rec, err := EncodeOrigin(f.l.Root, "gone", [16]byte{})
	if err != nil {
		t.Fatal(err)
	}
	o, err := DecodeOrigin(rec)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := StatOrigin(f.l.Root, o); err == unix.EPERM {
		t.Skip("no CAP_DAC_READ_SEARCH")
	} else if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(f.in("gone")); err != nil {
		t.Fatal(err)
	}
	_, err = StatOrigin(f.l.Root, o)
	wantErr(t, "StatOrigin of a removed object", err, unix.ESTALE)

	garbage := []Origin{
		{Type: o.Type, FID: bytes.Repeat([]byte{0xff}, len(o.FID))},
		{Type: 0xfe, FID: o.FID},
		{Type: o.Type, FID: o.FID[:1]},
		{Type: o.Type, FID: []byte{}},
		{Type: o.Type, FID: make([]byte, 200)},
	}
	for i, g := range garbage {
		if st, err := StatOrigin(f.l.Root, g); err == nil {
			t.Errorf("garbage handle %d decoded to ino %d", i, st.Ino)
		}
	}
}

func TestFilesystemUUID(t *testing.T) {
	proc, err := Open("/proc")
	if err != nil {
		t.Skip(err)
	}
	defer proc.Close()
	if u := FilesystemUUID(proc.Root); u != ([16]byte{}) {
		t.Errorf("procfs has no uuid, got % x", u)
	}
	var sfs unix.Statfs_t
	if unix.Statfs("/dev/shm", &sfs) != nil || sfs.Type != unix.TMPFS_MAGIC {
		t.Skip("no tmpfs at /dev/shm")
	}
	d, err := os.MkdirTemp("/dev/shm", "layertest")
	if err != nil {
		t.Skip(err)
	}
	defer os.RemoveAll(d)
	a, err := Open("/dev/shm")
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := Open(d)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ua, ub := FilesystemUUID(a.Root), FilesystemUUID(b.Root)
	if ua != ub {
		t.Errorf("two directories of one tmpfs: % x vs % x", ua, ub)
	}
	raw, err := rawFSUUID(a.Root)
	if err != nil {
		if ua != ([16]byte{}) {
			t.Errorf("uuid % x where the kernel reports none (%v)", ua, err)
		}
		t.Skipf("this kernel cannot report a filesystem's uuid: %v", err)
	}
	if ua != raw {
		t.Errorf("FilesystemUUID = % x, the ioctl says % x", ua, raw)
	}
}

// rawFSUUID asks FS_IOC_GETFSUUID directly, as the oracle for
// FilesystemUUID.
func rawFSUUID(fd int) ([16]byte, error) {
	var buf [17]byte
	var uuid [16]byte
	buf[0] = 16
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), fsIocGetFSUUID, uintptr(unsafe.Pointer(&buf[0])))
	if errno != 0 {
		return uuid, errno
	}
	if buf[0] != 16 {
		return uuid, syscall.EINVAL
	}
	copy(uuid[:], buf[1:])
	return uuid, nil
}

// FuzzDecodeOrigin: any byte string either decodes to a record whose
// fields account for every byte, or is refused with EINVAL/ENODATA.
func FuzzDecodeOrigin(f *testing.F) {
	f.Add([]byte{})
	f.Add(validRecord([]byte{1, 2, 3, 4, 5, 6, 7, 8}))
	f.Add(validRecord(nil))
	f.Add([]byte{0x00, 0xfb, 0x1d, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
		0xf3, 0x47, 0x98, 0x00, 0xe2, 0x4b, 0x6e, 0xb4}) // written by a 6.18 kernel copy-up
	f.Fuzz(func(t *testing.T, rec []byte) {
		o, err := DecodeOrigin(rec)
		if err != nil {
			if !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENODATA) {
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
		if len(rec) != originHeaderSize+len(o.FID) || int(rec[2]) != len(rec) || rec[1] != originMagic || rec[0] != originVersion {
			t.Fatalf("accepted % x as %+v", rec, o)
		}
		if o.Type != int32(rec[4]) || !bytes.Equal(o.UUID[:], rec[5:originHeaderSize]) || !bytes.Equal(o.FID, rec[originHeaderSize:]) {
			t.Fatalf("fields of % x decoded as %+v", rec, o)
		}
	})
}
