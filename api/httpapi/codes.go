package httpapi

import "net/http"

// Code is a stable error code of the API: clients decide by it, never by
// an error's message. Every code the server sends is in Codes.
type Code string

// The catalogue's codes. Adding one means adding it to Codes (a test
// fails otherwise) and to docs/openapi.yaml (checked too).
const (
	CodeInvalid          Code = "invalid"
	CodeTooLarge         Code = "too_large"
	CodeUnauthorized     Code = "unauthorized"
	CodeForbidden        Code = "forbidden"
	CodeNotFound         Code = "not_found"
	CodeMethodNotAllowed Code = "method_not_allowed"
	CodeConflict         Code = "conflict"
	CodeDeviceEnrolled   Code = "device_enrolled"
	CodeRateLimited      Code = "rate_limited"
	CodeInternal         Code = "internal"
	CodeDeviceError      Code = "device_error"
	CodeStoreUnavailable Code = "store_unavailable"
	CodeDeviceOffline    Code = "device_offline"
	CodeDeviceTimeout    Code = "device_timeout"
)

// CodeInfo is one entry of the catalogue.
type CodeInfo struct {
	Code Code
	// Status is the HTTP status every answer with this code has.
	Status int
	// Meaning says in one line when the server answers with it.
	Meaning string
}

// Codes is the catalogue of error codes, in order of HTTP status.
func Codes() []CodeInfo {
	return []CodeInfo{
		{CodeInvalid, http.StatusBadRequest, "the request is malformed or a value is invalid; field names it, document the 1-based document of an apply"},
		{CodeUnauthorized, http.StatusUnauthorized, "no bearer token, an unknown one, or a wrong enrollment token"},
		{CodeForbidden, http.StatusForbidden, "the token's role may not do this: only admin tokens change anything"},
		{CodeNotFound, http.StatusNotFound, "no such deployment, device, enrollment request or identity (or a device has no such resource)"},
		{CodeMethodNotAllowed, http.StatusMethodNotAllowed, "the path is the API's but not with this method; the Allow header lists the methods it takes"},
		{CodeConflict, http.StatusConflict, "the value changed meanwhile (try again), or the request contradicts the current state"},
		{CodeDeviceEnrolled, http.StatusConflict, "the device has an identity this call may not replace (enroll with a token made for it, or approve with replace)"},
		{CodeTooLarge, http.StatusRequestEntityTooLarge, "the request body is larger than the API accepts"},
		{CodeRateLimited, http.StatusTooManyRequests, "too many failed sign-ins or anonymous enrollment requests from this address; wait"},
		{CodeInternal, http.StatusInternalServerError, "an unexpected failure inside the server"},
		{CodeDeviceError, http.StatusBadGateway, "the device answered with a failure or an unreadable reply; reply carries its answer"},
		{CodeStoreUnavailable, http.StatusServiceUnavailable, "the store does not answer, the server is starting, or a write's outcome is unknown (applying again is safe)"},
		{CodeDeviceOffline, http.StatusServiceUnavailable, "the device has no fresh heartbeat, or nothing listens on its command subject"},
		{CodeDeviceTimeout, http.StatusGatewayTimeout, "the device did not answer the command in time"},
	}
}

// Info is the code's catalogue entry; ok is false for a code that is not
// in the catalogue (one a newer server may send).
func (c Code) Info() (info CodeInfo, ok bool) {
	for _, i := range Codes() {
		if i.Code == c {
			return i, true
		}
	}
	return CodeInfo{Code: c, Status: http.StatusInternalServerError}, false
}

// Status is the code's HTTP status (500 for a code not in the catalogue).
func (c Code) Status() int {
	i, _ := c.Info()
	return i.Status
}
