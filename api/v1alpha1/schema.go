package v1alpha1

import (
	"bytes"
	"encoding/json"
	"reflect"
	"regexp"
	"strconv"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/harmony-fleet/harmony/internal/config/schema"
)

// explainYAML says why strict decoding of one YAML document into a value of
// type t failed, in the document's terms: the line in the file (the
// document starts at line first; 0 when not known), the field as written
// and what it takes. It is asked only after decoding failed, so it never
// changes what is accepted.
func explainYAML(doc []byte, first int, t reflect.Type, decodeErr error) (line int, reason string) {
	js, err := yaml.YAMLToJSON(doc)
	if err != nil {
		reason = strings.TrimPrefix(cleanYAMLError(err), "yaml: ")
		if m := syntaxLineRe.FindStringSubmatch(reason); m != nil {
			n, _ := strconv.Atoi(m[1])
			return first + n - 1, "not valid YAML: " + reason[len(m[0]):]
		}
		return 0, "not valid YAML: " + reason
	}
	var tree any
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.UseNumber()
	if dec.Decode(&tree) != nil {
		return 0, cleanYAMLError(decodeErr)
	}
	lines := schema.NewLines(doc)
	_, serr := schema.Check(tree, t, schema.Options{Text: schema.NewText(doc).Scalar})
	if serr == nil {
		return 0, cleanYAMLError(decodeErr)
	}
	if n := lines.Find(serr.At()); n > 0 {
		line = first + n - 1
	}
	return line, fieldReason(serr).Error()
}

var syntaxLineRe = regexp.MustCompile(`^line (\d+): `)

// decodeKeepingText decodes one YAML document into d strictly, giving each
// string field the text written for it: YAML 1.1 reads a bare y, no, on or
// 0644 as a boolean or a number, which would make `name: y` the deployment
// "true". Resource specs stay raw (their kind says their type); a bare
// scalar there where a string is wanted is refused by DecodeSpec.
func decodeKeepingText(doc []byte, d *Deployment) error {
	js, err := yaml.YAMLToJSON(doc)
	if err != nil {
		return err
	}
	var tree any
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.UseNumber()
	if err := dec.Decode(&tree); err != nil {
		return err
	}
	if tree == nil {
		return yaml.UnmarshalStrict(doc, d) // as before: what an empty document decodes to
	}
	tree, serr := schema.Check(tree, reflect.TypeFor[Deployment](), schema.Options{Text: schema.NewText(doc).Scalar})
	if serr != nil {
		return serr
	}
	if js, err = json.Marshal(tree); err != nil {
		return err
	}
	dec = json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	return dec.Decode(d)
}

// explainJSON says why strict decoding of raw into a value of type t
// failed, as a field error under prefix (e.g. "spec.resources[0].spec").
func explainJSON(prefix string, raw []byte, t reflect.Type, decodeErr error) *FieldError {
	var tree any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if dec.Decode(&tree) == nil {
		if _, serr := schema.Check(tree, t, schema.Options{StrictStrings: true}); serr != nil {
			fe := fieldReason(serr)
			fe.Field = joinPath(prefix, fe.Field)
			return fe
		}
	}
	return &FieldError{Field: prefix, Reason: strings.TrimPrefix(decodeErr.Error(), "json: ")}
}

// fieldReason turns a schema error into a field error: an unknown key is
// the field at fault ("spec.foo: unknown field (known: ...)").
func fieldReason(e *schema.Error) *FieldError {
	if e.Key != "" {
		return &FieldError{Field: schema.PathString(e.At()), Reason: "unknown field (known: " + strings.Join(e.Known, ", ") + ")"}
	}
	return &FieldError{Field: schema.PathString(e.Path), Reason: e.Reason}
}

func joinPath(prefix, field string) string {
	switch {
	case field == "":
		return prefix
	case prefix == "" || strings.HasPrefix(field, "["):
		return prefix + field
	}
	return prefix + "." + field
}
