package web

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Role is what a token may do.
type Role string

const (
	// Admin may read, apply, delete and run commands on devices.
	Admin Role = "admin"
	// Viewer may only read.
	Viewer Role = "viewer"
)

// Token is one configured credential: its name, role and the SHA-256 of
// the secret. The secret itself is never stored by the server.
type Token struct {
	Name   string
	Role   Role
	SHA256 [32]byte
}

// HashToken returns the hex SHA-256 of a secret, the form tokens are
// configured in.
func HashToken(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

const (
	sessionCookie = "harmony_session"
	sessionTTL    = 12 * time.Hour
)

// session is what the signed cookie carries.
type session struct {
	Name    string `json:"n"`
	Role    Role   `json:"r"`
	Expires int64  `json:"e"` // unix seconds
	ID      string `json:"s"` // random; the CSRF token is derived from it
	// Token ties the session to the token's secret (a MAC of its hash):
	// a token given a new secret under the same name ends old sessions.
	Token string `json:"t"`
}

// auth checks tokens and sessions. Sessions are stateless cookies signed
// with a key the server keeps in its data directory, so they survive a
// server restart; a session is honoured only while its token's name is
// still configured with the same role.
type auth struct {
	key    []byte
	tokens []Token
	now    func() time.Time

	mu       sync.Mutex
	limiters map[string]*rate.Limiter // wrong tries per client address
}

func newAuth(key []byte, tokens []Token) *auth {
	return &auth{key: key, tokens: tokens, now: time.Now, limiters: map[string]*rate.Limiter{}}
}

// check finds the token of a secret, comparing every configured hash in
// constant time: how long it takes says nothing about the secret.
func (a *auth) check(secret string) (Token, bool) {
	sum := sha256.Sum256([]byte(secret))
	var found Token
	ok := false
	for _, t := range a.tokens {
		if subtle.ConstantTimeCompare(sum[:], t.SHA256[:]) == 1 {
			found, ok = t, true
		}
	}
	return found, ok
}

// try checks a secret presented by a request. The secret is checked first:
// a valid one is let through whatever the address's state, and never
// touches the limiter (no lock to wait for, nothing spent), so that wrong
// tries from an address (a guesser, or the admin's own script with an old
// token, once a second) never lock out a right one from there. A wrong
// one spends one of the address's allowance of wrong tries (fail) and,
// once that is used up, is answered ErrRateLimited instead of
// ErrUnknownToken.
//
// The limiter therefore does not stop a limited address from learning
// whether a secret is valid (200 or 429); it slows nothing down either.
// It marks and refuses wrong tries. What stops guessing is the secrets'
// entropy: enrollment tokens are 32 random bytes, and API tokens should
// be as random (docs/dashboard.md: openssl rand -hex 32). Timing tells
// nothing the answer does not: the comparison is constant-time over every
// token's hash, so its time does not depend on the secret, and the
// limiter is consulted only after it.
func (a *auth) try(r *http.Request, secret string) (Token, error) {
	if t, ok := a.check(secret); ok {
		return t, nil
	}
	if a.fail(r) {
		return Token{}, ErrRateLimited
	}
	return Token{}, ErrUnknownToken
}

// fail counts a wrong secret from r's address and reports whether the
// address is over its allowance: five in a burst, then one every two
// seconds. The count is taken under the lock, so parallel wrong tries
// cannot all pass on one remaining allowance.
func (a *auth) fail(r *http.Request) (limited bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	addr := clientAddr(r)
	lim := a.limiters[addr]
	if lim == nil {
		if len(a.limiters) >= maxLimiters {
			a.evictIdle()
		}
		lim = rate.NewLimiter(rate.Every(2*time.Second), 5)
		a.limiters[addr] = lim
	}
	return !lim.Allow()
}

// maxLimiters bounds the addresses tracked; beyond it the ones with a full
// allowance are forgotten, never the others.
const maxLimiters = 10000

func (a *auth) evictIdle() {
	for addr, lim := range a.limiters {
		if lim.Tokens() >= float64(lim.Burst()) {
			delete(a.limiters, addr)
		}
	}
}

func clientAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

func (a *auth) sign(b []byte) string {
	m := hmac.New(sha256.New, a.key)
	m.Write(b)
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// issue sets the session cookie for a token.
func (a *auth) issue(w http.ResponseWriter, r *http.Request, t Token) error {
	var id [16]byte
	if _, err := rand.Read(id[:]); err != nil {
		return err
	}
	s := session{Name: t.Name, Role: t.Role, Expires: a.now().Add(sessionTTL).Unix(), ID: base64.RawURLEncoding.EncodeToString(id[:]),
		Token: a.tokenTag(t)}
	b, _ := json.Marshal(s)
	payload := base64.RawURLEncoding.EncodeToString(b)
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: payload + "." + a.sign([]byte(payload)), Path: "/",
		MaxAge: int(sessionTTL.Seconds()), HttpOnly: true, Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode})
	return nil
}

func clearSession(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: "", Path: "/", MaxAge: -1, HttpOnly: true,
		Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode})
}

var errNoSession = errors.New("not signed in")

// session reads and checks the request's session.
func (a *auth) session(r *http.Request) (session, error) {
	c, err := r.Cookie(sessionCookie)
	if err != nil {
		return session{}, errNoSession
	}
	payload, sig, ok := strings.Cut(c.Value, ".")
	if !ok || !hmac.Equal([]byte(sig), []byte(a.sign([]byte(payload)))) {
		return session{}, errNoSession
	}
	b, err := base64.RawURLEncoding.DecodeString(payload)
	if err != nil {
		return session{}, errNoSession
	}
	var s session
	if err := json.Unmarshal(b, &s); err != nil {
		return session{}, errNoSession
	}
	if a.now().Unix() >= s.Expires {
		return session{}, fmt.Errorf("session expired")
	}
	for _, t := range a.tokens {
		if t.Name == s.Name && t.Role == s.Role && hmac.Equal([]byte(s.Token), []byte(a.tokenTag(t))) {
			return s, nil
		}
	}
	return session{}, fmt.Errorf("token %q is no longer configured", s.Name)
}

// tokenTag names a token's secret in a session without revealing its hash.
func (a *auth) tokenTag(t Token) string {
	return a.sign(append([]byte("tok:"), t.SHA256[:]...))[:16]
}

// csrf is the token every form of a session carries.
func (a *auth) csrf(s session) string {
	return a.sign([]byte("csrf:" + s.ID))
}

// checkCSRF accepts a mutating request only with the session's CSRF token
// and, when the browser sends one, a same-origin Origin header.
func (a *auth) checkCSRF(r *http.Request, s session) error {
	if o := r.Header.Get("Origin"); o != "" && !sameOrigin(o, r) {
		return fmt.Errorf("origin %q is not this server", o)
	}
	got := r.PostFormValue("csrf")
	if got == "" {
		got = r.Header.Get("X-CSRF-Token")
	}
	if got == "" || !hmac.Equal([]byte(got), []byte(a.csrf(s))) {
		return errors.New("missing or wrong CSRF token; reload the page")
	}
	return nil
}

func sameOrigin(origin string, r *http.Request) bool {
	_, host, ok := strings.Cut(origin, "://")
	return ok && host == r.Host
}

// Errors of Authenticate.
var (
	ErrNoToken      = errors.New("no token: send Authorization: Bearer <token>")
	ErrUnknownToken = errors.New("unknown token")
	ErrRateLimited  = errors.New("too many failed attempts from this address; wait a few seconds")
)

// Authenticate checks a request's bearer token, for the API. A valid
// token is never limited; wrong ones count toward the same per-address
// limit as failed sign-ins (ErrRateLimited once it is reached).
func (d *Dashboard) Authenticate(r *http.Request) (Token, error) {
	secret, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || strings.TrimSpace(secret) == "" {
		return Token{}, ErrNoToken
	}
	return d.auth.try(r, strings.TrimSpace(secret))
}

// Failed counts a wrong secret of another kind (an enrollment token),
// checked by the caller, toward the same per-address limit as sign-ins,
// and reports whether the address is over it: answer ErrRateLimited (429)
// instead of saying the secret is wrong. Call it only for a wrong secret,
// after checking it: a valid one must never be refused for its address.
func (d *Dashboard) Failed(r *http.Request) (limited bool) {
	return d.auth.fail(r)
}
