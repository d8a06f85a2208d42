package mount

import (
	"sort"
	"sync"
)

// maxEntries bounds the DUMP list: a client that mounts and never unmounts must not grow
// it forever.
const maxEntries = 1024

// table is what DUMP reports: who mounted what.
type table struct {
	mu      sync.Mutex
	entries map[entry]struct{} // guarded by mu
}

type entry struct{ host, dir string }

func newTable() *table { return &table{entries: make(map[entry]struct{})} }

func (m *table) add(host, dir string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.entries) >= maxEntries {
		clear(m.entries)
	}
	m.entries[entry{host, dir}] = struct{}{}
}

func (m *table) remove(host, dir string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.entries, entry{host, dir})
}

func (m *table) removeHost(host string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for e := range m.entries {
		if e.host == host {
			delete(m.entries, e)
		}
	}
}

// list returns the entries sorted, so DUMP answers are stable.
func (m *table) list() []entry {
	m.mu.Lock()
	out := make([]entry, 0, len(m.entries))
	for e := range m.entries {
		out = append(out, e)
	}
	m.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		if out[i].host != out[j].host {
			return out[i].host < out[j].host
		}
		return out[i].dir < out[j].dir
	})
	return out
}
