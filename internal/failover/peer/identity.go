package peer

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"os"
	"time"

	"github.com/nats-io/nkeys"
)

// Identity is an agent's device identity: the nkey user key pair it also
// uses on the mesh, and the self-signed certificate of that key which it
// presents to its peers. The zero Identity is not usable.
type Identity struct {
	pub  string
	cert tls.Certificate
}

// ErrNoIdentity is returned when a server or client is given the zero Identity.
var ErrNoIdentity = errors.New("peer: no identity")

// LoadIdentity reads the agent's nkey seed file (the agent's nats_nkey
// setting: a user seed "SU...", bare or decorated as in a creds file). With
// seedPath "" it makes an ephemeral user key, for agents that run without a
// device identity and for tests.
func LoadIdentity(seedPath string) (Identity, error) {
	if seedPath == "" {
		kp, err := nkeys.CreateUser()
		if err != nil {
			return Identity{}, fmt.Errorf("peer: ephemeral key: %w", err)
		}
		defer kp.Wipe()
		return IdentityFromKeyPair(kp)
	}
	data, err := os.ReadFile(seedPath)
	if err != nil {
		return Identity{}, fmt.Errorf("peer: nkey seed: %w", err)
	}
	kp, err := nkeys.ParseDecoratedNKey(data)
	clear(data)
	if err != nil {
		return Identity{}, fmt.Errorf("peer: nkey seed %s: not an nkey seed: %w", seedPath, err)
	}
	defer kp.Wipe()
	id, err := IdentityFromKeyPair(kp)
	if err != nil {
		return Identity{}, fmt.Errorf("peer: nkey seed %s: %w", seedPath, err)
	}
	return id, nil
}

// IdentityFromKeyPair is the Identity of a user key pair that holds its
// seed. The key pair is not kept: the caller may wipe it.
func IdentityFromKeyPair(kp nkeys.KeyPair) (Identity, error) {
	seed, err := kp.Seed()
	if err != nil {
		return Identity{}, fmt.Errorf("peer: key pair has no seed: %w", err)
	}
	defer clear(seed)
	prefix, raw, err := nkeys.DecodeSeed(seed)
	if err != nil {
		return Identity{}, fmt.Errorf("peer: seed: %w", err)
	}
	defer clear(raw)
	if prefix != nkeys.PrefixByteUser {
		return Identity{}, fmt.Errorf("peer: not a user nkey seed (SU...): prefix %s", prefix)
	}
	priv := ed25519.NewKeyFromSeed(raw)
	pub, err := PublicKeyOf(priv.Public())
	if err != nil {
		return Identity{}, err
	}
	if kpub, err := kp.PublicKey(); err != nil || kpub != pub {
		return Identity{}, errors.New("peer: the seed's ed25519 key does not match its nkey public key")
	}
	cert, err := selfSigned(priv, pub)
	if err != nil {
		return Identity{}, err
	}
	return Identity{pub: pub, cert: cert}, nil
}

// PublicKey is the nkey public key ("U..."): what peers pin and trust.
func (id Identity) PublicKey() string { return id.pub }

func (id Identity) valid() bool { return id.pub != "" }

// PublicKeyOf is the nkey user public key ("U...") of an ed25519 public
// key; any other kind of key is an error.
func PublicKeyOf(key any) (string, error) {
	ed, ok := key.(ed25519.PublicKey)
	if !ok || len(ed) != ed25519.PublicKeySize {
		return "", fmt.Errorf("peer: certificate key is %T, not ed25519", key)
	}
	b, err := nkeys.Encode(nkeys.PrefixByteUser, ed)
	if err != nil {
		return "", fmt.Errorf("peer: encode key: %w", err)
	}
	return string(b), nil
}

// selfSigned makes the certificate an agent presents: its own key, signed
// by itself. Nobody checks the signature, the names or the dates: peers pin
// the key (TLS 1.3 proves the holder has its private half), so the validity
// is long and the subject only helps people reading a capture.
func selfSigned(priv ed25519.PrivateKey, pub string) (tls.Certificate, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("peer: certificate serial: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: pub, Organization: []string{"harmony failover peer"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(100 * 365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, priv.Public(), priv)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("peer: certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("peer: certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: priv, Leaf: leaf}, nil
}
