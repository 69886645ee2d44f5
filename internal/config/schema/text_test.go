package schema

import "testing"

// Text gives what was written for plain scalars, in block and flow style;
// quoted scalars are strings already and give nothing.
func TestTextScalar(t *testing.T) {
	doc := []byte("name: y\nlabels: {site: no, tier: 1.0, q: \"yes\"}\nlist: [on, 0644]\nnested:\n  - mode: 0644\nref: &a off\nalias: *a\n")
	x := NewText(doc)
	for _, c := range []struct {
		path []any
		want string
		ok   bool
	}{
		{[]any{"name"}, "y", true},
		{[]any{"labels", "site"}, "no", true},
		{[]any{"labels", "tier"}, "1.0", true},
		{[]any{"labels", "q"}, "", false},
		{[]any{"list", 0}, "on", true},
		{[]any{"list", 1}, "0644", true},
		{[]any{"nested", 0, "mode"}, "0644", true},
		{[]any{"alias"}, "off", true},
		{[]any{"labels"}, "", false},
		{[]any{"missing"}, "", false},
		{[]any{"list", 5}, "", false},
	} {
		got, ok := x.Scalar(c.path)
		if got != c.want || ok != c.ok {
			t.Errorf("%v: %q %v, want %q %v", c.path, got, ok, c.want, c.ok)
		}
	}
	if _, ok := NewText([]byte("a: [b")).Scalar([]any{"a"}); ok {
		t.Error("a document that does not parse gave text")
	}
}
