package config

import (
	"cmp"
	"fmt"
)

// Between checks that the setting at path lies in lo to hi (both included) and otherwise returns
// "<path>: must be between <lo> and <hi>, got <v>"; durations print as durations. Validate
// methods append its result to their error list (errors.Join drops the nils).
func Between[T cmp.Ordered](path string, v, lo, hi T) error {
	if v < lo || v > hi {
		return fmt.Errorf("%s: must be between %v and %v, got %v", path, lo, hi, v)
	}
	return nil
}
