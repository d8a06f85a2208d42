package layer

import (
	"encoding/binary"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The kernel records a copied-up object's origin as a struct ovl_fb:
//
//	u8 version (0) | u8 magic (0xfb) | u8 len (whole record) | u8 flags |
//	u8 handle type | 16-byte uuid | file handle bytes
//
// flags bit 0 is set on big-endian hosts. The uuid is all zeros on kernels
// mounting with uuid=null/auto, which is what we write too (it was verified
// byte-for-byte against a 6.18 kernel copy-up). An empty origin means
// "copied up, origin unknown" (a lower filesystem without file handles).
const (
	originVersion    = 0
	originMagic      = 0xfb
	originHeaderSize = 21
	originFlagBigEnd = 1 << 0
	// originFlagUpper is the kernel's OVL_FH_FLAG_PATH_UPPER: the handle
	// names an object of the upper layer (the index directory's record
	// of the upper root).
	originFlagUpper = 1 << 2
)

// EncodeOrigin returns the origin record for name inside dir, carrying
// uuid (the lower filesystem's, or zeros when the overlay runs without
// uuids), or an empty record when the filesystem cannot produce file
// handles.
func EncodeOrigin(dir int, name string, uuid [16]byte) ([]byte, error) {
	return encodeRecord(dir, name, uuid, 0)
}

// EncodeUpper is EncodeOrigin for an upper-layer object, with the kernel's
// upper flag: the record the index directory keeps of the upper root. An
// empty name encodes dir itself.
func EncodeUpper(dir int, name string, uuid [16]byte) ([]byte, error) {
	return encodeRecord(dir, name, uuid, originFlagUpper)
}

func encodeRecord(dir int, name string, uuid [16]byte, flags byte) ([]byte, error) {
	atFlags := 0
	if name == "" {
		atFlags = unix.AT_EMPTY_PATH
	}
	h, _, err := unix.NameToHandleAt(dir, name, atFlags)
	if err != nil {
		if err == unix.EOPNOTSUPP || err == unix.ENOTSUP {
			return []byte{}, nil
		}
		return nil, err
	}
	return makeRecord(int32(h.Type()), h.Bytes(), uuid, flags), nil
}

// MakeOrigin is the origin record of the object whose kernel file handle is fid of
// type typ: what EncodeOrigin gives for it (an empty record when the handle is too long).
func MakeOrigin(typ int32, fid []byte, uuid [16]byte) []byte {
	return makeRecord(typ, fid, uuid, 0)
}

func makeRecord(typ int32, fid []byte, uuid [16]byte, flags byte) []byte {
	total := originHeaderSize + len(fid)
	if total > 255 {
		return []byte{}
	}
	rec := make([]byte, total)
	rec[0] = originVersion
	rec[1] = originMagic
	rec[2] = byte(total)
	rec[3] = flags
	if binary.NativeEndian.Uint16([]byte{0, 1}) == 1 {
		rec[3] |= originFlagBigEnd
	}
	rec[4] = byte(typ)
	copy(rec[5:originHeaderSize], uuid[:])
	copy(rec[originHeaderSize:], fid)
	return rec
}

// Origin is a decoded origin record.
type Origin struct {
	Type int32
	UUID [16]byte
	FID  []byte
}

// DecodeOrigin parses an origin record; EINVAL for a malformed one and
// ENODATA for the empty "origin unknown" record.
func DecodeOrigin(rec []byte) (Origin, error) {
	if len(rec) == 0 {
		return Origin{}, syscall.ENODATA
	}
	if len(rec) <= originHeaderSize || rec[0] != originVersion || rec[1] != originMagic || int(rec[2]) != len(rec) {
		return Origin{}, syscall.EINVAL
	}
	var o Origin
	o.Type = int32(rec[4])
	copy(o.UUID[:], rec[5:originHeaderSize])
	o.FID = append([]byte(nil), rec[originHeaderSize:]...)
	return o, nil
}

// StatOrigin finds the object an origin names, using mountFD (any
// descriptor on the origin's filesystem) to decode it, and stats it. It needs
// CAP_DAC_READ_SEARCH; callers fall back to other means on EPERM. The object
// is only stat'ed, never opened for I/O, so decoding a handle that names
// something outside the layers reveals nothing but its inode number.
func StatOrigin(mountFD int, o Origin) (unix.Stat_t, error) {
	var st unix.Stat_t
	h := unix.NewFileHandle(o.Type, o.FID)
	fd, err := unix.OpenByHandleAt(mountFD, h, unix.O_PATH|unix.O_CLOEXEC)
	if err != nil {
		return st, err
	}
	defer unix.Close(fd)
	err = unix.Fstat(fd, &st)
	return st, err
}

// fsIocGetFSUUID is FS_IOC_GETFSUUID: _IOR(0x15, 0, struct fsuuid2), the
// struct being a length byte and 16 uuid bytes.
const fsIocGetFSUUID = 0x80111500

// FilesystemUUID returns the uuid of the filesystem holding fd (the
// kernel's s_uuid), or zeros where the kernel cannot tell (before 6.5, or a
// filesystem without one).
func FilesystemUUID(fd int) [16]byte {
	var buf [17]byte
	buf[0] = 16
	var uuid [16]byte
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), fsIocGetFSUUID, uintptr(unsafe.Pointer(&buf[0])))
	if errno == 0 && buf[0] == 16 {
		copy(uuid[:], buf[1:])
	}
	return uuid
}
