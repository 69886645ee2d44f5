package httpapi

import (
	"errors"
	"fmt"

	v1 "github.com/harmony-fleet/harmony/api/v1alpha1"
)

// Error is an error answer of the API ({"error": Error}); the client
// returns it as the error of a call, with Status set.
type Error struct {
	// Status is the answer's HTTP status (not in the body: it is the
	// code's, see Codes).
	Status  int    `json:"-"`
	Code    Code   `json:"code"`
	Message string `json:"message"`
	// Field names the request field at fault, when one is.
	Field string `json:"field,omitempty"`
	// Document is the 1-based document of a multi-document apply at fault.
	Document int `json:"document,omitempty"`
	// Reply is the device's own answer, for a logs or exec call the
	// device refused or failed (its output and exit code included).
	Reply *v1.CommandReply `json:"reply,omitempty"`
}

func (e *Error) Error() string { return e.Message }

// Errorf makes an error answer with a code of the catalogue; its status is
// the code's.
func Errorf(code Code, format string, args ...any) *Error {
	return &Error{Status: code.Status(), Code: code, Message: fmt.Sprintf(format, args...)}
}

// WithField names the request field at fault.
func (e *Error) WithField(field string) *Error {
	e.Field = field
	return e
}

// IsCode reports whether err is (or wraps) an API error with this code.
func IsCode(err error, code Code) bool {
	var e *Error
	return errors.As(err, &e) && e.Code == code
}
