package web

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
)

// bearerTry authenticates one API request with secret from the test
// address (httptest.NewRequest's 192.0.2.1).
func bearerTry(d *Dashboard, secret string) error {
	req := httptest.NewRequest("GET", "/api/v1/deployments", nil)
	req.Header.Set("Authorization", "Bearer "+secret)
	_, err := d.Authenticate(req)
	return err
}

// TestAValidTokenIsNeverLimited: an address that is limited for wrong
// tokens (a guesser, or the admin's own script with a stale token trying
// once a second) still gets in with a valid API token; wrong tokens from
// it stay limited.
func TestAValidTokenIsNeverLimited(t *testing.T) {
	srv := newDashboard(t, &fakeBackend{phase: "Converged", snap: fleet(1)})
	d := srv.Config.Handler.(*Dashboard)
	for i := range 5 {
		if err := bearerTry(d, "guess"); !errors.Is(err, ErrUnknownToken) {
			t.Fatalf("wrong token %d: %v, want ErrUnknownToken", i+1, err)
		}
	}
	// Wrong tries keep coming (once a second in real life; as fast as the
	// test runs here): each is refused, and the valid token between them
	// always gets in.
	for i := range 20 {
		if err := bearerTry(d, "guess"); !errors.Is(err, ErrRateLimited) {
			t.Fatalf("wrong token %d after five: %v, want ErrRateLimited", i+6, err)
		}
		if err := bearerTry(d, adminSecret); err != nil {
			t.Fatalf("the admin token after %d wrong ones: %v", i+6, err)
		}
	}

}

// TestAValidSignInIsNeverLimited: the same on the dashboard's sign-in form.
func TestAValidSignInIsNeverLimited(t *testing.T) {
	srv := newDashboard(t, &fakeBackend{phase: "Converged", snap: fleet(1)})
	c := newClient(t, srv)
	for i := range 5 {
		if code, _, _ := c.do("POST", "/login", url.Values{"token": {"guess"}}, nil); code != http.StatusUnauthorized {
			t.Fatalf("wrong sign-in %d: %d, want 401", i+1, code)
		}
	}
	for i := range 10 {
		if code, _, _ := c.do("POST", "/login", url.Values{"token": {"guess"}}, nil); code != http.StatusTooManyRequests {
			t.Fatalf("wrong sign-in %d: %d, want 429", i+6, code)
		}
		c.login(adminSecret)
	}
	if code, _, _ := c.do("GET", "/", nil, nil); code != http.StatusOK {
		t.Fatalf("the dashboard after signing in from a limited address: %d", code)
	}
}

// TestValidTokensCostNothing: valid tokens never spend the address's
// budget of wrong ones, however many there are.
func TestValidTokensCostNothing(t *testing.T) {
	srv := newDashboard(t, &fakeBackend{phase: "Converged", snap: fleet(1)})
	d := srv.Config.Handler.(*Dashboard)
	for i := range 4 {
		if err := bearerTry(d, "guess"); !errors.Is(err, ErrUnknownToken) {
			t.Fatalf("wrong token %d: %v", i+1, err)
		}
	}
	for i := range 100 {
		if err := bearerTry(d, viewerSecret); err != nil {
			t.Fatalf("valid token %d: %v", i+1, err)
		}
	}
	if err := bearerTry(d, "guess"); !errors.Is(err, ErrUnknownToken) {
		t.Fatalf("the fifth wrong token after 100 valid ones: %v, want ErrUnknownToken (the budget's last try)", err)
	}
	if err := bearerTry(d, "guess"); !errors.Is(err, ErrRateLimited) {
		t.Fatalf("the sixth wrong token: %v, want ErrRateLimited", err)
	}
}
