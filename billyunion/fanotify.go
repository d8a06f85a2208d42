package billyunion

import (
	"encoding/binary"

	"golang.org/x/sys/unix"
)

// Reading the fanotify queue of the directory cache (dircache.go).
//
// A group made with FAN_REPORT_DFID_NAME (Linux 5.9) reports each event with one
// record naming where it happened (fanotify(7)): for a directory entry change
// (create, delete, either half of a move) the directory's file handle and the entry's
// name; for a change to a directory object itself (attrib) the directory's own handle
// and the name "."; for a change to a non-directory (attrib) its parent's handle and the
// name it was changed through. A group that reports objects' handles too
// (FAN_REPORT_FID) adds a record with the object's own handle, and reports a change to
// an object no name leads to any more (a file's last unlink) with that record alone.
// An overflow of the kernel's queue is an event of its own, with no record. A handle is
// what name_to_handle_at gives for the same object, prefixed, in both the event and
// fileKey, by the filesystem's fsid (statfs).

// evKey is what one event names: entry name in the directory dir (a fileKey), or
// selfName for the directory object itself.
type evKey struct {
	dir  string
	name string
}

// selfName is the name an event gives a change to a directory object itself.
const selfName = "."

// fileKey is the key of a layer object as events name it: fsid, handle type and handle.
func fileKey(fsid [8]byte, htype int32, handle []byte) string {
	b := make([]byte, 0, 12+len(handle))
	b = append(b, fsid[:]...)
	b = binary.NativeEndian.AppendUint32(b, uint32(htype))
	return string(append(b, handle...))
}

// fsidOf is the fsid statfs reports for the filesystem of fd, as events carry it.
func fsidOf(fd int) ([8]byte, error) {
	var sfs unix.Statfs_t
	if err := unix.Fstatfs(fd, &sfs); err != nil {
		return [8]byte{}, err
	}
	var b [8]byte
	binary.NativeEndian.PutUint32(b[0:], uint32(sfs.Fsid.Val[0]))
	binary.NativeEndian.PutUint32(b[4:], uint32(sfs.Fsid.Val[1]))
	return b, nil
}

// handleKey is the fileKey of the object at name in dir (dir itself for ""), on the
// filesystem of fsid.
func handleKey(fsid [8]byte, dir int, name string) (string, error) {
	flags := 0
	if name == "" {
		flags = unix.AT_EMPTY_PATH
	}
	h, _, err := unix.NameToHandleAt(dir, name, flags)
	if err != nil {
		return "", err
	}
	return fileKey(fsid, h.Type(), h.Bytes()), nil
}

// fanEvent is one event as the cache uses it: the entry it names, and the object's own
// fileKey where the group reports it too (FAN_REPORT_FID: for a change to a
// non-directory's attributes, whichever of its names it was made through); or, with all
// set, one that invalidates everything (an overflow, or an event without a name record).
type fanEvent struct {
	key  evKey
	self string
	all  bool
}

// Offsets in the kernel's structures (include/uapi/linux/fanotify.h): the event
// metadata (event_len u32, vers u8, reserved u8, metadata_len u16, mask u64, fd s32,
// pid s32), an information record's header (info_type u8, pad u8, len u16), and a
// file-handle record after its header (fsid 8 bytes, handle_bytes u32, handle_type s32,
// the handle, then for a DFID_NAME record the NUL-terminated name).
const (
	metaLen         = unix.FAN_EVENT_METADATA_LEN
	metaVersion     = 3 // FANOTIFY_METADATA_VERSION
	infoHeaderLen   = 4
	fidRecordPrefix = infoHeaderLen + 8 + 4 + 4
)

// parseEvents calls f for every event in buf, which a read of a FAN_REPORT_DFID_NAME
// group filled. What it cannot make sense of is reported as an event that invalidates
// everything, never skipped: the cache stays exact whatever the kernel sends.
func parseEvents(buf []byte, f func(fanEvent)) {
	for len(buf) > 0 {
		if len(buf) < metaLen {
			f(fanEvent{all: true})
			return
		}
		evLen := int(binary.NativeEndian.Uint32(buf[0:]))
		vers := buf[4]
		mLen := int(binary.NativeEndian.Uint16(buf[6:]))
		mask := binary.NativeEndian.Uint64(buf[8:])
		if vers != metaVersion || mLen < metaLen || evLen < mLen || evLen > len(buf) {
			f(fanEvent{all: true})
			return
		}
		f(parseEvent(mask, buf[mLen:evLen]))
		buf = buf[evLen:]
	}
}

// parseEvent reads the records of one event.
func parseEvent(mask uint64, recs []byte) fanEvent {
	if mask&unix.FAN_Q_OVERFLOW != 0 {
		return fanEvent{all: true}
	}
	var ev fanEvent
	named := false
	for len(recs) >= infoHeaderLen {
		typ := recs[0]
		rLen := int(binary.NativeEndian.Uint16(recs[2:]))
		if rLen < infoHeaderLen || rLen > len(recs) {
			return fanEvent{all: true}
		}
		rec := recs[:rLen]
		recs = recs[rLen:]
		if (typ != unix.FAN_EVENT_INFO_TYPE_DFID_NAME && typ != unix.FAN_EVENT_INFO_TYPE_FID) || rLen < fidRecordPrefix {
			continue
		}
		var fsid [8]byte
		copy(fsid[:], rec[infoHeaderLen:])
		hLen := int(binary.NativeEndian.Uint32(rec[infoHeaderLen+8:]))
		hType := int32(binary.NativeEndian.Uint32(rec[infoHeaderLen+12:]))
		if hLen > rLen-fidRecordPrefix {
			return fanEvent{all: true}
		}
		key := fileKey(fsid, hType, rec[fidRecordPrefix:fidRecordPrefix+hLen])
		if typ == unix.FAN_EVENT_INFO_TYPE_FID {
			ev.self = key
			continue
		}
		name := rec[fidRecordPrefix+hLen:]
		end := 0
		for end < len(name) && name[end] != 0 {
			end++
		}
		if end == 0 || end == len(name) { // no name, or no terminating NUL
			return fanEvent{all: true}
		}
		ev.key, named = evKey{dir: key, name: string(name[:end])}, true
	}
	switch {
	case named:
		return ev
	case ev.self != "":
		// An object reported by its own handle alone: a change to one no name leads to
		// any more (the attrib and delete-self of a file's last unlink, merged). What
		// depends on it by name was named by the event of that unlink; what watches the
		// object itself is named here, as a directory's own changes are.
		ev.key = evKey{dir: ev.self, name: selfName}
		return ev
	}
	return fanEvent{all: true}
}
