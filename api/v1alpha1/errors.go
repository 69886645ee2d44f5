package v1alpha1

import (
	"errors"
	"fmt"
	"strings"
)

// FieldError says what is wrong with one field. Field is a path such as
// spec.resources[2].spec.mode.
type FieldError struct {
	Field  string `json:"field"`
	Reason string `json:"reason"`
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Reason }

// FieldErrors lists every problem found; it is an error when not empty.
type FieldErrors []*FieldError

func (l FieldErrors) Error() string {
	parts := make([]string, len(l))
	for i, e := range l {
		parts[i] = e.Error()
	}
	return strings.Join(parts, "; ")
}

// OrNil returns nil for an empty list, so callers can return it as an error.
func (l FieldErrors) OrNil() error {
	if len(l) == 0 {
		return nil
	}
	return l
}

// First returns the first field error inside err, if any.
func First(err error) (*FieldError, bool) {
	var list FieldErrors
	if errors.As(err, &list) && len(list) > 0 {
		return list[0], true
	}
	var fe *FieldError
	if errors.As(err, &fe) {
		return fe, true
	}
	return nil, false
}

// errs collects field errors under a path prefix.
type errs struct {
	list *FieldErrors
	path string
}

func newErrs() errs { return errs{list: &FieldErrors{}} }

func (e errs) at(field string) errs {
	if e.path == "" {
		return errs{list: e.list, path: field}
	}
	if strings.HasPrefix(field, "[") {
		return errs{list: e.list, path: e.path + field}
	}
	return errs{list: e.list, path: e.path + "." + field}
}

func (e errs) index(i int) errs { return e.at(fmt.Sprintf("[%d]", i)) }

func (e errs) add(format string, args ...any) {
	*e.list = append(*e.list, &FieldError{Field: e.path, Reason: fmt.Sprintf(format, args...)})
}

func (e errs) err() error { return e.list.OrNil() }

// UnknownKindError is a resource kind this version does not know. Agents
// report it in status (never ignore it); servers refuse it.
type UnknownKindError struct {
	Field string
	Kind  string
}

func (e *UnknownKindError) Error() string {
	return fmt.Sprintf("%s: unknown resource kind %q (known: File, Container, SystemdUnit, ShellJob)", e.Field, e.Kind)
}

// FormatVersionError is a stored value written by a newer Harmony.
type FormatVersionError struct{ Got int }

func (e *FormatVersionError) Error() string {
	return fmt.Sprintf("v: format version %d is not supported (this build reads %d)", e.Got, FormatVersion)
}
