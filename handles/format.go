package handles

import (
	"encoding/binary"
	"errors"
	"hash/fnv"

	"github.com/ovlnfs/ovlnfs/billyunion"
)

// The wire format, version 1 (at most MaxSize bytes):
//
//	0      version (1)
//	1..4   export id: the layer set's id, big-endian
//	5      flags: flagDir, flagHint, flagHashedName
//	       object:  its ObjectID in compact form (billyunion's
//	                AppendCompact: fs index | handle type | length |
//	                handle bytes)
//	       with flagHint:
//	         parent: the ObjectID of the directory, compact form
//	         name:   length | bytes, or with flagHashedName an 8-byte
//	                 FNV-1a hash of a name too long to fit
//
// then zero bytes up to a multiple of 4. go-nfs reads handles with an XDR
// opaque decoder that does not skip the padding after an opaque whose
// length is not a multiple of 4, and so misreads the arguments that follow;
// handles of such lengths are never made. Anything else trailing makes a
// handle malformed.
const (
	MaxSize = 64 // NFSv3's limit (RFC 1813 NFS3_FHSIZE)

	formatVersion = 1
	headerSize    = 6

	flagDir        = 1 << 0
	flagHint       = 1 << 1
	flagHashedName = 1 << 2
	knownFlags     = flagDir | flagHint | flagHashedName
)

// ErrBadHandle is returned for bytes that are not a handle of this format.
var ErrBadHandle = errors.New("handles: malformed file handle")

// errTooBig: the object's kernel handle leaves no room in MaxSize bytes.
var errTooBig = errors.New("handles: the layer filesystem's file handles are too large for NFSv3")

// handle is a decoded handle.
type handle struct {
	export   uint32
	dir      bool
	obj      billyunion.ObjectID
	hasHint  bool
	parent   billyunion.ObjectID
	name     string // when the name was stored whole
	nameHash uint64 // when it was hashed
	hashed   bool
}

func nameHash(name string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(name))
	return h.Sum64()
}

// encode builds the handle for h. The hint is dropped when it cannot fit;
// the name is hashed when it alone does not fit.
func encode(h *handle) ([]byte, error) {
	b := make([]byte, 0, MaxSize)
	b = append(b, formatVersion)
	b = binary.BigEndian.AppendUint32(b, h.export)
	flags := byte(0)
	if h.dir {
		flags |= flagDir
	}
	left := MaxSize - headerSize - h.obj.CompactSize()
	if left < 0 {
		return nil, errTooBig
	}
	hint := h.hasHint && left >= h.parent.CompactSize()+1+1 // room for at least a one-byte name
	inline := false
	if hint {
		left -= h.parent.CompactSize()
		inline = 1+len(h.name) <= left
		if !inline && left < 8 {
			hint = false
		}
	}
	if hint {
		flags |= flagHint
		if !inline {
			flags |= flagHashedName
		}
	}
	b = append(b, flags)
	b, err := h.obj.AppendCompact(b)
	if err != nil {
		return nil, errTooBig
	}
	if hint {
		if b, err = h.parent.AppendCompact(b); err != nil {
			return nil, errTooBig
		}
		if inline {
			b = append(b, byte(len(h.name)))
			b = append(b, h.name...)
		} else {
			b = binary.BigEndian.AppendUint64(b, nameHash(h.name))
		}
	}
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b, nil
}

// decode parses and validates a handle; ErrBadHandle for anything that is
// not exactly a version-1 handle (the export id is checked by the caller).
func decode(b []byte) (*handle, error) {
	if len(b) < headerSize || len(b) > MaxSize || len(b)%4 != 0 || b[0] != formatVersion {
		return nil, ErrBadHandle
	}
	flags := b[5]
	if flags&^knownFlags != 0 || (flags&flagHashedName != 0 && flags&flagHint == 0) ||
		(flags&flagDir != 0 && flags&flagHint != 0) {
		return nil, ErrBadHandle
	}
	h := &handle{export: binary.BigEndian.Uint32(b[1:5]), dir: flags&flagDir != 0}
	rest := b[headerSize:]
	var err error
	if h.obj, rest, err = billyunion.ParseCompactObjectID(rest); err != nil {
		return nil, ErrBadHandle
	}
	if flags&flagHint != 0 {
		h.hasHint = true
		if h.parent, rest, err = billyunion.ParseCompactObjectID(rest); err != nil {
			return nil, ErrBadHandle
		}
		if flags&flagHashedName != 0 {
			if len(rest) < 8 {
				return nil, ErrBadHandle
			}
			h.hashed = true
			h.nameHash = binary.BigEndian.Uint64(rest)
			rest = rest[8:]
		} else {
			if len(rest) < 1 || len(rest) < 1+int(rest[0]) {
				return nil, ErrBadHandle
			}
			h.name = string(rest[1 : 1+int(rest[0])])
			if billyunion.ValidName(h.name) != nil {
				return nil, ErrBadHandle
			}
			rest = rest[1+int(rest[0]):]
		}
	}
	// Only the padding may follow.
	if len(rest) > 3 {
		return nil, ErrBadHandle
	}
	for _, c := range rest {
		if c != 0 {
			return nil, ErrBadHandle
		}
	}
	return h, nil
}
