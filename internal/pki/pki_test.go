package pki_test

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/harmony-fleet/harmony/internal/pki"
)

func parse(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestEnsureMakesAVerifiableServerCertificate(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	p, err := pki.Ensure(dir, []string{"harmony.example", "127.0.0.1", "localhost"}, now)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{p.Key, filepath.Join(dir, "ca-key.pem")} {
		if fi, err := os.Stat(f); err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: mode %v (%v), want 0600", f, fi.Mode().Perm(), err)
		}
	}
	// A TLS client that trusts only ca.pem talks to a server using the
	// certificate, by name and by address.
	srvConf, err := pki.ServerConfig(p.Cert, p.Key)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", srvConf)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = c.Write([]byte("ok"))
			_ = c.Close()
		}
	}()
	for _, name := range []string{"harmony.example", "127.0.0.1", "localhost"} {
		cli, err := pki.ClientConfig(p.CA)
		if err != nil {
			t.Fatal(err)
		}
		cli.ServerName = name
		c, err := tls.Dial("tcp", ln.Addr().String(), cli)
		if err != nil {
			t.Fatalf("dial as %s: %v", name, err)
		}
		b, _ := io.ReadAll(c)
		c.Close()
		if string(b) != "ok" {
			t.Fatalf("read %q", b)
		}
	}
	// A name the certificate does not carry, and a client that does not
	// trust the CA, are refused.
	cli, _ := pki.ClientConfig(p.CA)
	cli.ServerName = "other.example"
	if c, err := tls.Dial("tcp", ln.Addr().String(), cli); err == nil {
		c.Close()
		t.Fatal("a certificate for other.example was accepted")
	}
	if c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{ServerName: "localhost"}); err == nil {
		c.Close()
		t.Fatal("the system roots accepted Harmony's own CA")
	}
}

func TestEnsureKeepsTheCAAndRenewsOnlyWhenNeeded(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	p, err := pki.Ensure(dir, []string{"a.example"}, now)
	if err != nil {
		t.Fatal(err)
	}
	ca1, cert1 := parse(t, p.CA), parse(t, p.Cert)
	// Same hosts, a day later: nothing changes.
	if _, err := pki.Ensure(dir, []string{"a.example"}, now.Add(24*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if parse(t, p.Cert).SerialNumber.Cmp(cert1.SerialNumber) != 0 {
		t.Fatal("the server certificate was replaced without a reason")
	}
	// A new host: a new server certificate from the same CA.
	if _, err := pki.Ensure(dir, []string{"a.example", "10.0.0.7"}, now); err != nil {
		t.Fatal(err)
	}
	cert2 := parse(t, p.Cert)
	if cert2.SerialNumber.Cmp(cert1.SerialNumber) == 0 || cert2.VerifyHostname("10.0.0.7") != nil {
		t.Fatal("a new host did not give a new certificate that covers it")
	}
	// Close to expiry: renewed.
	if _, err := pki.Ensure(dir, []string{"a.example", "10.0.0.7"}, cert2.NotAfter.Add(-30*24*time.Hour)); err != nil {
		t.Fatal(err)
	}
	cert3 := parse(t, p.Cert)
	if cert3.SerialNumber.Cmp(cert2.SerialNumber) == 0 {
		t.Fatal("a certificate 30 days from expiry was not renewed")
	}
	if ca := parse(t, p.CA); ca.SerialNumber.Cmp(ca1.SerialNumber) != 0 {
		t.Fatal("the CA changed: every agent would have to be given the new one")
	}
	if err := cert3.CheckSignatureFrom(ca1); err != nil {
		t.Fatalf("renewed certificate not signed by the CA: %v", err)
	}
}
