package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/harmony-fleet/harmony/internal/config/schema"
)

// Parse reads YAML data into v strictly, in the terms of the file: errors
// start with name and the line ("agent.yaml line 3: unknown field
// \"nats_urls\" (known: ...)", "agent.yaml line 2: nats_url: want a list of
// strings (or one comma-separated string), got a number (5)"), with no Go
// type names. A list setting may also be written as one comma-separated
// string, as in its environment variable and flag
// ("nats_url: nats://a:4222,nats://b:4222").
func Parse(name string, data []byte, v any) error {
	js, err := yaml.YAMLToJSON(data)
	if err != nil {
		line, reason := SyntaxError(err)
		return &FileError{File: name, Line: line, Reason: reason}
	}
	var tree any
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.UseNumber() // large whole numbers stay exact
	if err := dec.Decode(&tree); err != nil {
		return &FileError{File: name, Reason: err.Error()}
	}
	if tree == nil {
		return nil // an empty file
	}
	lines := schema.NewLines(data)
	tree, serr := schema.Check(tree, reflect.TypeOf(v).Elem(), schema.Options{
		CommaLists: true,
		Leaves:     map[reflect.Type]func(any) string{reflect.TypeFor[Duration](): checkDuration},
		Text:       schema.NewText(data).Scalar,
	})
	if serr != nil {
		return &FileError{File: name, Line: lines.Find(serr.At()), Path: schema.PathString(serr.Path), Reason: serr.Reason}
	}
	if js, err = json.Marshal(tree); err != nil {
		return &FileError{File: name, Reason: err.Error()}
	}
	dec = json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		// Check found nothing wrong: a value only a setting's own decoder
		// refuses. Say it without the decoder's wording.
		return &FileError{File: name, Reason: strings.TrimPrefix(err.Error(), "json: ")}
	}
	return nil
}

func checkDuration(v any) string {
	s, ok := v.(string)
	if !ok {
		return "want a duration such as 10s, got " + schema.Describe(v)
	}
	if _, err := time.ParseDuration(s); err != nil {
		return fmt.Sprintf("want a duration such as 10s, got %q", s)
	}
	return ""
}

// FileError is a config file that cannot be read: what is wrong, where.
type FileError struct {
	File   string
	Line   int    // 1-based, 0 when unknown
	Path   string // the setting, e.g. "failover.postgres"; "" for the file
	Reason string
}

func (e *FileError) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, " line %d", e.Line)
	}
	b.WriteString(": ")
	if e.Path != "" {
		b.WriteString(e.Path + ": ")
	}
	b.WriteString(e.Reason)
	return b.String()
}

var (
	lineRe       = regexp.MustCompile(`line (\d+)`)
	linePrefixRe = regexp.MustCompile(`^line \d+: `)
)

// SyntaxError returns the line of a YAML syntax error (0 when it names
// none) and what is wrong, without the library's wrapping.
func SyntaxError(err error) (line int, reason string) {
	s := err.Error()
	if m := lineRe.FindStringSubmatch(s); m != nil {
		line, _ = strconv.Atoi(m[1])
	}
	for _, p := range []string{"error converting YAML to JSON: ", "yaml: "} {
		s = strings.Replace(s, p, "", 1)
	}
	return line, "not valid YAML: " + linePrefixRe.ReplaceAllString(s, "")
}
