package peer

import (
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/nkeys"
)

func writeSeed(t *testing.T, kp nkeys.KeyPair) string {
	t.Helper()
	seed, err := kp.Seed()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "nkey.seed")
	if err := os.WriteFile(path, seed, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestLoadIdentitySeedFile(t *testing.T) {
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	want, _ := kp.PublicKey()
	id, err := LoadIdentity(writeSeed(t, kp))
	if err != nil {
		t.Fatal(err)
	}
	if id.PublicKey() != want {
		t.Fatalf("public key %s, want %s", id.PublicKey(), want)
	}
	// The certificate carries the nkey's own ed25519 key, so peers that
	// learnt the "U..." key pin exactly what TLS presents.
	got, err := PublicKeyOf(id.cert.Leaf.PublicKey)
	if err != nil || got != want {
		t.Fatalf("certificate key %s (%v), want %s", got, err, want)
	}
	if err := id.cert.Leaf.CheckSignature(id.cert.Leaf.SignatureAlgorithm, id.cert.Leaf.RawTBSCertificate, id.cert.Leaf.Signature); err != nil {
		t.Fatalf("not self-signed: %v", err)
	}
	// The private half signs for the nkey: what the mesh verifies.
	pub, _ := nkeys.FromPublicKey(want)
	msg := []byte("nonce")
	if err := pub.Verify(msg, ed25519.Sign(id.cert.PrivateKey.(ed25519.PrivateKey), msg)); err != nil {
		t.Fatalf("the certificate's private key does not sign for %s: %v", want, err)
	}
}

func TestLoadIdentityDecorated(t *testing.T) {
	kp, _ := nkeys.CreateUser()
	seed, _ := kp.Seed()
	want, _ := kp.PublicKey()
	creds := "-----BEGIN USER NKEY SEED-----\n" + string(seed) + "\n------END USER NKEY SEED------\n"
	path := filepath.Join(t.TempDir(), "user.creds")
	if err := os.WriteFile(path, []byte(creds), 0o600); err != nil {
		t.Fatal(err)
	}
	id, err := LoadIdentity(path)
	if err != nil || id.PublicKey() != want {
		t.Fatalf("LoadIdentity = %s, %v; want %s", id.PublicKey(), err, want)
	}
}

func TestLoadIdentityEphemeral(t *testing.T) {
	a, err := LoadIdentity("")
	if err != nil {
		t.Fatal(err)
	}
	b, err := LoadIdentity("")
	if err != nil {
		t.Fatal(err)
	}
	if !nkeys.IsValidPublicUserKey(a.PublicKey()) || a.PublicKey() == b.PublicKey() {
		t.Fatalf("ephemeral keys %s and %s", a.PublicKey(), b.PublicKey())
	}
}

func TestLoadIdentityRefuses(t *testing.T) {
	account, _ := nkeys.CreateAccount()
	garbage := filepath.Join(t.TempDir(), "garbage")
	if err := os.WriteFile(garbage, []byte("not a seed\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, path := range map[string]string{
		"missing":      filepath.Join(t.TempDir(), "none"),
		"garbage":      garbage,
		"account seed": writeSeed(t, account),
	} {
		t.Run(name, func(t *testing.T) {
			if id, err := LoadIdentity(path); err == nil {
				t.Fatalf("LoadIdentity accepted it: %s", id.PublicKey())
			}
		})
	}
}

func TestPublicKeyOfRejectsOtherKeys(t *testing.T) {
	if _, err := PublicKeyOf("not a key"); err == nil {
		t.Fatal("accepted a string")
	}
	if _, err := PublicKeyOf(nil); err == nil {
		t.Fatal("accepted nil")
	}
}

// The handshake callbacks name the key they refuse.
func TestVerifyConnectionNamesTheKey(t *testing.T) {
	server, client, other := newID(t), newID(t), newID(t)
	state := func(id Identity) tls.ConnectionState {
		return tls.ConnectionState{PeerCertificates: []*x509.Certificate{id.cert.Leaf}}
	}
	rejected := 0
	scfg := serverTLS(server, trust(map[string]string{client.PublicKey(): "db-2"}), func() { rejected++ })
	if err := scfg.VerifyConnection(state(client)); err != nil {
		t.Fatalf("trusted client refused: %v", err)
	}
	err := scfg.VerifyConnection(state(other))
	if !errors.Is(err, ErrUntrusted) || !strings.Contains(err.Error(), other.PublicKey()) {
		t.Fatalf("untrusted client: %v", err)
	}
	if err := scfg.VerifyConnection(tls.ConnectionState{}); err == nil {
		t.Fatal("no certificate accepted")
	}
	if rejected != 2 {
		t.Fatalf("rejected %d, want 2", rejected)
	}

	ccfg := clientTLS(client, server.PublicKey())
	if err := ccfg.VerifyConnection(state(server)); err != nil {
		t.Fatalf("pinned server refused: %v", err)
	}
	var ke *KeyError
	if err := ccfg.VerifyConnection(state(other)); !errors.As(err, &ke) || ke.Got != other.PublicKey() || ke.Want != server.PublicKey() {
		t.Fatalf("other server: %v", err)
	}
}
