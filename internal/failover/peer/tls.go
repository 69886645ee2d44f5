package peer

import (
	"crypto/tls"
	"errors"
	"fmt"
)

// peerKey is the nkey public key of the certificate a peer presented.
func peerKey(cs tls.ConnectionState) (string, error) {
	if len(cs.PeerCertificates) == 0 {
		return "", errors.New("peer: no certificate presented")
	}
	return PublicKeyOf(cs.PeerCertificates[0].PublicKey)
}

// serverTLS requires a client certificate whose key trusted accepts. No
// session tickets: every connection proves its key afresh.
func serverTLS(id Identity, trusted func(pub string) (string, bool), rejected func()) *tls.Config {
	return &tls.Config{
		MinVersion:             tls.VersionTLS13,
		MaxVersion:             tls.VersionTLS13,
		Certificates:           []tls.Certificate{id.cert},
		ClientAuth:             tls.RequireAnyClientCert,
		SessionTicketsDisabled: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			pub, err := peerKey(cs)
			if err != nil {
				rejected()
				return err
			}
			if node, ok := trusted(pub); !ok || node == "" {
				rejected()
				return fmt.Errorf("%w %s: not a member of this cluster", ErrUntrusted, pub)
			}
			return nil
		},
	}
}

// clientTLS accepts only a server whose key is want. The stdlib's chain
// and name checks are off (InsecureSkipVerify): there is no CA and no
// name, the pinned key is the whole check, done in VerifyConnection (which
// also runs on resumed sessions; the client keeps no session cache anyway).
func clientTLS(id Identity, want string) *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		MaxVersion:         tls.VersionTLS13,
		Certificates:       []tls.Certificate{id.cert},
		InsecureSkipVerify: true, // the server's key is pinned in VerifyConnection
		VerifyConnection: func(cs tls.ConnectionState) error {
			got, err := peerKey(cs)
			if err != nil {
				return err
			}
			if got != want {
				return &KeyError{Want: want, Got: got}
			}
			return nil
		},
	}
}
