// Package report writes benchmark figures into docs/benchmarks.md, one
// marked section per benchmark, so each benchmark can refresh its own
// section without touching the others'.
package report

import (
	"fmt"
	"os"
	"strings"
)

// UpdateSection replaces (or appends) the section named name in the
// markdown file at path with body.
func UpdateSection(path, name, body string) error {
	begin := fmt.Sprintf("<!-- bench:%s begin -->", name)
	end := fmt.Sprintf("<!-- bench:%s end -->", name)
	old, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	doc := string(old)
	if doc == "" {
		doc = "# Benchmarks\n\nFigures written by the programs under bench/; each section says how to reproduce it.\nThese machines are shared and noisy: compare the ratios measured in one run, not absolute figures across runs.\n"
	}
	section := begin + "\n" + strings.TrimSpace(body) + "\n" + end
	i, j := strings.Index(doc, begin), strings.Index(doc, end)
	if i >= 0 && j > i {
		doc = doc[:i] + section + doc[j+len(end):]
	} else {
		doc = strings.TrimRight(doc, "\n") + "\n\n" + section + "\n"
	}
	return os.WriteFile(path, []byte(doc), 0o644)
}
