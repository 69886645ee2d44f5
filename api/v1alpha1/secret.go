package v1alpha1

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"time"
	"unicode/utf8"
)

// MaxSecretBytes bounds a stored secret (all its keys and values).
const MaxSecretBytes = 256 << 10

// MaxSecretKeys bounds the keys of one secret.
const MaxSecretKeys = 64

var secretKeyRe = regexp.MustCompile(`^[A-Za-z0-9._-]{1,253}$`)

// Secret is the value of secrets/<name>: named values that resources
// reference (SecretKeyRef) instead of carrying them. Only the control plane
// and the devices whose desired state uses the secret read it; everything
// else shows its name, keys and Version only
// (docs/adr/0025-secrets.md).
type Secret struct {
	V    int               `json:"v"`
	Name string            `json:"name"`
	Data map[string]string `json:"data"`
	// Salt keys the Version's HMAC, so that the version of a short
	// password tells nothing about it to those who see versions only.
	Salt string `json:"salt"`
	// Version is HMAC-SHA256(salt, canonical data), hex: it changes
	// whenever a value does, and is what desired state carries.
	Version   string    `json:"version"`
	UpdatedAt time.Time `json:"updatedAt"`
}

// NewSecret builds a secret record with a fresh salt and its version.
func NewSecret(name string, data map[string]string, now time.Time) (Secret, error) {
	salt := make([]byte, 16)
	if _, err := rand.Read(salt); err != nil {
		return Secret{}, err
	}
	s := Secret{V: FormatVersion, Name: name, Data: data, Salt: hex.EncodeToString(salt), UpdatedAt: now.UTC()}
	if err := s.Validate(); err != nil {
		return Secret{}, err
	}
	s.Version = s.version()
	return s, nil
}

// version is HMAC-SHA256 of the canonical data under the salt.
func (s Secret) version() string {
	b, _ := Marshal(s.Data) // a map of strings always encodes
	m := hmac.New(sha256.New, []byte(s.Salt))
	m.Write(b)
	return hex.EncodeToString(m.Sum(nil))[:32]
}

// Keys returns the secret's keys, sorted.
func (s Secret) Keys() []string {
	keys := make([]string, 0, len(s.Data))
	for k := range s.Data {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// Validate checks the name, the keys and the size; errors name the field.
func (s *Secret) Validate() error {
	e := newErrs()
	if err := ValidateSecretName(s.Name); err != nil {
		e.at("name").add("%v", err)
	}
	if len(s.Data) == 0 {
		e.at("data").add("is required: a secret holds at least one key")
	}
	if len(s.Data) > MaxSecretKeys {
		e.at("data").add("%d keys is more than the limit of %d", len(s.Data), MaxSecretKeys)
	}
	size := 0
	for _, k := range sortedKeys(s.Data) {
		if !secretKeyRe.MatchString(k) {
			e.at("data").at(k).add("is not a key: letters, digits, '.', '_' and '-', at most 253")
		}
		if !utf8.ValidString(s.Data[k]) {
			e.at("data").at(k).add("is not UTF-8 text")
		}
		size += len(k) + len(s.Data[k])
	}
	if size > MaxSecretBytes {
		e.at("data").add("%d bytes is more than the limit of %d", size, MaxSecretBytes)
	}
	return e.err()
}

// ValidateSecretName checks one RFC 1123 DNS label, as for deployments.
func ValidateSecretName(s string) error { return validateLabel(s) }

// DecodeSecret reads a stored secret and checks that its version matches
// its data.
func DecodeSecret(data []byte) (Secret, error) {
	var s Secret
	if err := decodeStored(data, MaxSecretBytes+4096, &s, func() int { return s.V }); err != nil {
		return Secret{}, err
	}
	if err := s.Validate(); err != nil {
		return Secret{}, err
	}
	if !hmac.Equal([]byte(s.Version), []byte(s.version())) {
		return Secret{}, fmt.Errorf("secret %q: version does not match its data", s.Name)
	}
	return s, nil
}

// SecretKeyRef names one key of one secret, where a resource takes a value
// from it.
type SecretKeyRef struct {
	Secret string `json:"secret"`
	Key    string `json:"key"`
}

func (r SecretKeyRef) validate(e errs) {
	if r.Secret == "" {
		e.at("secret").add("is required")
	} else if err := ValidateSecretName(r.Secret); err != nil {
		e.at("secret").add("%v", err)
	}
	if r.Key == "" {
		e.at("key").add("is required")
	} else if !secretKeyRe.MatchString(r.Key) {
		e.at("key").add("%q is not a secret key: letters, digits, '.', '_' and '-'", r.Key)
	}
}

// SecretUse is one place a resource takes a value from a secret.
type SecretUse struct {
	Field string // e.g. spec.resources[0].spec.contentFrom
	Ref   SecretKeyRef
	// OneLine: the value must be one line (an environment variable, a
	// password kept in a password file); a File's content may be any.
	OneLine bool
}

// OneLineProblem says why value cannot be used where a one-line value is
// needed ("" when it can).
func OneLineProblem(value string) string {
	if strings.ContainsAny(value, "\n\r\x00") {
		return "holds a line break or a NUL byte, and is used where the value must be one line (an environment variable, a password)"
	}
	return ""
}

// SecretUses lists where a decoded spec takes values from secrets, with
// fields under prefix (e.g. "spec.resources[0]").
func SecretUses(prefix string, spec any) []SecretUse {
	var out []SecretUse
	envUses := func(field string, m map[string]SecretKeyRef) {
		for _, k := range sortedKeys(m) {
			out = append(out, SecretUse{Field: prefix + ".spec." + field + "." + k, Ref: m[k], OneLine: true})
		}
	}
	switch s := spec.(type) {
	case *FileSpec:
		if s.ContentFrom != nil {
			out = append(out, SecretUse{Field: prefix + ".spec.contentFrom", Ref: *s.ContentFrom})
		}
	case *ContainerSpec:
		envUses("secretEnv", s.SecretEnv)
	case *ShellJobSpec:
		envUses("secretEnv", s.SecretEnv)
	case *PostgresClusterSpec:
		if s.SuperuserPassword != nil {
			out = append(out, SecretUse{Field: prefix + ".spec.superuserPassword", Ref: *s.SuperuserPassword, OneLine: true})
		}
		for i, r := range s.Roles {
			if r.Password != nil {
				out = append(out, SecretUse{Field: fmt.Sprintf("%s.spec.roles[%d].password", prefix, i), Ref: *r.Password, OneLine: true})
			}
		}
	}
	return out
}

// SecretUses lists where the deployment's resources take values from
// secrets. Resources that do not decode are skipped (Validate reports them).
func (d Deployment) SecretUses() []SecretUse {
	var out []SecretUse
	for i, r := range d.Spec.Resources {
		prefix := fmt.Sprintf("spec.resources[%d]", i)
		spec, err := DecodeSpec(prefix, r)
		if err != nil {
			continue
		}
		out = append(out, SecretUses(prefix, spec)...)
	}
	return out
}

// SecretNames are the names of the secrets the deployment uses, sorted and
// without repeats.
func (d Deployment) SecretNames() []string {
	seen := map[string]bool{}
	var names []string
	for _, u := range d.SecretUses() {
		if !seen[u.Ref.Secret] {
			seen[u.Ref.Secret] = true
			names = append(names, u.Ref.Secret)
		}
	}
	sort.Strings(names)
	return names
}
