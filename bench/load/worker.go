package main

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"time"

	nfsc "github.com/willscott/go-nfs-client/nfs"
)

// A worker is one client connection running the mix until the deadline. Reads go to the
// shared lower tree (checked against the model); every change is made in the worker's own
// directory work/cNN, whose content the worker models exactly, so that what it reads back
// and what a listing of it shows can be checked too.

const (
	maxOwnFiles   = 10
	maxOwnLinks   = 4
	maxOwnFileLen = 3 << 19 // a file longer than 1.5 MiB after a write is truncated
)

type ownFile struct {
	fh     []byte
	fileid uint64
	data   []byte
	mode   uint32
}

type ownLink struct {
	fh     []byte
	target string
}

type worker struct {
	id    int
	c     *conn
	m     *model
	rng   *rand.Rand
	dir   string
	dirFH []byte
	files map[string]*ownFile
	links map[string]*ownLink
	seq   int
	bigFH [][]byte
	errs  *errLog
	verf  *verifiers

	ops          [numOps]int
	bytesRead    int64
	bytesWritten int64
	copyUps      int
	copied       map[string]bool // seed files already copied up (written, truncated, chmodded, renamed)
}

// The operations of the mix and their weights.
const (
	opWalk = iota
	opWalkHidden
	opReaddir
	opReadSmall
	opReadBig
	opWrite
	opTruncate
	opCreateRemove
	opMkdirRmdir
	opRename
	opChmod
	opReadlink
	opSymlink
	opOwnList
	opRemove
	numOps
)

var opNames = [numOps]string{
	"walk (LOOKUP per component, GETATTR)", "walk to a hidden name (NOENT expected)",
	"READDIRPLUS of a lower directory", "READ of a small lower file", "READ of 1 MiB of a big lower file",
	"WRITE+COMMIT, read back", "truncate (SETATTR size), read back", "CREATE/REMOVE",
	"MKDIR/RENAME dir/RMDIR", "RENAME of an own file", "chmod (SETATTR mode)", "READLINK of a lower link",
	"SYMLINK+READLINK of an own link", "READDIRPLUS of the own directory", "REMOVE of an own file",
}

var opWeights = [numOps]int{
	opWalk: 20, opWalkHidden: 3, opReaddir: 6, opReadSmall: 12, opReadBig: 6, opWrite: 10,
	opTruncate: 3, opCreateRemove: 5, opMkdirRmdir: 3, opRename: 5, opChmod: 5, opReadlink: 5,
	opSymlink: 2, opOwnList: 2, opRemove: 2,
}

// ownDirOp: ops that change the own directory, after whose failure the model is rebuilt.
var ownDirOp = [numOps]bool{opWrite: true, opTruncate: true, opCreateRemove: true, opMkdirRmdir: true,
	opRename: true, opChmod: true, opSymlink: true, opOwnList: true, opRemove: true}

// verifyError is a check that failed: what the server answered was not what the model says.
type verifyError struct{ what, detail string }

func (e *verifyError) Error() string { return "verify: " + e.what + ": " + e.detail }

func mismatch(what, format string, args ...any) error {
	return &verifyError{what: what, detail: fmt.Sprintf(format, args...)}
}

// errLog counts every error by operation and kind, with a few examples of each.
type errLog struct {
	mu       sync.Mutex
	counts   map[string]int
	examples map[string][]string
	total    int
}

func newErrLog() *errLog { return &errLog{counts: map[string]int{}, examples: map[string][]string{}} }

func (e *errLog) add(op string, conn int, err error) {
	var kind string
	var se *statusError
	var ve *verifyError
	switch {
	case errors.As(err, &se):
		kind = procNames[se.proc] + " " + statusName(se.status)
	case errors.As(err, &ve):
		kind = "verify: " + ve.what
	default:
		kind = err.Error()
		if len(kind) > 80 {
			kind = kind[:80]
		}
	}
	key := op + " | " + kind
	e.mu.Lock()
	defer e.mu.Unlock()
	e.total++
	e.counts[key]++
	if len(e.examples[key]) < 3 {
		e.examples[key] = append(e.examples[key], fmt.Sprintf("c%02d: %v", conn, err))
	}
}

func (e *errLog) keys() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var ks []string
	for k := range e.counts {
		ks = append(ks, k)
	}
	sort.Slice(ks, func(i, j int) bool { return e.counts[ks[i]] > e.counts[ks[j]] })
	return ks
}

// verifiers records the WRITE and COMMIT verifiers seen: one server instance, one verifier.
type verifiers struct {
	mu   sync.Mutex
	seen map[[8]byte]int
}

func (v *verifiers) add(x [8]byte) {
	v.mu.Lock()
	v.seen[x]++
	v.mu.Unlock()
}

func newWorker(id int, c *conn, m *model, errs *errLog, verf *verifiers) *worker {
	return &worker{id: id, c: c, m: m, rng: rand.New(rand.NewPCG(uint64(id), 0x10ad)), dir: fmt.Sprintf("work/c%02d", id),
		files: map[string]*ownFile{}, links: map[string]*ownLink{}, errs: errs, verf: verf}
}

// setup finds the worker's directory and its lower seed files.
func (w *worker) setup() error {
	fh, _, err := w.walk(w.dir)
	if err != nil {
		return err
	}
	w.dirFH = fh
	for _, s := range w.m.seeds[w.id] {
		fh, a, st, err := w.c.lookup(w.dirFH, s.name)
		if err == nil {
			err = expect(procLookup, st, nfsOK)
		}
		if err != nil {
			return fmt.Errorf("%s/%s: %w", w.dir, s.name, err)
		}
		if a.Size != uint64(s.size) {
			return mismatch("seed size", "%s/%s: %d, want %d", w.dir, s.name, a.Size, s.size)
		}
		w.files[s.name] = &ownFile{fh: fh, fileid: a.FileID, data: content(s.seed, s.size), mode: a.Mode & 0o7777}
	}
	for _, b := range w.m.bigs {
		fh, _, err := w.walk(b.path)
		if err != nil {
			return err
		}
		w.bigFH = append(w.bigFH, fh)
	}
	return nil
}

// run runs the mix until deadline.
func (w *worker) run(deadline time.Time) {
	total := 0
	for _, x := range opWeights {
		total += x
	}
	for time.Now().Before(deadline) {
		r := w.rng.IntN(total)
		op := 0
		for ; r >= opWeights[op]; op++ {
			r -= opWeights[op]
		}
		err := w.do(op)
		w.ops[op]++
		if err != nil {
			w.errs.add(opNames[op], w.id, err)
			if ownDirOp[op] {
				if err := w.resync(); err != nil {
					w.errs.add("rebuilding the own directory's model after an error", w.id, err)
					return
				}
			}
		}
	}
}

func (w *worker) do(op int) error {
	switch op {
	case opWalk:
		return w.walkFile()
	case opWalkHidden:
		return w.walkHidden()
	case opReaddir:
		return w.readdirLower()
	case opReadSmall:
		return w.readSmall()
	case opReadBig:
		return w.readBig()
	case opWrite:
		return w.writeOwn()
	case opTruncate:
		return w.truncateOwn()
	case opCreateRemove:
		return w.createRemove()
	case opMkdirRmdir:
		return w.mkdirRmdir()
	case opRename:
		return w.renameOwn()
	case opChmod:
		return w.chmodOwn()
	case opReadlink:
		return w.readlinkLower()
	case opSymlink:
		return w.symlinkOwn()
	case opOwnList:
		return w.listOwn()
	case opRemove:
		return w.removeOwn()
	}
	return nil
}

// walk looks p up one component at a time from the root.
func (w *worker) walk(p string) ([]byte, fattr, error) {
	fh, a, st, err := w.walkStatus(p)
	if err == nil {
		err = expect(procLookup, st, nfsOK)
	}
	if err != nil {
		return nil, a, fmt.Errorf("%s: %w", p, err)
	}
	return fh, a, nil
}

// walkStatus is walk returning the status of the last LOOKUP.
func (w *worker) walkStatus(p string) ([]byte, fattr, uint32, error) {
	fh := w.c.root
	var a fattr
	if p == "." {
		a, st, err := w.c.getattr(fh)
		return fh, a, st, err
	}
	parts := strings.Split(p, "/")
	for i, name := range parts {
		next, attr, st, err := w.c.lookup(fh, name)
		if err != nil {
			return nil, a, st, err
		}
		if st != nfsOK {
			if i < len(parts)-1 {
				return nil, a, st, fmt.Errorf("component %q: %w", name, &statusError{procLookup, st})
			}
			return nil, a, st, nil
		}
		fh, a = next, attr
	}
	return fh, a, nfsOK, nil
}

func (w *worker) walkFile() error {
	f := w.m.files[w.rng.IntN(len(w.m.files))]
	fh, la, err := w.walk(f.path)
	if err != nil {
		return err
	}
	a, st, err := w.c.getattr(fh)
	if err == nil {
		err = expect(procGetattr, st, nfsOK)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", f.path, err)
	}
	if a.Type != typeReg || a.Size != uint64(f.size) || a.Mode&0o7777 != f.mode {
		return mismatch("lower file attributes", "%s: type %d size %d mode %o, want file size %d mode %o", f.path, a.Type, a.Size, a.Mode&0o7777, f.size, f.mode)
	}
	if a.FileID != la.FileID {
		return mismatch("fileid", "%s: GETATTR fileid %d, LOOKUP's %d", f.path, a.FileID, la.FileID)
	}
	return nil
}

func (w *worker) walkHidden() error {
	p := w.m.hidden[w.rng.IntN(len(w.m.hidden))]
	_, a, st, err := w.walkStatus(p)
	if err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	if st != nfsNoEnt {
		return mismatch("hidden name visible", "%s: LOOKUP answered %s (type %d), want NOENT (whited out or below an opaque directory)", p, statusName(st), a.Type)
	}
	return nil
}

var maxCounts = []uint32{4096, 16384, 65536, 1 << 20}

func (w *worker) readdirLower() error {
	d := w.m.dirList[w.rng.IntN(len(w.m.dirList))]
	fh, _, err := w.walk(d)
	if err != nil {
		return err
	}
	maxCount := maxCounts[w.rng.IntN(len(maxCounts))]
	es, pages, st, err := w.c.readdirplus(fh, maxCount)
	if err == nil && st == nfsBadCookie {
		// A lower directory never changes: its verifier should never go bad. Start
		// over from cookie 0, as a client must, and say whether that helped.
		v1 := w.c.listVerf
		_, pages2, st2, err2 := w.c.readdirplus(fh, maxCount)
		again := statusName(st2)
		if err2 != nil {
			again = err2.Error()
		}
		same := "another verifier"
		if w.c.listVerf == v1 {
			same = "the same verifier"
		}
		return fmt.Errorf("%s (maxcount %d, page %d): %w; started over from cookie 0: %s at page %d, with %s %x",
			d, maxCount, pages, &statusError{procReaddirplus, st}, again, pages2, same, w.c.listVerf)
	}
	if err == nil {
		err = expect(procReaddirplus, st, nfsOK)
	}
	if err != nil {
		return fmt.Errorf("%s (maxcount %d, page %d): %w", d, maxCount, pages, err)
	}
	return checkListing(d, es, w.m.dirs[d])
}

// checkListing compares a listing with the expected entries.
func checkListing(d string, es []dirEntry, want map[string]expEntry) error {
	seen := map[string]bool{}
	var extra, dups []string
	for _, e := range es {
		if e.Name == "." || e.Name == ".." {
			continue
		}
		if seen[e.Name] {
			dups = append(dups, e.Name)
			continue
		}
		seen[e.Name] = true
		x, ok := want[e.Name]
		if !ok {
			extra = append(extra, e.Name)
			continue
		}
		if !e.HasAtt || e.FH == nil {
			return mismatch("listing attributes", "%s/%s: READDIRPLUS entry without attributes or handle", d, e.Name)
		}
		if e.Attr.Type != x.typ || (x.typ == typeReg && e.Attr.Size != uint64(x.size)) ||
			(x.typ != typeLnk && e.Attr.Mode&0o7777 != x.mode) || e.Attr.FileID != e.FileID {
			return mismatch("listing attributes", "%s/%s: type %d size %d mode %o fileid %d/%d, want type %d size %d mode %o",
				d, e.Name, e.Attr.Type, e.Attr.Size, e.Attr.Mode&0o7777, e.FileID, e.Attr.FileID, x.typ, x.size, x.mode)
		}
	}
	var missing []string
	for n := range want {
		if !seen[n] {
			missing = append(missing, n)
		}
	}
	if len(extra)+len(dups)+len(missing) > 0 {
		sort.Strings(missing)
		return mismatch("listing names", "%s: %d listed, %d missing %v, %d unexpected %v, %d duplicated %v",
			d, len(seen), len(missing), first(missing), len(extra), first(extra), len(dups), first(dups))
	}
	return nil
}

func first(xs []string) []string {
	if len(xs) > 4 {
		return xs[:4]
	}
	return xs
}

func (w *worker) readSmall() error {
	f := w.m.files[w.rng.IntN(len(w.m.files))]
	fh, _, err := w.walk(f.path)
	if err != nil {
		return err
	}
	chunk := uint32(1 << 20)
	if w.rng.IntN(3) == 0 {
		chunk = 16 << 10
	}
	got, err := w.readAll(fh, chunk)
	if err != nil {
		return fmt.Errorf("%s: %w", f.path, err)
	}
	if want := content(f.seed, f.size); !bytes.Equal(got, want) {
		return mismatch("lower file content", "%s: %s", f.path, diff(got, want))
	}
	return nil
}

// readAll reads a whole file in chunk-sized READs, up to the EOF flag.
func (w *worker) readAll(fh []byte, chunk uint32) ([]byte, error) {
	var out []byte
	for {
		data, eof, a, st, err := w.c.read(fh, uint64(len(out)), chunk)
		if err == nil {
			err = expect(procRead, st, nfsOK)
		}
		if err != nil {
			return out, err
		}
		out = append(out, data...)
		w.bytesRead += int64(len(data))
		if eof {
			if a.Size != uint64(len(out)) {
				return out, mismatch("READ EOF", "EOF after %d bytes, post-op size %d", len(out), a.Size)
			}
			return out, nil
		}
		if len(data) == 0 {
			return out, mismatch("READ EOF", "0 bytes at offset %d without EOF", len(out))
		}
	}
}

func diff(got, want []byte) string {
	n := min(len(got), len(want))
	for i := 0; i < n; i++ {
		if got[i] != want[i] {
			return fmt.Sprintf("%d bytes read, %d expected, first difference at byte %d", len(got), len(want), i)
		}
	}
	return fmt.Sprintf("%d bytes read, %d expected", len(got), len(want))
}

func (w *worker) readBig() error {
	i := w.rng.IntN(len(w.m.bigs))
	b := w.m.bigs[i]
	var off int64
	switch r := w.rng.IntN(10); {
	case r < 6:
		off = w.rng.Int64N(b.size/bigBlock) * bigBlock
	case r < 9:
		off = w.rng.Int64N(b.size)
	default: // across the end
		off = b.size - w.rng.Int64N(1<<20)
	}
	data, eof, a, st, err := w.c.read(w.bigFH[i], uint64(off), 1<<20)
	if err == nil {
		err = expect(procRead, st, nfsOK)
	}
	if err != nil {
		return fmt.Errorf("%s at %d: %w", b.path, off, err)
	}
	w.bytesRead += int64(len(data))
	want := bigExpected(b, off, 1<<20)
	if !bytes.Equal(data, want) {
		return mismatch("big file content", "%s at %d: %s", b.path, off, diff(data, want))
	}
	if wantEOF := off+int64(len(data)) >= b.size; eof != wantEOF || a.Size != uint64(b.size) {
		return mismatch("READ EOF", "%s at %d: eof %v size %d, want eof %v size %d", b.path, off, eof, a.Size, wantEOF, b.size)
	}
	return nil
}

func (w *worker) newName(prefix string) string {
	w.seq++
	return fmt.Sprintf("%s%06d", prefix, w.seq)
}

// pickFile returns a random own file, nil if there is none.
func (w *worker) pickFile() (string, *ownFile) {
	if len(w.files) == 0 {
		return "", nil
	}
	names := make([]string, 0, len(w.files))
	for n := range w.files {
		names = append(names, n)
	}
	sort.Strings(names)
	n := names[w.rng.IntN(len(names))]
	return n, w.files[n]
}

func (w *worker) randomData(n int) []byte {
	b := make([]byte, n)
	fill(b, w.rng.Uint64())
	return b
}

// checkFile reads the own file back whole and compares it with the model.
func (w *worker) checkFile(name string, f *ownFile) error {
	got, err := w.readAll(f.fh, 1<<20)
	if err != nil {
		return fmt.Errorf("%s/%s: %w", w.dir, name, err)
	}
	if !bytes.Equal(got, f.data) {
		return mismatch("read back", "%s/%s: %s", w.dir, name, diff(got, f.data))
	}
	return nil
}

func (w *worker) writeOwn() error {
	name, f := w.pickFile()
	if f == nil || (len(w.files) < maxOwnFiles && w.rng.IntN(4) == 0) {
		name = w.newName("f")
		fh, a, st, err := w.c.create(w.dirFH, name, createGuarded, 0o644)
		if err == nil {
			err = expect(procCreate, st, nfsOK)
		}
		if err != nil {
			return fmt.Errorf("%s/%s: %w", w.dir, name, err)
		}
		if a.Type != typeReg || a.Size != 0 || a.Mode&0o7777 != 0o644 {
			return mismatch("new file attributes", "%s/%s: type %d size %d mode %o", w.dir, name, a.Type, a.Size, a.Mode&0o7777)
		}
		f = &ownFile{fh: fh, fileid: a.FileID, mode: 0o644}
		w.files[name] = f
	}
	var n int
	switch r := w.rng.IntN(10); {
	case r < 7:
		n = 1 + w.rng.IntN(64<<10)
	case r < 9:
		n = 64<<10 + w.rng.IntN(192<<10)
	default:
		n = 1 << 20
	}
	off := len(f.data) // append
	switch r := w.rng.IntN(10); {
	case r < 2 && len(f.data) > 0: // overwrite inside
		off = w.rng.IntN(len(f.data))
	case r < 3: // leave a hole
		off = len(f.data) + w.rng.IntN(64<<10)
	}
	stable := uint32(unstable)
	if w.rng.IntN(5) == 0 {
		stable = fileSync
	}
	data := w.randomData(n)
	copyUp := w.isSeed(name) && !w.copiedUp(name)
	for done := 0; done < n; {
		cnt, committed, verf, a, st, err := w.c.write(f.fh, uint64(off+done), data[done:], stable)
		if err == nil {
			err = expect(procWrite, st, nfsOK)
		}
		if err != nil {
			return fmt.Errorf("%s/%s at %d (%d bytes): %w", w.dir, name, off+done, n-done, err)
		}
		w.verf.add(verf)
		if committed < stable || cnt == 0 {
			return mismatch("WRITE reply", "%s/%s: count %d committed %d for stable %d", w.dir, name, cnt, committed, stable)
		}
		if want := uint64(max(len(f.data), off+done+int(cnt))); a.Size != want || a.FileID != f.fileid {
			return mismatch("WRITE post-op attributes", "%s/%s: size %d fileid %d, want %d, %d", w.dir, name, a.Size, a.FileID, want, f.fileid)
		}
		done += int(cnt)
		w.bytesWritten += int64(cnt)
	}
	if stable == unstable {
		verf, st, err := w.c.commit(f.fh)
		if err == nil {
			err = expect(procCommit, st, nfsOK)
		}
		if err != nil {
			return fmt.Errorf("%s/%s: %w", w.dir, name, err)
		}
		w.verf.add(verf)
	}
	if off+n > len(f.data) {
		f.data = append(f.data, make([]byte, off+n-len(f.data))...)
	}
	copy(f.data[off:], data)
	if copyUp {
		w.copyUps++
		w.markCopiedUp(name)
	}
	if err := w.checkFile(name, f); err != nil {
		return err
	}
	if len(f.data) > maxOwnFileLen {
		return w.truncate(name, f, w.rng.IntN(256<<10))
	}
	return nil
}

// Seed files are the lower files of the own directory; copiedUp records which were written.
func (w *worker) isSeed(name string) bool { return strings.HasPrefix(name, "seed-") }

func (w *worker) copiedUp(name string) bool { return w.copied[name] }

func (w *worker) markCopiedUp(name string) {
	if w.copied == nil {
		w.copied = map[string]bool{}
	}
	w.copied[name] = true
}

func (w *worker) truncateOwn() error {
	name, f := w.pickFile()
	if f == nil {
		return nil
	}
	size := 0
	switch r := w.rng.IntN(10); {
	case r < 5 && len(f.data) > 0:
		size = w.rng.IntN(len(f.data))
	case r < 8:
		size = len(f.data) + 1 + w.rng.IntN(64<<10)
	}
	return w.truncate(name, f, size)
}

func (w *worker) truncate(name string, f *ownFile, size int) error {
	a, st, err := w.c.setattr(f.fh, nfsc.Sattr3{Size: nfsc.SetSize{SetIt: true, Size: uint64(size)}})
	if err == nil {
		err = expect(procSetattr, st, nfsOK)
	}
	if err != nil {
		return fmt.Errorf("%s/%s to %d: %w", w.dir, name, size, err)
	}
	if a.Size != uint64(size) || a.FileID != f.fileid {
		return mismatch("SETATTR size", "%s/%s: post-op size %d fileid %d, want %d, %d", w.dir, name, a.Size, a.FileID, size, f.fileid)
	}
	if w.isSeed(name) && !w.copiedUp(name) {
		w.copyUps++
		w.markCopiedUp(name)
	}
	if size <= len(f.data) {
		f.data = f.data[:size:size]
	} else {
		f.data = append(f.data, make([]byte, size-len(f.data))...)
	}
	return w.checkFile(name, f)
}

func (w *worker) getattrStatus(fh []byte, want uint32, what string) (fattr, error) {
	a, st, err := w.c.getattr(fh)
	if err != nil {
		return a, fmt.Errorf("%s: %w", what, err)
	}
	if st != want {
		if want == nfsStale {
			return a, mismatch("handle of a removed object", "%s: GETATTR answered %s, want NFS3ERR_STALE (docs/handles.md)", what, statusName(st))
		}
		return a, fmt.Errorf("%s: %w", what, &statusError{procGetattr, st})
	}
	return a, nil
}

func (w *worker) lookupStatus(dir []byte, name string, want uint32, what string) ([]byte, fattr, error) {
	fh, a, st, err := w.c.lookup(dir, name)
	if err != nil {
		return nil, a, fmt.Errorf("%s: %w", what, err)
	}
	if st != want {
		if want == nfsNoEnt {
			return nil, a, mismatch("name still there", "%s: LOOKUP answered %s, want NOENT", what, statusName(st))
		}
		return nil, a, fmt.Errorf("%s: %w", what, &statusError{procLookup, st})
	}
	return fh, a, nil
}

func (w *worker) createRemove() error {
	name := w.newName("t")
	what := w.dir + "/" + name
	fh, a, st, err := w.c.create(w.dirFH, name, createGuarded, 0o640)
	if err == nil {
		err = expect(procCreate, st, nfsOK)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if a.Type != typeReg || a.Size != 0 || a.Mode&0o7777 != 0o640 {
		return mismatch("new file attributes", "%s: type %d size %d mode %o", what, a.Type, a.Size, a.Mode&0o7777)
	}
	if _, _, st, err := w.c.create(w.dirFH, name, createGuarded, 0o640); err != nil || st != nfsExist {
		if err != nil {
			return fmt.Errorf("%s (again): %w", what, err)
		}
		return mismatch("GUARDED CREATE of an existing name", "%s: %s, want NFS3ERR_EXIST", what, statusName(st))
	}
	if w.rng.IntN(2) == 0 {
		data := w.randomData(1 + w.rng.IntN(8192))
		_, _, verf, wa, st, err := w.c.write(fh, 0, data, fileSync)
		if err == nil {
			err = expect(procWrite, st, nfsOK)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		w.verf.add(verf)
		w.bytesWritten += int64(len(data))
		if wa.Size != uint64(len(data)) {
			return mismatch("WRITE post-op attributes", "%s: size %d, want %d", what, wa.Size, len(data))
		}
	}
	if _, err := w.getattrStatus(fh, nfsOK, what); err != nil {
		return err
	}
	if st, err := w.c.remove(w.dirFH, name); err != nil || st != nfsOK {
		if err == nil {
			err = &statusError{procRemove, st}
		}
		return fmt.Errorf("%s: %w", what, err)
	}
	if _, _, err := w.lookupStatus(w.dirFH, name, nfsNoEnt, what+" after REMOVE"); err != nil {
		return err
	}
	_, err = w.getattrStatus(fh, nfsStale, what+" after REMOVE")
	return err
}

func (w *worker) mkdirRmdir() error {
	name := w.newName("d")
	what := w.dir + "/" + name
	dfh, a, st, err := w.c.mkdir(w.dirFH, name, 0o750)
	if err == nil {
		err = expect(procMkdir, st, nfsOK)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if a.Type != typeDir || a.Mode&0o7777 != 0o750 {
		return mismatch("new directory attributes", "%s: type %d mode %o", what, a.Type, a.Mode&0o7777)
	}
	ffh, fa, st, err := w.c.create(dfh, "x", createGuarded, 0o644)
	if err == nil {
		err = expect(procCreate, st, nfsOK)
	}
	if err != nil {
		return fmt.Errorf("%s/x: %w", what, err)
	}
	data := w.randomData(3000)
	_, _, verf, _, st, err := w.c.write(ffh, 0, data, fileSync)
	if err == nil {
		err = expect(procWrite, st, nfsOK)
	}
	if err != nil {
		return fmt.Errorf("%s/x: %w", what, err)
	}
	w.verf.add(verf)
	w.bytesWritten += int64(len(data))
	if st, err := w.c.rmdir(w.dirFH, name); err != nil || st != nfsNotEmpty {
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		return mismatch("RMDIR of a non-empty directory", "%s: %s, want NFS3ERR_NOTEMPTY", what, statusName(st))
	}
	renamed := name + "-r"
	if st, err := w.c.rename(w.dirFH, name, w.dirFH, renamed); err != nil || st != nfsOK {
		if err == nil {
			err = &statusError{procRename, st}
		}
		return fmt.Errorf("%s -> %s: %w", what, renamed, err)
	}
	if _, _, err := w.lookupStatus(w.dirFH, name, nfsNoEnt, what+" after RENAME"); err != nil {
		return err
	}
	// the file's handle survives the rename of its directory
	if ga, err := w.getattrStatus(ffh, nfsOK, what+"/x after renaming the directory"); err != nil {
		return err
	} else if ga.FileID != fa.FileID || ga.Size != uint64(len(data)) {
		return mismatch("handle after a directory rename", "%s/x: fileid %d size %d, want %d, %d", what, ga.FileID, ga.Size, fa.FileID, len(data))
	}
	rfh, _, err := w.lookupStatus(w.dirFH, renamed, nfsOK, w.dir+"/"+renamed)
	if err != nil {
		return err
	}
	xfh, xa, err := w.lookupStatus(rfh, "x", nfsOK, w.dir+"/"+renamed+"/x")
	if err != nil {
		return err
	}
	if xa.FileID != fa.FileID {
		return mismatch("fileid after a directory rename", "%s/%s/x: %d, want %d", w.dir, renamed, xa.FileID, fa.FileID)
	}
	got, err := w.readAll(xfh, 1<<20)
	if err != nil {
		return fmt.Errorf("%s/%s/x: %w", w.dir, renamed, err)
	}
	if !bytes.Equal(got, data) {
		return mismatch("read back", "%s/%s/x: %s", w.dir, renamed, diff(got, data))
	}
	if st, err := w.c.remove(rfh, "x"); err != nil || st != nfsOK {
		if err == nil {
			err = &statusError{procRemove, st}
		}
		return fmt.Errorf("%s/%s/x: %w", w.dir, renamed, err)
	}
	if st, err := w.c.rmdir(w.dirFH, renamed); err != nil || st != nfsOK {
		if err == nil {
			err = &statusError{procRmdir, st}
		}
		return fmt.Errorf("%s/%s: %w", w.dir, renamed, err)
	}
	_, _, err = w.lookupStatus(w.dirFH, renamed, nfsNoEnt, w.dir+"/"+renamed+" after RMDIR")
	return err
}

func (w *worker) renameOwn() error {
	from, f := w.pickFile()
	if f == nil {
		return nil
	}
	to, victim := w.pickFile()
	if to == from || w.rng.IntN(3) != 0 {
		to, victim = w.newName("r"), nil
	}
	what := fmt.Sprintf("%s/%s -> %s", w.dir, from, to)
	if st, err := w.c.rename(w.dirFH, from, w.dirFH, to); err != nil || st != nfsOK {
		if err == nil {
			err = &statusError{procRename, st}
		}
		return fmt.Errorf("%s: %w", what, err)
	}
	if w.isSeed(from) && !w.copiedUp(from) {
		w.copyUps++
	}
	delete(w.files, from)
	w.files[to] = f
	w.markCopiedUp(to)
	if _, _, err := w.lookupStatus(w.dirFH, from, nfsNoEnt, what+": the old name"); err != nil {
		return err
	}
	_, a, err := w.lookupStatus(w.dirFH, to, nfsOK, what+": the new name")
	if err != nil {
		return err
	}
	if a.FileID != f.fileid || a.Size != uint64(len(f.data)) {
		return mismatch("renamed file", "%s: fileid %d size %d, want %d, %d", what, a.FileID, a.Size, f.fileid, len(f.data))
	}
	if ga, err := w.getattrStatus(f.fh, nfsOK, what+": the file's handle"); err != nil {
		return err
	} else if ga.FileID != f.fileid {
		return mismatch("handle after a rename", "%s: fileid %d, want %d", what, ga.FileID, f.fileid)
	}
	if victim != nil {
		if _, err := w.getattrStatus(victim.fh, nfsStale, what+": the replaced file's handle"); err != nil {
			return err
		}
	}
	return nil
}

var chmodModes = []uint32{0o600, 0o640, 0o644, 0o664, 0o700, 0o755}

func (w *worker) chmodOwn() error {
	name, f := w.pickFile()
	if f == nil {
		return nil
	}
	mode := chmodModes[w.rng.IntN(len(chmodModes))]
	what := w.dir + "/" + name
	a, st, err := w.c.setattr(f.fh, nfsc.Sattr3{Mode: nfsc.SetMode{SetIt: true, Mode: mode}})
	if err == nil {
		err = expect(procSetattr, st, nfsOK)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if w.isSeed(name) && !w.copiedUp(name) {
		w.copyUps++
		w.markCopiedUp(name)
	}
	f.mode = mode
	if a.Mode&0o7777 != mode || a.FileID != f.fileid || a.Size != uint64(len(f.data)) {
		return mismatch("SETATTR mode", "%s: post-op mode %o fileid %d size %d, want %o, %d, %d", what, a.Mode&0o7777, a.FileID, a.Size, mode, f.fileid, len(f.data))
	}
	ga, err := w.getattrStatus(f.fh, nfsOK, what)
	if err != nil {
		return err
	}
	if ga.Mode&0o7777 != mode {
		return mismatch("SETATTR mode", "%s: GETATTR mode %o, want %o", what, ga.Mode&0o7777, mode)
	}
	return nil
}

func (w *worker) readlinkLower() error {
	l := w.m.links[w.rng.IntN(len(w.m.links))]
	fh, a, err := w.walk(l.path)
	if err != nil {
		return err
	}
	if a.Type != typeLnk {
		return mismatch("link type", "%s: type %d", l.path, a.Type)
	}
	target, st, err := w.c.readlink(fh)
	if err == nil {
		err = expect(procReadlink, st, nfsOK)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", l.path, err)
	}
	if target != l.target {
		return mismatch("READLINK", "%s: %q, want %q", l.path, target, l.target)
	}
	return nil
}

func (w *worker) symlinkOwn() error {
	if len(w.links) >= maxOwnLinks {
		var names []string
		for n := range w.links {
			names = append(names, n)
		}
		sort.Strings(names)
		n := names[w.rng.IntN(len(names))]
		if st, err := w.c.remove(w.dirFH, n); err != nil || st != nfsOK {
			if err == nil {
				err = &statusError{procRemove, st}
			}
			return fmt.Errorf("%s/%s: %w", w.dir, n, err)
		}
		delete(w.links, n)
		return nil
	}
	name := w.newName("l")
	target := fmt.Sprintf("target/%d/%s", w.rng.IntN(1000), strings.Repeat("y", w.rng.IntN(100)))
	fh, a, st, err := w.c.symlink(w.dirFH, name, target)
	if err == nil {
		err = expect(procSymlink, st, nfsOK)
	}
	if err != nil {
		return fmt.Errorf("%s/%s: %w", w.dir, name, err)
	}
	w.links[name] = &ownLink{fh: fh, target: target}
	if a.Type != typeLnk {
		return mismatch("new link type", "%s/%s: type %d", w.dir, name, a.Type)
	}
	got, st, err := w.c.readlink(fh)
	if err == nil {
		err = expect(procReadlink, st, nfsOK)
	}
	if err != nil {
		return fmt.Errorf("%s/%s: %w", w.dir, name, err)
	}
	if got != target {
		return mismatch("READLINK", "%s/%s: %q, want %q", w.dir, name, got, target)
	}
	return nil
}

func (w *worker) ownExpected() map[string]expEntry {
	want := map[string]expEntry{}
	for n, f := range w.files {
		want[n] = expEntry{typ: typeReg, size: int64(len(f.data)), mode: f.mode}
	}
	for n, l := range w.links {
		want[n] = expEntry{typ: typeLnk, size: int64(len(l.target))}
	}
	return want
}

func (w *worker) listOwn() error {
	maxCount := maxCounts[w.rng.IntN(2)]
	es, _, st, err := w.c.readdirplus(w.dirFH, maxCount)
	if err == nil {
		err = expect(procReaddirplus, st, nfsOK)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", w.dir, err)
	}
	if err := checkListing(w.dir, es, w.ownExpected()); err != nil {
		return err
	}
	for _, e := range es {
		if f := w.files[e.Name]; f != nil && e.FileID != f.fileid {
			return mismatch("listing fileid", "%s/%s: %d, want %d", w.dir, e.Name, e.FileID, f.fileid)
		}
	}
	return nil
}

func (w *worker) removeOwn() error {
	if len(w.files) <= 3 {
		return nil
	}
	name, f := w.pickFile()
	what := w.dir + "/" + name
	if st, err := w.c.remove(w.dirFH, name); err != nil || st != nfsOK {
		if err == nil {
			err = &statusError{procRemove, st}
		}
		return fmt.Errorf("%s: %w", what, err)
	}
	delete(w.files, name)
	if _, _, err := w.lookupStatus(w.dirFH, name, nfsNoEnt, what+" after REMOVE"); err != nil {
		return err
	}
	_, err := w.getattrStatus(f.fh, nfsStale, what+" after REMOVE")
	return err
}

// resync rebuilds the model of the own directory from what the server shows, after an
// error left it unknown; leftover directories of mkdirRmdir are removed.
func (w *worker) resync() error {
	es, _, st, err := w.c.readdirplus(w.dirFH, 1<<20)
	if err == nil {
		err = expect(procReaddirplus, st, nfsOK)
	}
	if err != nil {
		return err
	}
	files, links := map[string]*ownFile{}, map[string]*ownLink{}
	for _, e := range es {
		if e.Name == "." || e.Name == ".." {
			continue
		}
		fh, a, st, err := w.c.lookup(w.dirFH, e.Name)
		if err == nil {
			err = expect(procLookup, st, nfsOK)
		}
		if err != nil {
			return fmt.Errorf("%s/%s: %w", w.dir, e.Name, err)
		}
		switch a.Type {
		case typeReg:
			data, err := w.readAll(fh, 1<<20)
			if err != nil {
				return fmt.Errorf("%s/%s: %w", w.dir, e.Name, err)
			}
			files[e.Name] = &ownFile{fh: fh, fileid: a.FileID, data: data, mode: a.Mode & 0o7777}
		case typeLnk:
			t, st, err := w.c.readlink(fh)
			if err == nil {
				err = expect(procReadlink, st, nfsOK)
			}
			if err != nil {
				return fmt.Errorf("%s/%s: %w", w.dir, e.Name, err)
			}
			links[e.Name] = &ownLink{fh: fh, target: t}
		case typeDir:
			sub, _, _, err := w.c.readdirplus(fh, 1<<20)
			if err != nil {
				return err
			}
			for _, s := range sub {
				if s.Name != "." && s.Name != ".." {
					w.c.remove(fh, s.Name)
				}
			}
			if st, err := w.c.rmdir(w.dirFH, e.Name); err != nil || st != nfsOK {
				return fmt.Errorf("removing %s/%s: %v %s", w.dir, e.Name, err, statusName(st))
			}
		}
	}
	w.files, w.links = files, links
	return nil
}

// counts of the run, summed over the workers.
type totals struct {
	ops                     [numOps]int
	bytesRead, bytesWritten int64
	copyUps                 int
}

func (t *totals) add(w *worker) {
	for i, n := range w.ops {
		t.ops[i] += n
	}
	t.bytesRead += w.bytesRead
	t.bytesWritten += w.bytesWritten
	t.copyUps += w.copyUps
}
