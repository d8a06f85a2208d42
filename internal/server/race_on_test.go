//go:build race

package server_test

// raceDetector: the tests run under the race detector, which slows the tests' own Go
// clients far more than the kernel work of the server's spliced READs.
const raceDetector = true
