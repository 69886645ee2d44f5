package v1alpha1

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"unicode/utf8"
)

// Marshal encodes v as canonical JSON: struct fields in declaration order,
// map keys sorted, embedded raw JSON re-encoded the same way, no HTML
// escaping, no trailing newline. Equal values give equal bytes.
func Marshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// CanonicalRaw re-encodes arbitrary JSON canonically (sorted object keys,
// numbers kept exactly as written).
func CanonicalRaw(raw []byte) (json.RawMessage, error) {
	if len(bytes.TrimSpace(raw)) == 0 {
		return nil, nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	return Marshal(v)
}

// checkInput refuses input that is too large, not UTF-8 or nested too deep,
// before any decoding happens.
func checkInput(data []byte, limit int) error {
	if len(data) > limit {
		return fmt.Errorf("value of %d bytes is larger than the limit of %d", len(data), limit)
	}
	if !utf8.Valid(data) {
		return fmt.Errorf("value is not valid UTF-8")
	}
	depth, inString, escaped := 0, false, false
	for _, c := range data {
		switch {
		case escaped:
			escaped = false
		case inString && c == '\\':
			escaped = true
		case c == '"':
			inString = !inString
		case inString:
		case c == '{' || c == '[':
			depth++
			if depth > MaxNestingDepth {
				return fmt.Errorf("value is nested deeper than %d levels", MaxNestingDepth)
			}
		case c == '}' || c == ']':
			depth--
		}
	}
	return nil
}

func decodeStrict(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	return onlyValue(dec)
}

// onlyValue refuses anything but white space after the decoded value: two
// parsers must never read one input differently.
func onlyValue(dec *json.Decoder) error {
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("data after the JSON value")
	}
	return nil
}

// decodeStored checks limits, decodes strictly and checks the format version.
func decodeStored(data []byte, limit int, v any, version func() int) error {
	if err := checkInput(data, limit); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if err := onlyValue(dec); err != nil {
		return err
	}
	if got := version(); got != FormatVersion {
		return &FormatVersionError{Got: got}
	}
	return nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
