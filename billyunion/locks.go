package billyunion

import (
	"slices"
	"sync"
)

// lockTable hands out per-directory mutexes keyed by the inode number of the
// directory's upper part. Entries exist only while someone holds or waits
// for them, so the table stays as small as the number of busy directories.
// table.mu is a leaf: it is never held while waiting for a directory lock.
type lockTable struct {
	mu sync.Mutex
	m  map[uint64]*dirLock
}

type dirLock struct {
	sync.Mutex
	refs int
}

func newLockTable() *lockTable { return &lockTable{m: map[uint64]*dirLock{}} }

// lock takes the locks for keys in ascending order (duplicates once) and
// returns the function that releases them all.
func (t *lockTable) lock(keys ...uint64) (unlock func()) {
	keys = slices.Clone(keys)
	slices.Sort(keys)
	keys = slices.Compact(keys)
	held := make([]*dirLock, 0, len(keys))
	for _, k := range keys {
		t.mu.Lock()
		l := t.m[k]
		if l == nil {
			l = &dirLock{}
			t.m[k] = l
		}
		l.refs++
		t.mu.Unlock()
		l.Lock()
		held = append(held, l)
	}
	return func() {
		for i := len(held) - 1; i >= 0; i-- {
			held[i].Unlock()
			t.mu.Lock()
			held[i].refs--
			if held[i].refs == 0 {
				delete(t.m, keys[i])
			}
			t.mu.Unlock()
		}
	}
}
