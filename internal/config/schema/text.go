package schema

import (
	"go.yaml.in/yaml/v3"
)

// Text indexes the scalars of one YAML document as written, for
// Options.Text: YAML 1.1 (what the decoders here follow) reads a bare y,
// no, on, off, 0644 or 1.0 as a boolean or a number, and a string field
// should get the text instead ("y", not "true"). Block and flow style are
// both found.
type Text struct{ root *yaml.Node }

// NewText parses doc; a document that does not parse has no text to give
// (the decoder reports the syntax error).
func NewText(doc []byte) Text {
	var n yaml.Node
	if yaml.Unmarshal(doc, &n) != nil {
		return Text{}
	}
	return Text{root: &n}
}

// Scalar returns the text of the plain (unquoted) scalar at path.
func (t Text) Scalar(path []any) (string, bool) {
	n := t.root
	if n == nil {
		return "", false
	}
	if n.Kind == yaml.DocumentNode {
		if len(n.Content) == 0 {
			return "", false
		}
		n = n.Content[0]
	}
	for _, p := range path {
		n = deref(n)
		switch p := p.(type) {
		case string:
			if n.Kind != yaml.MappingNode {
				return "", false
			}
			var next *yaml.Node
			for i := 0; i+1 < len(n.Content); i += 2 {
				if n.Content[i].Value == p {
					next = n.Content[i+1]
				}
			}
			if next == nil {
				return "", false
			}
			n = next
		case int:
			if n.Kind != yaml.SequenceNode || p < 0 || p >= len(n.Content) {
				return "", false
			}
			n = n.Content[p]
		default:
			return "", false
		}
	}
	n = deref(n)
	if n.Kind != yaml.ScalarNode || n.Style != 0 {
		return "", false
	}
	return n.Value, true
}

func deref(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}
