package schema

import (
	"regexp"
	"strings"
)

// Lines finds the line of a path in block-style YAML text: good enough to
// point at a key, and 0 (no line) where the text uses flow style
// ({a: 1}, [a, b]) or the path is not found.
type Lines struct{ lines []string }

// NewLines indexes YAML text.
func NewLines(text []byte) Lines {
	return Lines{lines: strings.Split(string(text), "\n")}
}

var keyLineRe = regexp.MustCompile(`^(\s*)(- +)?("?)([^"#:\s][^"#:]*?)("?)\s*:(\s|$)`)

// Find returns the 1-based line of the key or list item at path, or 0.
func (l Lines) Find(path []any) int {
	from, to, indent := 0, len(l.lines), -1 // the lines of the current value
	found := 0
	for _, p := range path {
		switch p := p.(type) {
		case string:
			line, ind := -1, 0
			for i := from; i < to; i++ {
				m := keyLineRe.FindStringSubmatch(l.lines[i])
				if m == nil {
					continue
				}
				ind = len(m[1]) + len(m[2])
				if ind > indent && m[4] == p {
					line = i
					break
				}
			}
			if line < 0 {
				return found
			}
			found = line + 1
			from, indent = line+1, ind
			to = l.blockEnd(from, ind)
			// A list item's first key shares the item's line: its
			// other keys follow, indented as it is.
		case int:
			n, line := -1, -1
			for i := from; i < to; i++ {
				t := strings.TrimLeft(l.lines[i], " ")
				ind := len(l.lines[i]) - len(t)
				if (strings.HasPrefix(t, "- ") || t == "-") && ind >= indent {
					n++
					if n == p {
						line, indent = i, ind
						break
					}
				}
			}
			if line < 0 {
				return found
			}
			found = line + 1
			from, to = line, l.blockEnd(line+1, indent)
		}
	}
	return found
}

// Scalar returns the text written as the value of the key at path on its
// line (without comment), when it is a plain, unquoted scalar.
func (l Lines) Scalar(path []any) (string, bool) {
	if len(path) == 0 {
		return "", false
	}
	if _, ok := path[len(path)-1].(string); !ok {
		return "", false
	}
	n := l.Find(path)
	if n == 0 {
		return "", false
	}
	m := keyLineRe.FindStringSubmatchIndex(l.lines[n-1])
	if m == nil {
		return "", false
	}
	rest := strings.TrimSpace(l.lines[n-1][m[1]:])
	if i := strings.Index(rest, " #"); i >= 0 {
		rest = strings.TrimSpace(rest[:i])
	}
	if rest == "" || strings.ContainsAny(rest[:1], "{[|>&*!\"'") {
		return "", false
	}
	return rest, true
}

// blockEnd is the first line from from that is indented no more than
// indent (blank lines and comments do not end a block; at the same
// indentation, list items continue it).
func (l Lines) blockEnd(from, indent int) int {
	for i := from; i < len(l.lines); i++ {
		t := strings.TrimSpace(l.lines[i])
		if t == "" || strings.HasPrefix(t, "#") {
			continue
		}
		ind := len(l.lines[i]) - len(strings.TrimLeft(l.lines[i], " "))
		if ind < indent || ind == indent && !strings.HasPrefix(t, "- ") {
			return i
		}
	}
	return len(l.lines)
}
