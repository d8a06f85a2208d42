package main

import (
	"fmt"
	"html"
	"math"
	"strings"
)

// series is one line of a plot; NaN marks a missing point (a failed job).
type series struct {
	name string
	ys   []float64
}

// plotSVG draws a small line chart by hand (no plotting dependency for a benchmark):
// x on a log scale when logX (the series are 1, 4, 16 clients or 10k..1M files), y
// linear from 0, a marker and its value at every point.
func plotSVG(title, xlabel, ylabel string, xs []float64, ss []series, logX bool) string {
	const W, H, left, right, top, bottom = 640, 400, 80, 24, 40, 90
	pw, ph := float64(W-left-right), float64(H-top-bottom)
	tx := func(x float64) float64 {
		if len(xs) == 1 {
			return left + pw/2
		}
		lo, hi := xs[0], xs[len(xs)-1]
		if logX {
			x, lo, hi = math.Log(x), math.Log(lo), math.Log(hi)
		}
		return left + 20 + (pw-40)*(x-lo)/(hi-lo)
	}
	ymax := 0.0
	for _, s := range ss {
		for _, y := range s.ys {
			if !math.IsNaN(y) {
				ymax = math.Max(ymax, y)
			}
		}
	}
	step := niceStep(ymax / 5)
	if step == 0 {
		step = 1
	}
	top0 := math.Ceil(ymax*1.08/step) * step
	ty := func(y float64) float64 { return float64(top) + ph*(1-y/top0) }
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", W, H, W, H)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="white"/>`+"\n", W, H)
	fmt.Fprintf(&b, `<text x="%d" y="22" text-anchor="middle" font-size="14">%s</text>`+"\n", W/2, html.EscapeString(title))
	for y := 0.0; y <= top0+step/2; y += step {
		fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#ddd"/><text x="%d" y="%.1f" text-anchor="end">%s</text>`+"\n",
			left, W-right, ty(y), ty(y), left-6, ty(y)+4, trimNum(y))
	}
	for _, x := range xs {
		fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%d" y2="%d" stroke="#eee"/><text x="%.1f" y="%d" text-anchor="middle">%s</text>`+"\n",
			tx(x), tx(x), top, H-bottom, tx(x), H-bottom+16, trimNum(x))
	}
	fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%.0f" height="%.0f" fill="none" stroke="#444"/>`+"\n", left, top, pw, ph)
	fmt.Fprintf(&b, `<text x="%.0f" y="%d" text-anchor="middle">%s</text>`+"\n", left+pw/2, H-bottom+34, html.EscapeString(xlabel+map[bool]string{true: " (log scale)", false: ""}[logX]))
	fmt.Fprintf(&b, `<text transform="translate(18,%.0f) rotate(-90)" text-anchor="middle">%s</text>`+"\n", float64(top)+ph/2, html.EscapeString(ylabel))
	colors := []string{"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728"}
	for i, s := range ss {
		col := colors[i%len(colors)]
		var pts []string
		for k, y := range s.ys {
			if k >= len(xs) || math.IsNaN(y) {
				continue
			}
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", tx(xs[k]), ty(y)))
			dy := -8.0 // labels of the first series above the points, of the others below
			if i > 0 {
				dy = 18
			}
			fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="4" fill="%s"/><text x="%.1f" y="%.1f" fill="%s" text-anchor="middle">%s</text>`+"\n",
				tx(xs[k]), ty(y), col, tx(xs[k]), ty(y)+dy, col, trimNum(y))
		}
		if len(pts) > 1 {
			fmt.Fprintf(&b, `<polyline points="%s" fill="none" stroke="%s" stroke-width="2"/>`+"\n", strings.Join(pts, " "), col)
		}
		ly := H - bottom + 52 + 16*i
		fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%d" y2="%d" stroke="%s" stroke-width="2"/><text x="%d" y="%d">%s</text>`+"\n",
			left, left+24, ly-4, ly-4, col, left+30, ly, html.EscapeString(s.name))
	}
	b.WriteString("</svg>\n")
	return b.String()
}

func niceStep(x float64) float64 {
	if x <= 0 || math.IsNaN(x) {
		return 0
	}
	p := math.Pow(10, math.Floor(math.Log10(x)))
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		if m*p >= x {
			return m * p
		}
	}
	return 10 * p
}

func trimNum(v float64) string {
	switch {
	case v >= 1e6 && math.Mod(v, 1e6) == 0:
		return fmt.Sprintf("%.0fM", v/1e6)
	case v >= 1e4 && math.Mod(v, 1e3) == 0:
		return fmt.Sprintf("%.0fk", v/1e3)
	case v >= 100 || v == math.Trunc(v):
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}
