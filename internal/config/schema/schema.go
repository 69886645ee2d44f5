// Package schema checks a decoded YAML (or JSON) tree against the Go type
// it is about to be decoded into, and says what is wrong in the terms of
// the file: the path of the key as written ("failover.postgres.port",
// "spec.resources[0].spec"), what it takes and what it got, and the line
// where the key is. It knows no Go type names in its messages, so users
// never read "Go struct field Agent.nats_url of type []string".
//
// It is a leaf: the config loader and the api/v1alpha1 decoders use it.
package schema

import (
	"encoding"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strings"
)

// Error is a problem at a path of the tree.
type Error struct {
	// Path is the keys (strings) and list indexes (ints) to the value at
	// fault, or to the mapping that has an unknown Key.
	Path []any
	// Key is an unknown key of the mapping at Path ("" otherwise).
	Key string
	// Reason says what is wrong: `unknown field "x" (known: a, b)`,
	// "want a whole number, got a string (\"many\")".
	Reason string
	// Known are the keys the mapping at Path takes, when Key is unknown.
	Known []string
}

func (e *Error) Error() string {
	if p := PathString(e.Path); p != "" {
		return p + ": " + e.Reason
	}
	return e.Reason
}

// At is the path of the value at fault, the unknown key included.
func (e *Error) At() []any {
	if e.Key == "" {
		return e.Path
	}
	return append(slices.Clone(e.Path), e.Key)
}

// PathString writes a path as "a.b[2].c".
func PathString(path []any) string {
	var b strings.Builder
	for _, p := range path {
		switch p := p.(type) {
		case string:
			if b.Len() > 0 {
				b.WriteByte('.')
			}
			b.WriteString(p)
		case int:
			fmt.Fprintf(&b, "[%d]", p)
		}
	}
	return b.String()
}

// Options change what Check accepts.
type Options struct {
	// CommaLists accepts one string where a list of strings is wanted and
	// turns it into the list of its comma-separated parts.
	CommaLists bool
	// Leaves are types Check does not look into: each function checks a
	// value of its type and returns what is wrong ("" when nothing is).
	Leaves map[reflect.Type]func(v any) string
	// Text returns the text written for the scalar at path, when it is
	// known: a string setting written `off` or `8080`, which YAML reads as
	// a boolean or a number, then gets that text.
	Text func(path []any) (string, bool)
	// StrictStrings refuses a number or a boolean where a string is
	// wanted, when Text does not give what was written (JSON input, or a
	// spec kept raw): YAML reads a bare 0644, yes or off as a number or a
	// boolean, and turning it back into text would not give what the user
	// wrote (420, "true").
	StrictStrings bool
}

var (
	unmarshalType = reflect.TypeFor[json.Unmarshaler]()
	textType      = reflect.TypeFor[encoding.TextUnmarshaler]()
)

// Check walks tree (as encoding/json decodes into any, with UseNumber or
// without) against the type t it is about to be decoded into: unknown keys
// and values of the wrong kind are errors naming the path. It returns the
// tree to decode, with the conversions Options ask for; it changes the
// tree in place.
func Check(tree any, t reflect.Type, opts Options) (any, *Error) {
	w := walker{opts: opts}
	return w.check(tree, t, nil)
}

type walker struct{ opts Options }

func (w walker) check(v any, t reflect.Type, path []any) (any, *Error) {
	fail := func(format string, args ...any) (any, *Error) {
		return nil, &Error{Path: slices.Clone(path), Reason: fmt.Sprintf(format, args...)}
	}
	if v == nil {
		return nil, nil // null: the zero value, as the decoder does
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if leaf, ok := w.opts.Leaves[t]; ok {
		if reason := leaf(v); reason != "" {
			return fail("%s", reason)
		}
		return v, nil
	}
	if t.Kind() != reflect.Struct && (reflect.PointerTo(t).Implements(unmarshalType) || reflect.PointerTo(t).Implements(textType)) {
		return v, nil // its own decoder says what it accepts
	}
	switch t.Kind() {
	case reflect.Struct:
		m, ok := v.(map[string]any)
		if !ok {
			return fail("want a mapping of settings, got %s", Describe(v))
		}
		fields := jsonFields(t)
		for _, k := range sortedKeys(m) {
			ft, ok := fields[k]
			if !ok {
				known := sortedKeys(fields)
				return nil, &Error{Path: slices.Clone(path), Key: k, Known: known,
					Reason: fmt.Sprintf("unknown field %q (known: %s)", k, strings.Join(known, ", "))}
			}
			nv, err := w.check(m[k], ft, append(path, k))
			if err != nil {
				return nil, err
			}
			m[k] = nv
		}
		return m, nil
	case reflect.Map:
		m, ok := v.(map[string]any)
		if !ok {
			return fail("want a mapping of %s, got %s", noun(t.Elem()), Describe(v))
		}
		for _, k := range sortedKeys(m) {
			nv, err := w.check(m[k], t.Elem(), append(path, k))
			if err != nil {
				return nil, err
			}
			m[k] = nv
		}
		return m, nil
	case reflect.Slice, reflect.Array:
		if s, ok := v.(string); ok && w.opts.CommaLists && t.Elem().Kind() == reflect.String {
			list := []any{}
			for _, part := range strings.Split(s, ",") {
				if part = strings.TrimSpace(part); part != "" {
					list = append(list, part)
				}
			}
			return list, nil
		}
		list, ok := v.([]any)
		if !ok {
			if w.opts.CommaLists && t.Elem().Kind() == reflect.String {
				return fail("want a list of strings (or one comma-separated string), got %s", Describe(v))
			}
			if s, ok := v.(string); ok && t.Elem().Kind() == reflect.String {
				return fail("want a list of strings, got %s; write a list: [%q]", Describe(v), s)
			}
			return fail("want a list of %s, got %s", noun(t.Elem()), Describe(v))
		}
		for i := range list {
			nv, err := w.check(list[i], t.Elem(), append(path, i))
			if err != nil {
				return nil, err
			}
			list[i] = nv
		}
		return list, nil
	case reflect.String:
		switch v.(type) {
		case string:
		case json.Number, float64, bool:
			// YAML reads 8080 or off as a number or a boolean; a string
			// takes the text the user wrote.
			if w.opts.Text != nil {
				if raw, ok := w.opts.Text(path); ok {
					return raw, nil
				}
			}
			if w.opts.StrictStrings {
				return fail("want a string, got %s; in YAML, quote it: a bare number, yes, no, on or off is not text", Describe(v))
			}
			return fmt.Sprint(v), nil
		default:
			return fail("want a string, got %s", Describe(v))
		}
	case reflect.Bool:
		if _, ok := v.(bool); !ok {
			return fail("want true or false, got %s", Describe(v))
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		if !isWhole(v) {
			return fail("want a whole number, got %s", Describe(v))
		}
	case reflect.Float32, reflect.Float64:
		switch v.(type) {
		case json.Number, float64:
		default:
			return fail("want a number, got %s", Describe(v))
		}
	}
	return v, nil
}

func isWhole(v any) bool {
	switch n := v.(type) {
	case json.Number:
		_, err := n.Int64()
		return err == nil
	case float64:
		return n == float64(int64(n))
	}
	return false
}

// noun names what a type holds, in the terms of the file.
func noun(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Struct:
		return "mappings of settings"
	case reflect.String:
		return "strings"
	case reflect.Bool:
		return "true or false"
	case reflect.Slice, reflect.Array:
		return "lists"
	case reflect.Map:
		return "mappings"
	case reflect.Float32, reflect.Float64:
		return "numbers"
	default:
		return "whole numbers"
	}
}

// Describe says what a decoded value is, with the value when it is short.
func Describe(v any) string {
	switch v := v.(type) {
	case string:
		if len(v) > 40 {
			return "a string"
		}
		return fmt.Sprintf("a string (%q)", v)
	case json.Number:
		return "a number (" + string(v) + ")"
	case float64:
		return fmt.Sprintf("a number (%g)", v)
	case bool:
		return fmt.Sprintf("a boolean (%t)", v)
	case []any:
		return "a list"
	case map[string]any:
		return "a mapping"
	}
	return "nothing"
}

// jsonFields maps a struct's JSON keys to their field types.
func jsonFields(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for f := range t.Fields() {
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out[name] = f.Type
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
