package auth

import "strings"

// glob matches strings against a pattern in which * stands for any run of characters (slashes
// and dots included); every other character matches itself.
type glob struct {
	pattern string
	parts   []string // the literal runs between stars
	any     bool     // the pattern is a lone *
}

func compileGlob(pattern string) glob {
	g := glob{pattern: pattern, parts: strings.Split(pattern, "*")}
	g.any = pattern == "*"
	return g
}

// match reports whether s matches; it does not allocate.
func (g *glob) match(s string) bool {
	if g.any {
		return true
	}
	if len(g.parts) == 1 {
		return s == g.pattern
	}
	first, last := g.parts[0], g.parts[len(g.parts)-1]
	if len(s) < len(first)+len(last) || !strings.HasPrefix(s, first) || !strings.HasSuffix(s, last) {
		return false
	}
	rest := s[len(first) : len(s)-len(last)]
	for _, part := range g.parts[1 : len(g.parts)-1] {
		i := strings.Index(rest, part)
		if i < 0 {
			return false
		}
		rest = rest[i+len(part):]
	}
	return true
}

func matchAny(globs []glob, s string) bool {
	for i := range globs {
		if globs[i].match(s) {
			return true
		}
	}
	return false
}
