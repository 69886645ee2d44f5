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
	limiters map[string]*tries // failed tries per client address
}

func newAuth(key []byte, tokens []Token) *auth {
	return &auth{key: key, tokens: tokens, now: time.Now, limiters: map[string]*tries{}}
}

// check finds the token of a secret, comparing every configured hash in
// constant time.
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

// attempt admits one try of a secret from a client address, or returns
// nil when the address must wait: five failed tries in a burst, then one
// every two seconds. Tries in flight count against what is left, so
// parallel guesses cannot all pass on one remaining allowance; a success
// costs nothing. The caller calls done(failed) when the try is decided.
func (a *auth) attempt(r *http.Request) (done func(failed bool)) {
	a.mu.Lock()
	defer a.mu.Unlock()
	addr := clientAddr(r)
	st := a.limiters[addr]
	if st == nil {
		if len(a.limiters) >= maxLimiters {
			a.evictIdle()
		}
		st = &tries{lim: rate.NewLimiter(rate.Every(2*time.Second), 5)}
		a.limiters[addr] = st
	}
	if st.lim.Tokens()-float64(st.inFlight) < 1 {
		return nil
	}
	st.inFlight++
	return func(failed bool) {
		a.mu.Lock()
		defer a.mu.Unlock()
		st.inFlight--
		if failed {
			st.lim.Allow() // spend one allowance
		}
	}
}

// tries is one address's failed-try budget.
type tries struct {
	lim      *rate.Limiter
	inFlight int
}

// maxLimiters bounds the addresses tracked; beyond it the ones with a full
// budget and nothing in flight are forgotten, never the others.
const maxLimiters = 10000

func (a *auth) evictIdle() {
	for addr, st := range a.limiters {
		if st.inFlight == 0 && st.lim.Tokens() >= float64(st.lim.Burst()) {
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

// Authenticate checks a request's bearer token, for the API. Failures
// count toward the same per-address limit as failed sign-ins.
func (d *Dashboard) Authenticate(r *http.Request) (Token, error) {
	secret, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || strings.TrimSpace(secret) == "" {
		return Token{}, ErrNoToken
	}
	done := d.auth.attempt(r)
	if done == nil {
		return Token{}, ErrRateLimited
	}
	t, ok := d.auth.check(strings.TrimSpace(secret))
	done(!ok)
	if !ok {
		return Token{}, ErrUnknownToken
	}
	return t, nil
}

// Attempt counts a try of another secret (an enrollment token) toward the
// same per-address limit as sign-ins: done(failed) must be called once the
// secret is checked. It returns nil while the address is limited.
func (d *Dashboard) Attempt(r *http.Request) (done func(failed bool)) {
	return d.auth.attempt(r)
}
