package nfs3

import (
	"os"
	"slices"
	"syscall"
	"testing"
	"time"
)

// The cookie of a name is the same in every run and every release: clients keep cookies
// across server restarts and go on from them. 63 bits, above "." and "..".
func TestCookieOf(t *testing.T) {
	if c := cookieOf("a"); c != 0x654bc089650ddee5 {
		t.Errorf(`cookieOf("a") = %#x: cookies changed, clients going on from old ones would skip or repeat names`, c)
	}
	for _, n := range []string{"", ".", "a", "._a", ".DS_Store", string(make([]byte, 255))} {
		if c := cookieOf(n); c < firstEntryCookie || c >= 1<<63 {
			t.Errorf("cookieOf(%q) = %#x: not in [3, 2^63)", n, c)
		}
	}
}

type fakeInfo struct {
	name string
	st   syscall.Stat_t
}

func (f *fakeInfo) Name() string       { return f.name }
func (f *fakeInfo) Size() int64        { return 0 }
func (f *fakeInfo) Mode() os.FileMode  { return 0o644 }
func (f *fakeInfo) ModTime() time.Time { return time.Time{} }
func (f *fakeInfo) IsDir() bool        { return false }
func (f *fakeInfo) Sys() any           { return &f.st }

// Entries that share a cookie go out in one page: a page that ended between them would
// make the client go on after their cookie and miss the rest.
func TestReaddirPageKeepsCollidingCookiesTogether(t *testing.T) {
	var entries []os.FileInfo
	for i, n := range []string{"a", "b", "c", "d", "e", "f"} {
		entries = append(entries, &fakeInfo{name: n, st: syscall.Stat_t{Ino: uint64(100 + i)}})
	}
	order := &cookieOrder{cookies: []uint64{10, 20, 20, 20, 30, 40}, index: []int32{0, 1, 2, 3, 4, 5}}
	const entrySize = 4 + 8 + 4 + 4 + 8 // a READDIR entry of a one-byte name
	page := func(cookie uint64, room int) ([]string, []uint64, bool, error) {
		pg := readdirPage{entries: entries, order: order,
			maxcount: readdirHeadSize + readdirTailSize + room*entrySize}
		err := pg.fill(cookie)
		var names []string
		var cookies []uint64
		for r := pg.body.Buf; len(r) > 0; {
			n := int(r[15])
			names = append(names, string(r[16:16+n]))
			c := uint64(0)
			for _, b := range r[20:28] {
				c = c<<8 | uint64(b)
			}
			cookies = append(cookies, c)
			r = r[entrySize:]
		}
		if len(names) != pg.count {
			t.Fatalf("decoded %d entries, page says %d", len(names), pg.count)
		}
		return names, cookies, pg.eof, err
	}
	var all []string
	cookie := uint64(2) // after ".."
	var pages [][]string
	for {
		names, cookies, eof, err := page(cookie, 3)
		if err != nil {
			t.Fatalf("page after %d: %v", cookie, err)
		}
		all = append(all, names...)
		pages = append(pages, names)
		if eof || len(pages) > 6 {
			break
		}
		cookie = cookies[len(cookies)-1]
	}
	if want := []string{"a", "b", "c", "d", "e", "f"}; !slices.Equal(all, want) {
		t.Errorf("pages %v: listed %v, want %v", pages, all, want)
	}
	if len(pages) != 3 || !slices.Equal(pages[0], []string{"a"}) {
		t.Errorf("pages %v, want [a] [b c d] [e f]", pages)
	}
	// Room for two: the three that share cookie 20 do not fit in any page.
	if _, _, _, err := page(10, 2); err != errTooSmall {
		t.Errorf("a group larger than the page: %v, want TOOSMALL", err)
	}
	// Going on after a cookie no entry has (its entry removed since) starts at the next.
	if names, _, _, _ := page(25, 3); !slices.Equal(names, []string{"e", "f"}) {
		t.Errorf("after cookie 25: %v, want [e f]", names)
	}
}
