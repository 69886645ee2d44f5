package v1alpha1

import (
	"fmt"
	"strings"
)

// ValidateDeviceID checks an RFC 1123 DNS subdomain of at most 253 characters.
func ValidateDeviceID(s string) error {
	if len(s) == 0 || len(s) > 253 {
		return fmt.Errorf("must be 1 to 253 characters, got %d", len(s))
	}
	for _, label := range strings.Split(s, ".") {
		if err := validateLabel(label); err != nil {
			return err
		}
	}
	return nil
}

// ValidateDeploymentName checks one RFC 1123 DNS label (no dots).
func ValidateDeploymentName(s string) error { return validateLabel(s) }

func validateLabel(s string) error {
	if len(s) == 0 || len(s) > 63 {
		return fmt.Errorf("%q: each name part must be 1 to 63 characters", s)
	}
	for i, r := range s {
		alnum := r >= 'a' && r <= 'z' || r >= '0' && r <= '9'
		if !alnum && (r != '-' || i == 0 || i == len(s)-1) {
			return fmt.Errorf("%q: only lowercase letters, digits and '-', starting and ending with a letter or digit", s)
		}
	}
	return nil
}

// DeviceKey is the key of a (device, deployment) pair: <device>.<deployment>.
func DeviceKey(device, deployment string) string { return device + "." + deployment }

// SplitDeviceKey splits a <device>.<deployment> key at its last dot.
func SplitDeviceKey(key string) (device, deployment string, err error) {
	i := strings.LastIndexByte(key, '.')
	if i < 0 {
		return "", "", fmt.Errorf("key %q: want <device>.<deployment>", key)
	}
	device, deployment = key[:i], key[i+1:]
	if err := ValidateDeviceID(device); err != nil {
		return "", "", fmt.Errorf("key %q: device: %w", key, err)
	}
	if err := ValidateDeploymentName(deployment); err != nil {
		return "", "", fmt.Errorf("key %q: deployment: %w", key, err)
	}
	return device, deployment, nil
}

// ValidateLabelKey checks a label key: an optional DNS-subdomain prefix and
// '/', then a name of at most 63 characters of [A-Za-z0-9_.-] that starts and
// ends with a letter or digit.
func ValidateLabelKey(k string) error {
	name := k
	if prefix, rest, ok := strings.Cut(k, "/"); ok {
		if err := ValidateDeviceID(prefix); err != nil {
			return fmt.Errorf("prefix: %w", err)
		}
		name = rest
	}
	if name == "" {
		return fmt.Errorf("name must not be empty")
	}
	return validateLabelValue(name)
}

// ValidateLabelValue checks a label value: empty, or like a label key's name.
func ValidateLabelValue(v string) error {
	if v == "" {
		return nil
	}
	return validateLabelValue(v)
}

func validateLabelValue(v string) error {
	if len(v) > 63 {
		return fmt.Errorf("%q: at most 63 characters", v)
	}
	for i, r := range v {
		alnum := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9'
		if !alnum && (i == 0 || i == len(v)-1 || (r != '-' && r != '_' && r != '.')) {
			return fmt.Errorf("%q: letters, digits, '-', '_' and '.', starting and ending with a letter or digit", v)
		}
	}
	return nil
}

func validateLabels(e errs, labels map[string]string) {
	for _, k := range sortedKeys(labels) {
		if err := ValidateLabelKey(k); err != nil {
			e.at(k).add("label key: %v", err)
		}
		if err := ValidateLabelValue(labels[k]); err != nil {
			e.at(k).add("label value: %v", err)
		}
	}
}
