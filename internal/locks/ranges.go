package locks

import "math"

// Range is a byte range, both ends included. End = ToEOF is "to the end of the file,
// however far it grows" (the protocol's length 0).
type Range struct {
	Start, End uint64
}

// ToEOF is the End of a range that runs to the end of the file.
const ToEOF = math.MaxUint64

// Span is the range of an offset and a length as NLM gives them: length 0 runs to the end
// of the file, and so does a range whose end would pass the largest offset.
func Span(offset, length uint64) Range {
	if length == 0 || length-1 > ToEOF-offset {
		return Range{offset, ToEOF}
	}
	return Range{offset, offset + length - 1}
}

// Length is the protocol's length of r: 0 when it runs to the end of the file.
func (r Range) Length() uint64 {
	if r.End == ToEOF {
		return 0
	}
	return r.End - r.Start + 1
}

// Overlaps reports whether r and o share a byte.
func (r Range) Overlaps(o Range) bool { return r.Start <= o.End && o.Start <= r.End }

// touches reports whether r and o overlap or are adjacent (one begins just after the
// other ends): same-mode ranges of one owner that touch become one.
func (r Range) touches(o Range) bool {
	return r.Overlaps(o) || (r.End != ToEOF && r.End+1 == o.Start) || (o.End != ToEOF && o.End+1 == r.Start)
}

// without returns what is left of r once cut is taken out of it: nothing, one piece or two.
func (r Range) without(cut Range) []Range {
	if !r.Overlaps(cut) {
		return []Range{r}
	}
	var out []Range
	if r.Start < cut.Start {
		out = append(out, Range{r.Start, cut.Start - 1})
	}
	if r.End > cut.End {
		out = append(out, Range{cut.End + 1, r.End})
	}
	return out
}

// conflicts reports whether a lock of owner o in mode exclusive over r conflicts with l.
func conflicts(l Lock, o Owner, exclusive bool, r Range) bool {
	return l.Owner != o && l.Range.Overlaps(r) && (l.Exclusive || exclusive)
}

// conflict returns the first of held that conflicts with the request.
func conflict(held []Lock, o Owner, exclusive bool, r Range) (Lock, bool) {
	for _, l := range held {
		if conflicts(l, o, exclusive, r) {
			return l, true
		}
	}
	return Lock{}, false
}

// applyLock returns held with owner o's lock over r in the given mode put in: the
// owner's ranges of the same mode that touch r merge with it, the parts of its ranges of
// the other mode under r are cut away. Other owners' locks are not looked at.
func applyLock(held []Lock, o Owner, exclusive bool, r Range) []Lock {
	out := make([]Lock, 0, len(held)+2)
	for _, l := range held {
		switch {
		case l.Owner != o || !l.Range.touches(r):
			out = append(out, l)
		case l.Exclusive == exclusive:
			r = Range{min(r.Start, l.Range.Start), max(r.End, l.Range.End)}
		default:
			for _, piece := range l.Range.without(r) {
				out = append(out, Lock{Owner: o, Exclusive: l.Exclusive, Range: piece})
			}
		}
	}
	return append(out, Lock{Owner: o, Exclusive: exclusive, Range: r})
}

// applyUnlock returns held without owner o's locks over r.
func applyUnlock(held []Lock, o Owner, r Range) []Lock {
	out := make([]Lock, 0, len(held)+1)
	for _, l := range held {
		if l.Owner != o || !l.Range.Overlaps(r) {
			out = append(out, l)
			continue
		}
		for _, piece := range l.Range.without(r) {
			out = append(out, Lock{Owner: o, Exclusive: l.Exclusive, Range: piece})
		}
	}
	return out
}

// countHost counts the locks of one host in held.
func countHost(held []Lock, host string) int {
	n := 0
	for _, l := range held {
		if l.Owner.Host == host {
			n++
		}
	}
	return n
}
