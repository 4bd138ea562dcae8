package apierr

import (
	"fmt"
	"regexp"
)

// Number is any integer a request limit is counted in.
type Number interface {
	~int | ~int32 | ~int64
}

// TooLarge reports a request field whose size or count is over a limit, in the one wording every
// plugin uses: "<field>: must be at most <limit> <unit> (<limitKey>), got <got>". unit says what
// is counted ("bytes", "keys"; empty for a plain number); limitKey is the config path of the
// limit, or empty for a fixed limit that is not configurable.
func TooLarge[N Number](field string, got, limit N, limitKey, unit string) error {
	return &kindError{kind: ErrInvalidArgument, msg: field + ": must be at most " + amount(int64(limit), unit) + within(limitKey) + fmt.Sprintf(", got %d", got)}
}

// OutOfRange reports a request field outside lo to hi, worded like TooLarge:
// "<field>: must be between <lo> and <hi> <unit> (<limitKey>), got <got>".
func OutOfRange[N Number](field string, got, lo, hi N, limitKey, unit string) error {
	return &kindError{kind: ErrInvalidArgument, msg: field + fmt.Sprintf(": must be between %d and ", lo) + amount(int64(hi), unit) + within(limitKey) + fmt.Sprintf(", got %d", got)}
}

func amount(n int64, unit string) string {
	if unit == "" {
		return fmt.Sprintf("%d", n)
	}
	return fmt.Sprintf("%d %s", n, unit)
}

func within(limitKey string) string {
	if limitKey == "" {
		return ""
	}
	return " (" + limitKey + ")"
}

// NamespacePattern is the namespace rule of the KeyValue and Cache plugins: a lower-case letter,
// then up to 63 lower-case letters, digits, '_', '.' or '-'.
const NamespacePattern = `^[a-z][a-z0-9_.-]{0,63}$`

// Namespace checks a request's namespace against NamespacePattern, or against custom when it is
// not nil; limitKey names the config path of the rule, or is empty when it is fixed. Every plugin
// reports a bad namespace the same way: "namespace: required" or
// "namespace: must match <pattern> (<notes>), got <namespace>", the notes being the length the
// default rule allows and limitKey.
func Namespace(ns string, custom *regexp.Regexp, limitKey string) error {
	if ns == "" {
		return Invalid("namespace", "required")
	}
	var pattern, notes string
	if custom == nil {
		if defaultNamespace(ns) {
			return nil
		}
		pattern, notes = NamespacePattern, "1 to 64 characters"
	} else {
		if custom.MatchString(ns) {
			return nil
		}
		pattern = custom.String()
	}
	switch {
	case notes != "" && limitKey != "":
		notes = " (" + notes + ", " + limitKey + ")"
	case notes != "":
		notes = " (" + notes + ")"
	default:
		notes = within(limitKey)
	}
	return Invalid("namespace", "must match %s%s, got %s", pattern, notes, quote(ns))
}

// defaultNamespace matches NamespacePattern without a regexp: namespaces are checked on every
// request.
func defaultNamespace(ns string) bool {
	ok := len(ns) >= 1 && len(ns) <= 64 && ns[0] >= 'a' && ns[0] <= 'z'
	for i := 1; ok && i < len(ns); i++ {
		c := ns[i]
		ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-'
	}
	return ok
}

// quote shows a rejected client string in an error, shortened so an error never echoes a huge
// input.
func quote(s string) string {
	if len(s) > 80 {
		return fmt.Sprintf("%q... (%d bytes)", s[:80], len(s))
	}
	return fmt.Sprintf("%q", s)
}
