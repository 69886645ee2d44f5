package store

import "strings"

// MaxKeyLength bounds a key or filter. NATS refuses a protocol line over
// 4 KiB (max_control_line) by closing the connection that sent it: a key
// that long, sent by the control plane on a device's behalf, would close
// the control plane's own connection. Harmony's longest keys are a device
// id (253) and a deployment name (63).
const MaxKeyLength = 512

// ValidKey reports whether key is a valid KV key: dot-separated tokens of
// [-/_=a-zA-Z0-9], no empty token, not starting with the reserved "_kv",
// at most MaxKeyLength bytes.
func ValidKey(key string) bool {
	if key == "" || len(key) > MaxKeyLength || strings.HasPrefix(key, "_kv") {
		return false
	}
	for _, tok := range strings.Split(key, ".") {
		if tok == "" {
			return false
		}
		for _, r := range tok {
			if !keyRune(r) {
				return false
			}
		}
	}
	return true
}

// ValidFilter is ValidKey where a token may also be `*`, and the last one `>`.
func ValidFilter(f string) bool {
	if f == "" || len(f) > MaxKeyLength {
		return false
	}
	toks := strings.Split(f, ".")
	for i, tok := range toks {
		switch {
		case tok == "*":
		case tok == ">" && i == len(toks)-1:
		case tok == "":
			return false
		default:
			for _, r := range tok {
				if !keyRune(r) {
					return false
				}
			}
		}
	}
	return true
}

func keyRune(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' ||
		r == '-' || r == '/' || r == '_' || r == '='
}

// MatchFilter reports whether key matches filter, with the NATS wildcard
// rules (`*` one token, `>` one or more trailing tokens; "" matches all).
func MatchFilter(filter, key string) bool {
	if filter == "" || filter == ">" {
		return true
	}
	ft := strings.Split(filter, ".")
	kt := strings.Split(key, ".")
	for i, f := range ft {
		if f == ">" {
			return len(kt) > i
		}
		if i >= len(kt) {
			return false
		}
		if f != "*" && f != kt[i] {
			return false
		}
	}
	return len(ft) == len(kt)
}

// RepublishPrefix is where a bucket made with BucketConfig.Republish
// republishes its writes by Harmony's convention: <prefix>.<key>.
func RepublishPrefix(bucket string) string { return "harmony.kv." + bucket }
