//go:build !linux

package benchkit

import "time"

// preciseSleepInit does nothing where nanosleep and timer slack are not at hand.
func preciseSleepInit() {}

// preciseSleep falls back to the runtime's timers.
func preciseSleep(d time.Duration) { time.Sleep(d) }
