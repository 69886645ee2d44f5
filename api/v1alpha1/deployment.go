package v1alpha1

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"reflect"
	"strings"
)

// Deployment is what an owner declares: resources for the devices its
// selector matches.
type Deployment struct {
	APIVersion string         `json:"apiVersion"`
	Kind       string         `json:"kind"`
	Metadata   Metadata       `json:"metadata"`
	Spec       DeploymentSpec `json:"spec"`
}

// Metadata names a deployment. Generation is set by the server and grows by
// one each time the spec changes.
type Metadata struct {
	Name       string            `json:"name"`
	Labels     map[string]string `json:"labels,omitempty"`
	Generation int64             `json:"generation,omitempty"`
	// UID is set by the server when the deployment is created and never
	// changes; a deployment deleted and created again under the same name
	// gets a new one, so (UID, Generation) names one rendered generation
	// for good, although the generation starts again at 1. What a user
	// writes here is ignored. Empty for deployments created before UIDs.
	UID string `json:"uid,omitempty"`
}

// DeploymentSpec is the declared part.
type DeploymentSpec struct {
	Selector  Selector   `json:"selector"`
	Resources []Resource `json:"resources"`
	// Rollout, when set, sends a change batch by batch (rollout.go).
	Rollout *RolloutSpec `json:"rollout,omitempty"`
}

// Selector picks devices by their labels, like Kubernetes label selectors.
// An empty selector matches every device.
type Selector struct {
	MatchLabels      map[string]string `json:"matchLabels,omitempty"`
	MatchExpressions []Requirement     `json:"matchExpressions,omitempty"`
}

// Requirement is one expression of a selector.
type Requirement struct {
	Key      string   `json:"key"`
	Operator string   `json:"operator"` // In, NotIn, Exists, DoesNotExist
	Values   []string `json:"values,omitempty"`
}

// Matches reports whether labels satisfy every part of the selector.
func (s Selector) Matches(labels map[string]string) bool {
	for k, v := range s.MatchLabels {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	for _, r := range s.MatchExpressions {
		v, ok := labels[r.Key]
		switch r.Operator {
		case "In":
			if !ok || !contains(r.Values, v) {
				return false
			}
		case "NotIn":
			if ok && contains(r.Values, v) {
				return false
			}
		case "Exists":
			if !ok {
				return false
			}
		case "DoesNotExist":
			if ok {
				return false
			}
		default:
			return false
		}
	}
	return true
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// StoredDeployment is the value of the deployments bucket.
type StoredDeployment struct {
	V          int        `json:"v"`
	Deployment Deployment `json:"deployment"`
	// RolloutFrom is set when this generation rolls out batch by batch
	// (spec.rollout): the deployment the devices its rollout has not
	// reached keep, the last generation every device had.
	RolloutFrom *Deployment `json:"rolloutFrom,omitempty"`
}

// ParseDeployments reads one or more YAML (or JSON) documents separated by
// "---" lines. Unknown fields are errors; errors say which document and, for
// syntax errors, which line.
func ParseDeployments(data []byte) ([]Deployment, error) {
	if err := checkInput(data, MaxDeploymentBytes*4); err != nil {
		return nil, err
	}
	var out []Deployment
	for i, doc := range splitDocuments(data) {
		if len(bytes.TrimSpace(stripComments(doc.text))) == 0 {
			continue
		}
		var d Deployment
		if err := decodeKeepingText(doc.text, &d); err != nil {
			line, reason := explainYAML(doc.text, doc.line, reflect.TypeFor[Deployment](), err)
			if line > 0 {
				return nil, fmt.Errorf("document %d line %d: %s", i+1, line, reason)
			}
			return nil, fmt.Errorf("document %d (from line %d): %s", i+1, doc.line, reason)
		}
		out = append(out, d)
	}
	if len(out) == 0 {
		return nil, errors.New("no document found")
	}
	return out, nil
}

type document struct {
	text []byte
	line int // first line of the document in the file, 1-based
}

func splitDocuments(data []byte) []document {
	var docs []document
	var cur bytes.Buffer
	start, n := 1, 0
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64<<10), len(data)+1)
	for sc.Scan() {
		n++
		line := sc.Text()
		if strings.TrimRight(line, " \t") == "---" {
			docs = append(docs, document{text: append([]byte(nil), cur.Bytes()...), line: start})
			cur.Reset()
			start = n + 1
			continue
		}
		cur.WriteString(line)
		cur.WriteByte('\n')
	}
	return append(docs, document{text: cur.Bytes(), line: start})
}

func stripComments(b []byte) []byte {
	var out bytes.Buffer
	for _, line := range strings.Split(string(b), "\n") {
		if t := strings.TrimSpace(line); t != "" && !strings.HasPrefix(t, "#") {
			out.WriteString(line)
		}
	}
	return out.Bytes()
}

// cleanYAMLError drops the library's wrapping so the message starts with
// what is wrong ("line 7: ...", or the unknown field).
func cleanYAMLError(err error) string {
	s := err.Error()
	for _, p := range []string{"error converting YAML to JSON: yaml: ", "error converting YAML to JSON: ", "error unmarshaling JSON: while decoding JSON: ", "json: "} {
		s = strings.Replace(s, p, "", 1)
	}
	return s
}

// Validate checks the whole deployment; every problem is reported with its
// field. Unknown resource kinds are errors here (the server only accepts
// kinds it knows).
func (d *Deployment) Validate() error {
	e := newErrs()
	if d.APIVersion != APIVersion {
		e.at("apiVersion").add("%q: want %q", d.APIVersion, APIVersion)
	}
	if d.Kind != "Deployment" {
		e.at("kind").add("%q: want \"Deployment\"", d.Kind)
	}
	if d.Metadata.Name == "" {
		e.at("metadata.name").add("required")
	} else if err := ValidateDeploymentName(d.Metadata.Name); err != nil {
		e.at("metadata.name").add("%v", err)
	}
	validateLabels(e.at("metadata.labels"), d.Metadata.Labels)
	d.Spec.Selector.validate(e.at("spec.selector"))
	if d.Spec.Rollout != nil {
		d.Spec.Rollout.validate(e.at("spec.rollout"))
	}
	rs := e.at("spec.resources")
	if len(d.Spec.Resources) > MaxResources {
		rs.add("%d resources is more than the limit of %d", len(d.Spec.Resources), MaxResources)
	}
	ids := map[string]bool{}
	for i, r := range d.Spec.Resources {
		re := rs.index(i)
		if err := validateLabel(r.ID); err != nil {
			re.at("id").add("%v", err)
		} else if ids[r.ID] {
			re.at("id").add("%q is used by another resource of this deployment", r.ID)
		}
		ids[r.ID] = true
		if _, err := DecodeSpec(re.path, r); err != nil {
			var list FieldErrors
			var unknown *UnknownKindError
			switch {
			case errors.As(err, &list):
				*e.list = append(*e.list, list...)
			case errors.As(err, &unknown):
				re.at("kind").add("unknown resource kind %q (known: File, Container, SystemdUnit, ShellJob)", r.Kind)
			default:
				re.add("%v", err)
			}
		}
	}
	return e.err()
}

func (s Selector) validate(e errs) {
	validateLabels(e.at("matchLabels"), s.MatchLabels)
	for i, r := range s.MatchExpressions {
		re := e.at("matchExpressions").index(i)
		if err := ValidateLabelKey(r.Key); err != nil {
			re.at("key").add("%v", err)
		}
		switch r.Operator {
		case "In", "NotIn":
			if len(r.Values) == 0 {
				re.at("values").add("must not be empty for %s", r.Operator)
			}
		case "Exists", "DoesNotExist":
			if len(r.Values) != 0 {
				re.at("values").add("must be empty for %s", r.Operator)
			}
		default:
			re.at("operator").add("%q: must be In, NotIn, Exists or DoesNotExist", r.Operator)
		}
		for j, v := range r.Values {
			if err := ValidateLabelValue(v); err != nil {
				re.at("values").index(j).add("%v", err)
			}
		}
	}
}

// Canonical returns the deployment with every resource spec re-encoded with
// defaults applied. Call it on a validated deployment.
func (d Deployment) Canonical() (Deployment, error) {
	out := d
	out.Spec.Resources = make([]Resource, len(d.Spec.Resources))
	for i, r := range d.Spec.Resources {
		c, err := CanonicalResource(fmt.Sprintf("spec.resources[%d]", i), r)
		if err != nil {
			return d, err
		}
		out.Spec.Resources[i] = c
	}
	return out, nil
}

// SpecHash is a digest of the canonical spec: the server bumps the
// generation only when it changes.
func (d Deployment) SpecHash() (string, error) {
	c, err := d.Canonical()
	if err != nil {
		return "", err
	}
	b, err := Marshal(c.Spec)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]), nil
}

// MaxStoredDeploymentBytes bounds a value of the deployments bucket: a
// deployment and, while it rolls out, the one it rolls out from.
const MaxStoredDeploymentBytes = 2 * MaxDeploymentBytes

// DecodeStoredDeployment reads a value of the deployments bucket.
func DecodeStoredDeployment(data []byte) (StoredDeployment, error) {
	var s StoredDeployment
	err := decodeStored(data, MaxStoredDeploymentBytes, &s, func() int { return s.V })
	return s, err
}
