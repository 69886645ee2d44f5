package schema

import (
	"reflect"
	"testing"
)

func TestLinesFind(t *testing.T) {
	text := []byte("a: 1\nb:\n  c: 2\n  list:\n    - x: 1\n    - x: 2\n      y: 3\nd: [1, 2]\n")
	l := NewLines(text)
	for _, tc := range []struct {
		path []any
		want int
	}{
		{[]any{"a"}, 1},
		{[]any{"b", "c"}, 3},
		{[]any{"b", "list", 1}, 6},
		{[]any{"b", "list", 1, "y"}, 7},
		{[]any{"d", 1}, 8}, // flow style: the key's line
		{[]any{"nope"}, 0},
	} {
		if got := l.Find(tc.path); got != tc.want {
			t.Errorf("Find(%v) = %d, want %d", tc.path, got, tc.want)
		}
	}
	if s, ok := l.Scalar([]any{"a"}); !ok || s != "1" {
		t.Errorf("Scalar(a) = %q %v", s, ok)
	}
}

func TestCheck(t *testing.T) {
	type inner struct {
		N int `json:"n"`
	}
	type cfg struct {
		List  []string       `json:"list"`
		In    inner          `json:"in"`
		Items []inner        `json:"items"`
		M     map[string]int `json:"m,omitempty"`
	}
	tree := map[string]any{"list": "a, b,,c"}
	got, err := Check(tree, reflect.TypeFor[cfg](), Options{CommaLists: true})
	if err != nil || !reflect.DeepEqual(got.(map[string]any)["list"], []any{"a", "b", "c"}) {
		t.Fatalf("comma list: %v %v", got, err)
	}
	if _, err := Check(map[string]any{"list": "a"}, reflect.TypeFor[cfg](), Options{}); err == nil || err.Error() != `list: want a list of strings, got a string ("a"); write a list: ["a"]` {
		t.Errorf("no comma lists: %v", err)
	}
	_, err = Check(map[string]any{"items": []any{map[string]any{"n": 1.0}, map[string]any{"x": 1.0}}}, reflect.TypeFor[cfg](), Options{})
	if err == nil || PathString(err.At()) != "items[1].x" || err.Reason != `unknown field "x" (known: n)` {
		t.Errorf("unknown key: %+v", err)
	}
	_, err = Check(map[string]any{"m": map[string]any{"k": "v"}}, reflect.TypeFor[cfg](), Options{})
	if err == nil || err.Error() != `m.k: want a whole number, got a string ("v")` {
		t.Errorf("map value: %v", err)
	}
}
