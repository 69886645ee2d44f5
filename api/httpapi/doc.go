// Package httpapi is the contract of the server's HTTP API under /api/v1:
// every request and answer body, the catalogue of error codes (each with
// its HTTP status and meaning) and a typed client. The server answers with
// these types, the CLI and the dashboard read them, and docs/openapi.yaml
// describes them (a test checks it against this package).
//
// The package depends on the standard library and api/v1alpha1 only, so
// that the agent-only build (harmony enroll) links it without the server.
// See docs/adr/0021-http-contract.md.
package httpapi
