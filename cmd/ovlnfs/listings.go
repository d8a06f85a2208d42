package main

import (
	"context"
	"io/fs"
	"log/slog"
	"os"

	"github.com/ovlnfs/ovlnfs/billyunion"
	"github.com/ovlnfs/ovlnfs/readdircache"
)

// listingSource is what directory paging needs from the union: its listing snapshots by
// ID, checked against the directory asked for, and cache counters for the debug log.
type listingSource interface {
	ListingByID(path string, id uint64) ([]os.FileInfo, bool)
	ListingStats() readdircache.Stats
}

// dirListings implements go-nfs's CachingHandler with the union's listing snapshots.
//
// go-nfs turns READDIR cookies into indexes of the slice it gets, so the cookie verifier
// has to name one exact slice: it is the ID of the union snapshot the listing came from.
// A client paging with that verifier gets the same snapshot back for as long as the union
// keeps it, even after the directory changed, instead of BAD_COOKIE (which loops Linux's
// `ls` and fails macOS Finder). When the snapshot is gone, DataForVerifier answers nil:
// go-nfs lists again, gets a new verifier and answers BAD_COOKIE, the protocol's way of
// making the client start over; what it must never do is index an old cookie into a
// different listing, which skips or repeats names or ends the listing early.
type dirListings struct {
	src    listingSource
	logger *slog.Logger
}

func newDirListings(src listingSource, logger *slog.Logger) *dirListings {
	return &dirListings{src: src, logger: logger}
}

// VerifierFor names the snapshot contents came from. go-nfs has just read contents with
// ReadDir(path), so they are one snapshot of path.
func (l *dirListings) VerifierFor(path string, contents []fs.FileInfo) uint64 {
	id := billyunion.ListingID(contents)
	if l.logger.Enabled(context.Background(), slog.LevelDebug) {
		st := l.src.ListingStats()
		l.logger.Debug("directory listed", "path", path, "verifier", id, "entries", len(contents),
			"cached_listings", st.Cached, "hits", st.Hits, "misses", st.Misses, "stale_builds", st.Stale)
	}
	return id
}

// DataForVerifier returns snapshot verifier if it lists path, nil otherwise. The slice is
// the union's shared snapshot, not a copy: go-nfs v0.0.4 sorts in place only the slice
// ReadDir gives it (a fresh copy; see getDirListingWithVerifier in nfs_onreaddir.go) and
// only reads this one, and go-nfs asks for it on every page, where a copy of a 100,000-entry
// listing made paging 2.7 times slower. Recheck this if go-nfs is upgraded.
func (l *dirListings) DataForVerifier(path string, verifier uint64) []fs.FileInfo {
	entries, ok := l.src.ListingByID(path, verifier)
	if !ok {
		// Not logged: go-nfs lists the directory next and VerifierFor logs that.
		return nil
	}
	if l.logger.Enabled(context.Background(), slog.LevelDebug) {
		l.logger.Debug("directory page from snapshot", "path", path, "verifier", verifier,
			"entries", len(entries), "cached_listings", l.src.ListingStats().Cached)
	}
	return entries
}
