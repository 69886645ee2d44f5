// Package pki makes the certificates `harmony server` uses when none are
// supplied: a CA of its own, created once, and a server certificate signed
// by it for the names and addresses the server is reached by. Agents and
// the CLI trust that CA (ca.pem), never the system's roots.
package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/harmony-fleet/harmony/internal/agent/localstate"
)

// Files in the directory Ensure manages.
const (
	CAFile   = "ca.pem"
	caKey    = "ca-key.pem"
	CertFile = "server.pem"
	KeyFile  = "server-key.pem"
)

// Lifetimes: the CA outlives any fleet's hardware; the server certificate
// is renewed at start-up once it has less than renewBefore left.
const (
	caLifetime     = 20 * 365 * 24 * time.Hour
	serverLifetime = 2 * 365 * 24 * time.Hour
	renewBefore    = 60 * 24 * time.Hour
)

// Paths are the files of a directory managed by Ensure.
type Paths struct {
	CA, Cert, Key string
}

// Ensure makes dir hold a CA and a server certificate for hosts (DNS names
// and IP addresses). The CA is created once and kept; the server
// certificate is made again when it is missing, does not cover every host,
// is not signed by the CA, or expires within 60 days. Keys are written
// with mode 0600.
func Ensure(dir string, hosts []string, now time.Time) (Paths, error) {
	p := Paths{CA: filepath.Join(dir, CAFile), Cert: filepath.Join(dir, CertFile), Key: filepath.Join(dir, KeyFile)}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return p, err
	}
	ca, caPriv, err := loadOrCreateCA(dir, now)
	if err != nil {
		return p, err
	}
	if ok, _ := certFits(p.Cert, p.Key, ca, hosts, now); ok {
		return p, nil
	}
	return p, issueServer(p, ca, caPriv, hosts, now)
}

func loadOrCreateCA(dir string, now time.Time) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	certPath, keyPath := filepath.Join(dir, CAFile), filepath.Join(dir, caKey)
	if _, err := os.Stat(certPath); err == nil {
		pair, err := tls.LoadX509KeyPair(certPath, keyPath)
		if err != nil {
			return nil, nil, fmt.Errorf("tls: the CA in %s: %w", dir, err)
		}
		key, ok := pair.PrivateKey.(*ecdsa.PrivateKey)
		if !ok {
			return nil, nil, fmt.Errorf("tls: the CA key in %s is not ECDSA", dir)
		}
		cert, err := x509.ParseCertificate(pair.Certificate[0])
		return cert, key, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	host, _ := os.Hostname()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "Harmony CA " + host, Organization: []string{"Harmony"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(caLifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	if err := writePair(certPath, keyPath, der, key); err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	return cert, key, err
}

// certFits reports whether the server certificate can be used as it is.
func certFits(certPath, keyPath string, ca *x509.Certificate, hosts []string, now time.Time) (bool, error) {
	pair, err := tls.LoadX509KeyPair(certPath, keyPath)
	if err != nil {
		return false, err
	}
	cert, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return false, err
	}
	if now.Add(renewBefore).After(cert.NotAfter) || cert.CheckSignatureFrom(ca) != nil {
		return false, nil
	}
	for _, h := range hosts {
		if cert.VerifyHostname(h) != nil {
			return false, nil
		}
	}
	return true, nil
}

func issueServer(p Paths, ca *x509.Certificate, caPriv *ecdsa.PrivateKey, hosts []string, now time.Time) error {
	if len(hosts) == 0 {
		return errors.New("tls: a server certificate needs at least one host name or address")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: hosts[0], Organization: []string{"Harmony"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(serverLifetime),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range slices.Compact(slices.Sorted(slices.Values(hosts))) {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caPriv)
	if err != nil {
		return err
	}
	return writePair(p.Cert, p.Key, der, key)
}

func writePair(certPath, keyPath string, der []byte, key *ecdsa.PrivateKey) error {
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	if err := localstate.WriteFileAtomic(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		return err
	}
	return localstate.WriteFileAtomic(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return n
}

// ServerConfig loads a certificate and key for a TLS server.
func ServerConfig(certPath, keyPath string) (*tls.Config, error) {
	pair, err := tls.LoadX509KeyPair(certPath, keyPath)
	if err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	return &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}, nil
}

// ClientConfig trusts only the CAs in caPath.
func ClientConfig(caPath string) (*tls.Config, error) {
	b, err := os.ReadFile(caPath)
	if err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("tls: %s holds no PEM certificate", caPath)
	}
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}
