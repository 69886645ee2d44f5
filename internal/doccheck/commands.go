package doccheck

import (
	"strings"
)

// Command is one `harmony ...` command line of a shell block.
type Command struct {
	// Args are the words after "harmony", quotes removed, up to the end of
	// the command (a pipe, ";", "&&", "||", a redirection or a comment).
	Args []string
	Line int // 0-based line within the block where the command starts
	Text string
}

// Commands returns the harmony command lines of a shell block: lines that
// run harmony, after an optional "$ " prompt, "sudo" and VAR=value
// assignments, joined across backslash continuations. Commands inside
// $(...) or after a pipe are not found.
func Commands(b Block) []Command {
	var out []Command
	lines := strings.Split(strings.TrimSuffix(b.Text, "\n"), "\n")
	for i := 0; i < len(lines); i++ {
		start := i
		line := lines[i]
		for strings.HasSuffix(strings.TrimRight(line, " \t"), "\\") && i+1 < len(lines) {
			i++
			line = strings.TrimSuffix(strings.TrimRight(line, " \t"), "\\") + " " + strings.TrimSpace(lines[i])
		}
		words := Split(line)
		words = trimPrefixWords(words)
		if len(words) == 0 || !isHarmony(words[0]) {
			continue
		}
		out = append(out, Command{Args: words[1:], Line: start, Text: strings.TrimSpace(line)})
	}
	return out
}

// trimPrefixWords drops a prompt, sudo and environment assignments.
func trimPrefixWords(words []string) []string {
	for len(words) > 0 {
		w := words[0]
		switch {
		case w == "$" || w == "sudo" || w == "env":
			words = words[1:]
		case strings.Contains(w, "=") && !strings.HasPrefix(w, "-") && isName(w[:strings.Index(w, "=")]):
			words = words[1:]
		default:
			return words
		}
	}
	return words
}

func isName(s string) bool {
	if s == "" {
		return false
	}
	for i, r := range s {
		if !(r == '_' || r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || i > 0 && r >= '0' && r <= '9') {
			return false
		}
	}
	return true
}

// Split splits a shell command line into words, removing quotes, and stops
// at the end of the first command: an unquoted "|", ";", "&", a
// redirection ("<", ">", "2>") or a comment ("#" starting a word).
// Variables and substitutions stay as written ("$TOKEN").
func Split(line string) []string {
	var (
		words []string
		cur   strings.Builder
		inW   bool
		quote rune
	)
	flush := func() {
		if inW {
			words = append(words, cur.String())
			cur.Reset()
			inW = false
		}
	}
	rs := []rune(line)
	for i := 0; i < len(rs); i++ {
		r := rs[i]
		switch {
		case quote != 0:
			if r == quote {
				quote = 0
			} else if r == '\\' && quote == '"' && i+1 < len(rs) {
				i++
				cur.WriteRune(rs[i])
			} else {
				cur.WriteRune(r)
			}
		case r == '\'' || r == '"':
			quote, inW = r, true
		case r == '\\' && i+1 < len(rs):
			i++
			cur.WriteRune(rs[i])
			inW = true
		case r == ' ' || r == '\t':
			flush()
		case r == '|' || r == ';' || r == '&' || r == '<' || r == '>':
			if r == '>' && inW && cur.String() == "2" { // 2>
				cur.Reset()
				inW = false
			}
			flush()
			return words
		case r == '#' && !inW:
			flush()
			return words
		default:
			cur.WriteRune(r)
			inW = true
		}
	}
	flush()
	return words
}
