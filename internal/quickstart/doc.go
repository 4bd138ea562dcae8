// Package quickstart holds the test that runs the README's quick-start commands verbatim against
// `make run`, so the first thing a new user types keeps working.
package quickstart
