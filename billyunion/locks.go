package billyunion

import (
	"slices"
	"sync"
)

// lockTable hands out mutexes keyed by an upper inode number: a directory's (the
// directory locks) or a file's (the quota's write locks). Entries exist only while
// someone holds or waits for them, so the table stays as small as the number of busy
// inodes. table.mu is a leaf: it is never held while waiting for a key's lock.
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
		held = append(held, t.lockKey(k))
	}
	return func() {
		for i := len(held) - 1; i >= 0; i-- {
			t.unlockKey(keys[i], held[i])
		}
	}
}

// lockKey takes the lock for one key, allocating nothing when it is in use already;
// unlockKey releases it.
func (t *lockTable) lockKey(k uint64) *dirLock {
	t.mu.Lock()
	l := t.m[k]
	if l == nil {
		l = &dirLock{}
		t.m[k] = l
	}
	l.refs++
	t.mu.Unlock()
	l.Lock()
	return l
}

func (t *lockTable) unlockKey(k uint64, l *dirLock) {
	l.Unlock()
	t.mu.Lock()
	if l.refs--; l.refs == 0 {
		delete(t.m, k)
	}
	t.mu.Unlock()
}
