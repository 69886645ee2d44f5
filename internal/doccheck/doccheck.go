// Package doccheck reads the examples out of markdown files so that tests
// can run them through the code that reads them in the product: the fenced
// code blocks (with their language and line), which of them are YAML read
// by the server, the agent or `harmony apply`, and the `harmony ...` command
// lines of shell blocks.
package doccheck

import (
	"bufio"
	"bytes"
	"os"
	"reflect"
	"regexp"
	"strconv"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/harmony-fleet/harmony/internal/config"
)

// Block is one fenced code block of a markdown file.
type Block struct {
	File string // as given to Blocks or Parse
	// Lang is the first word of the info string ("yaml", "sh"; "" when
	// there is none).
	Lang string
	// Line is the 1-based line of the block's first line of text (the one
	// after the opening fence).
	Line int
	// Text is the block's content, one "\n" after each line, with the
	// indentation of the opening fence removed (blocks in list items).
	Text string
	// Marker is the kind an HTML comment just above the fence names
	// (`<!-- doccheck: agent -->`), "" when there is none.
	Marker Kind
}

// Location is file:line of the block's line n (0: its first line).
func (b Block) Location(n int) string {
	return b.File + ":" + strconv.Itoa(b.Line+n)
}

// Blocks reads the markdown file at path and returns its fenced blocks.
func Blocks(path string) ([]Block, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(path, data), nil
}

var (
	fenceRe  = regexp.MustCompile("^( {0,3}|\\s*)(```+|~~~+)\\s*([^`\\s]*)")
	markerRe = regexp.MustCompile(`^\s*<!--\s*doccheck:\s*([a-z-]+)\s*-->\s*$`)
)

// Parse returns the fenced blocks of markdown data (CommonMark's backtick
// and tilde fences, also indented in list items). An unclosed block runs to
// the end of the file. Of indented (four-space) code blocks, only the
// harmony command lines are returned, each as a one-command "sh" block
// (see indentedCommands).
func Parse(file string, data []byte) []Block {
	return append(fenced(file, data), indentedCommands(file, data)...)
}

// indentedCommands returns the harmony command lines of indented code
// blocks (a line indented by four spaces or a tab after a blank line or
// another such line, outside fenced blocks), with their backslash
// continuations, as "sh" blocks.
func indentedCommands(file string, data []byte) []Block {
	var out []Block
	lines := strings.Split(string(data), "\n")
	inFence, prevBlankOrCode := "", true
	for i := 0; i < len(lines); i++ {
		line := lines[i]
		if m := fenceRe.FindStringSubmatch(line); m != nil && (inFence == "" || strings.HasPrefix(strings.TrimSpace(line), inFence)) {
			if inFence == "" {
				inFence = m[2]
			} else {
				inFence = ""
			}
			prevBlankOrCode = false
			continue
		}
		if inFence != "" {
			continue
		}
		code := strings.HasPrefix(line, "    ") || strings.HasPrefix(line, "\t")
		if code && prevBlankOrCode {
			words := trimPrefixWords(Split(line))
			if len(words) > 0 && isHarmony(words[0]) {
				text := strings.TrimSpace(line) + "\n"
				start := i
				for strings.HasSuffix(strings.TrimRight(lines[i], " \t"), "\\") && i+1 < len(lines) {
					i++
					text += strings.TrimSpace(lines[i]) + "\n"
				}
				out = append(out, Block{File: file, Lang: "sh", Line: start + 1, Text: text})
			}
		}
		prevBlankOrCode = code || strings.TrimSpace(line) == ""
	}
	return out
}

// isHarmony: the word runs the harmony binary (as installed, or as built
// by make in bin/).
func isHarmony(w string) bool {
	return w == "harmony" || w == "bin/harmony" || w == "./bin/harmony"
}

// fenced returns the fenced code blocks of markdown data.
func fenced(file string, data []byte) []Block {
	var (
		out       []Block
		cur       *Block
		fence     string
		indent    int
		body      strings.Builder
		lastText  string // the last non-blank line outside blocks
		lineNo    int
		sc        = bufio.NewScanner(bytes.NewReader(data))
		maxLine   = len(data) + 1
		startLine int
	)
	sc.Buffer(make([]byte, 0, 64<<10), maxLine)
	for sc.Scan() {
		lineNo++
		line := sc.Text()
		if cur == nil {
			m := fenceRe.FindStringSubmatch(line)
			if m == nil {
				if strings.TrimSpace(line) != "" {
					lastText = line
				}
				continue
			}
			cur = &Block{File: file, Lang: strings.ToLower(m[3])}
			if mm := markerRe.FindStringSubmatch(lastText); mm != nil {
				cur.Marker = Kind(mm[1])
			}
			fence, indent = m[2], len(m[1])
			startLine = lineNo + 1
			body.Reset()
			continue
		}
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, fence[:1]) && strings.Trim(trimmed, fence[:1]) == "" && len(trimmed) >= len(fence) {
			cur.Line, cur.Text = startLine, body.String()
			out = append(out, *cur)
			cur, lastText = nil, ""
			continue
		}
		body.WriteString(dedent(line, indent))
		body.WriteByte('\n')
	}
	if cur != nil {
		cur.Line, cur.Text = startLine, body.String()
		out = append(out, *cur)
	}
	return out
}

// dedent removes up to n leading spaces.
func dedent(line string, n int) string {
	for i := 0; i < n && strings.HasPrefix(line, " "); i++ {
		line = line[1:]
	}
	return line
}

// Kind says what reads a YAML block.
type Kind string

// The kinds of YAML blocks. A marker comment may name any of them; Classify
// finds the first four from the content.
const (
	ServerConfig Kind = "server"     // harmony server --config
	AgentConfig  Kind = "agent"      // harmony agent --config, failover section included
	Deployment   Kind = "deployment" // harmony apply -f
	Other        Kind = "other"      // read by something else (OpenAPI, a NATS or HAProxy file)
	// Ambiguous is a block of settings both configs know (nats_url,
	// log_level): it needs a marker to say which file it belongs in.
	Ambiguous Kind = "ambiguous"
	// ServerFragment and AgentFragment are marker-only kinds: settings
	// to add to a file shown before, read by the loader (known keys,
	// values of the right kind) but not validated on their own.
	ServerFragment Kind = "server-fragment"
	AgentFragment  Kind = "agent-fragment"
	// Skip is a marker-only kind: a block deliberately not checked
	// (a counter-example).
	Skip Kind = "skip"
)

// IsYAML reports whether the block's language is YAML.
func (b Block) IsYAML() bool { return b.Lang == "yaml" || b.Lang == "yml" }

// IsShell reports whether the block's language is a shell's.
func (b Block) IsShell() bool {
	switch b.Lang {
	case "sh", "shell", "bash", "console", "shell-session":
		return true
	}
	return false
}

// Classify says what reads a YAML block: its marker when it has one, else
//
//   - Deployment when a document has apiVersion and kind: Deployment;
//   - Other when a document has apiVersion or kind of something else, an
//     openapi key, when the YAML is not a mapping, or when no top-level
//     key is a setting of either config;
//   - ServerConfig or AgentConfig when the top-level keys include settings
//     only that config has, and more of them than of the other's;
//   - Ambiguous when they are all settings of both (or the counts tie).
//
// Keys neither config knows do not decide the kind: they are what a test
// should then report, as the loader would.
func Classify(b Block) Kind {
	if b.Marker != "" {
		return b.Marker
	}
	server, agent := serverKeys(), agentKeys()
	var onlyServer, onlyAgent, shared int
	for _, doc := range Documents(b.Text) {
		var m map[string]any
		if err := yaml.Unmarshal([]byte(doc.Text), &m); err != nil || m == nil {
			if len(bytes.TrimSpace(stripComments(doc.Text))) == 0 {
				continue // an empty document
			}
			if err != nil {
				// Not a mapping of settings; a broken config would
				// still show its keys, so look at them by hand.
				m = topLevelKeys(doc.Text)
				if len(m) == 0 {
					return Other
				}
			}
		}
		if _, ok := m["apiVersion"]; ok {
			if m["kind"] == "Deployment" {
				return Deployment
			}
			return Other
		}
		if m["kind"] == "Deployment" {
			return Deployment
		}
		if _, ok := m["openapi"]; ok {
			return Other
		}
		for k := range m {
			inS, inA := server[k], agent[k]
			switch {
			case inS && inA:
				shared++
			case inS:
				onlyServer++
			case inA:
				onlyAgent++
			}
		}
	}
	switch {
	case onlyServer == 0 && onlyAgent == 0 && shared == 0:
		return Other
	case onlyServer > onlyAgent:
		return ServerConfig
	case onlyAgent > onlyServer:
		return AgentConfig
	default:
		return Ambiguous
	}
}

// Document is one "---"-separated document of a YAML block.
type Document struct {
	Text string
	Line int // 0-based line of its first line within the block
}

// Documents splits YAML text at "---" lines.
func Documents(text string) []Document {
	var docs []Document
	var cur strings.Builder
	start := 0
	for i, line := range strings.Split(strings.TrimSuffix(text, "\n"), "\n") {
		if strings.TrimRight(line, " \t") == "---" {
			docs = append(docs, Document{Text: cur.String(), Line: start})
			cur.Reset()
			start = i + 1
			continue
		}
		cur.WriteString(line)
		cur.WriteByte('\n')
	}
	return append(docs, Document{Text: cur.String(), Line: start})
}

var keyRe = regexp.MustCompile(`^([A-Za-z_][A-Za-z0-9_]*)\s*:`)

// topLevelKeys finds the unindented keys of YAML that does not parse.
func topLevelKeys(text string) map[string]any {
	m := map[string]any{}
	for _, line := range strings.Split(text, "\n") {
		if k := keyRe.FindStringSubmatch(line); k != nil {
			m[k[1]] = nil
		}
	}
	return m
}

func stripComments(text string) []byte {
	var out bytes.Buffer
	for _, line := range strings.Split(text, "\n") {
		if t := strings.TrimSpace(line); t != "" && !strings.HasPrefix(t, "#") {
			out.WriteString(line)
		}
	}
	return out.Bytes()
}

func serverKeys() map[string]bool { return jsonKeys(reflect.TypeFor[config.Server]()) }
func agentKeys() map[string]bool  { return jsonKeys(reflect.TypeFor[config.Agent]()) }

// jsonKeys returns the top-level keys of a config struct.
func jsonKeys(t reflect.Type) map[string]bool {
	keys := map[string]bool{}
	for f := range t.Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name != "" && name != "-" {
			keys[name] = true
		}
	}
	return keys
}
