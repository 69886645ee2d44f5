// Package config loads settings in three steps: defaults, then a YAML file,
// then HARMONY_* environment variables, then command-line flags (each step
// overrides the one before), and finally Validate, whose errors name the
// setting at fault.
package config

import (
	"encoding/json"
	"fmt"
	"os"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Duration is a time.Duration written as "10s", "1m30s" in files and flags.
type Duration time.Duration

// MarshalJSON writes the duration as text.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON reads "10s"-style text.
func (d *Duration) UnmarshalJSON(b []byte) error {
	// An *json.UnmarshalTypeError lets the decoder add the field's name.
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return &json.UnmarshalTypeError{Value: string(b), Type: reflect.TypeFor[Duration]()}
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return &json.UnmarshalTypeError{Value: fmt.Sprintf("%q (want a duration such as \"10s\")", s), Type: reflect.TypeFor[Duration]()}
	}
	*d = Duration(v)
	return nil
}

// Std returns the duration as a time.Duration.
func (d Duration) Std() time.Duration { return time.Duration(d) }

// Setting is one named setting: its key in the file (and, upper-cased with
// HARMONY_ in front, in the environment), its flag and how to set it from text.
type Setting struct {
	Key   string // file key, snake_case
	Flag  string // flag name, kebab-case
	Usage string
	Set   func(string) error
	Get   func() string
	// Bool settings may be given as a bare flag (--x means --x=true).
	Bool bool
	// Repeat settings take a repeatable flag (--label a=1 --label b=2),
	// whose values are joined with commas.
	Repeat bool
}

// EnvName is the environment variable of a setting key.
func EnvName(key string) string { return "HARMONY_" + strings.ToUpper(key) }

// Error names the setting whose value is wrong.
type Error struct {
	Setting string // file key
	Source  string // "file", "environment (HARMONY_X)", "flag --x" or "" after merging
	Reason  string
}

func (e *Error) Error() string {
	if e.Source != "" {
		return fmt.Sprintf("setting %s (from %s): %s", e.Setting, e.Source, e.Reason)
	}
	return fmt.Sprintf("setting %s: %s", e.Setting, e.Reason)
}

// LoadFile reads a YAML file into v strictly (see Parse): an unknown key is
// an error that names it, its line and the keys there are.
func LoadFile(path string, v any) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config file: %w", err)
	}
	return Parse(path, data, v)
}

// ApplyEnv sets every setting whose HARMONY_* variable is present in environ
// (os.Environ's form).
func ApplyEnv(settings []Setting, environ []string) error {
	env := map[string]string{}
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok {
			env[k] = v
		}
	}
	for _, s := range settings {
		name := EnvName(s.Key)
		if v, ok := env[name]; ok {
			if err := s.Set(v); err != nil {
				return &Error{Setting: s.Key, Source: "environment (" + name + ")", Reason: err.Error()}
			}
		}
	}
	return nil
}

// Setters for the field kinds settings use.

func stringSetting(key, flag, usage string, p *string) Setting {
	return Setting{Key: key, Flag: flag, Usage: usage,
		Set: func(s string) error { *p = s; return nil },
		Get: func() string { return *p }}
}

func listSetting(key, flag, usage string, p *[]string) Setting {
	return Setting{Key: key, Flag: flag, Usage: usage,
		Set: func(s string) error {
			*p = nil
			for _, part := range strings.Split(s, ",") {
				if part = strings.TrimSpace(part); part != "" {
					*p = append(*p, part)
				}
			}
			return nil
		},
		Get: func() string { return strings.Join(*p, ",") }}
}

func intSetting(key, flag, usage string, p *int) Setting {
	return Setting{Key: key, Flag: flag, Usage: usage,
		Set: func(s string) error {
			v, err := strconv.Atoi(strings.TrimSpace(s))
			if err != nil {
				return fmt.Errorf("%q is not a whole number", s)
			}
			*p = v
			return nil
		},
		Get: func() string { return strconv.Itoa(*p) }}
}

func floatSetting(key, flag, usage string, p *float64) Setting {
	return Setting{Key: key, Flag: flag, Usage: usage,
		Set: func(s string) error {
			v, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
			if err != nil {
				return fmt.Errorf("%q is not a number", s)
			}
			*p = v
			return nil
		},
		Get: func() string { return strconv.FormatFloat(*p, 'g', -1, 64) }}
}

func boolSetting(key, flag, usage string, p *bool) Setting {
	return Setting{Key: key, Flag: flag, Usage: usage, Bool: true,
		Set: func(s string) error {
			v, err := strconv.ParseBool(strings.TrimSpace(s))
			if err != nil {
				return fmt.Errorf("%q is not true or false", s)
			}
			*p = v
			return nil
		},
		Get: func() string { return strconv.FormatBool(*p) }}
}

func durationSetting(key, flag, usage string, p *Duration) Setting {
	return Setting{Key: key, Flag: flag, Usage: usage,
		Set: func(s string) error {
			v, err := time.ParseDuration(strings.TrimSpace(s))
			if err != nil {
				return fmt.Errorf("%q is not a duration such as 10s", s)
			}
			*p = Duration(v)
			return nil
		},
		Get: func() string { return time.Duration(*p).String() }}
}

func mapSetting(key, flag, usage string, p *map[string]string) Setting {
	return Setting{Key: key, Flag: flag, Usage: usage, Repeat: true,
		Set: func(s string) error {
			m := map[string]string{}
			for _, part := range strings.Split(s, ",") {
				part = strings.TrimSpace(part)
				if part == "" {
					continue
				}
				k, v, ok := strings.Cut(part, "=")
				if !ok || k == "" {
					return fmt.Errorf("%q is not key=value", part)
				}
				m[k] = v
			}
			*p = m
			return nil
		},
		Get: func() string {
			keys := make([]string, 0, len(*p))
			for k := range *p {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			parts := make([]string, 0, len(keys))
			for _, k := range keys {
				parts = append(parts, k+"="+(*p)[k])
			}
			return strings.Join(parts, ",")
		}}
}
