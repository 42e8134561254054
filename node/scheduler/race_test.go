//go:build race

package scheduler

// raceEnabled trims the property tests' iterations under the race detector,
// which slows them tenfold; the full count runs without it.
const raceEnabled = true
