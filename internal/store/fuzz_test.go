package store_test

import (
	"strings"
	"testing"

	"github.com/harmony-fleet/harmony/internal/store"
)

// FuzzKeys checks the validators of KV keys and filters, which are built
// from names that arrive over the API (device ids, deployment names): a
// valid key is one literal NATS subject, never a wildcard, and matches
// exactly the filters it should.
func FuzzKeys(f *testing.F) {
	for _, s := range [][2]string{
		{"kitchen.home.web", "kitchen.home.*"},
		{"kitchen.home.web", "kitchen.>"},
		{"heartbeat.n1", "heartbeat.*"},
		{"cluster-state", ""},
		{"a.b", ">"},
		{"a.b.c", "a.*.c"},
		{"A/b=c_d-e", "A/b=c_d-e"},
		{"_kv.x", "_kv.>"},
		{"a..b", "a.*.b"},
		{"a.*", "a.>.b"},
		{"a b", "a\x00"},
		{"../../etc/passwd", "..>"},
		{"\xff.ä", "*.*"},
		{".a", "a."},
		{strings.Repeat("a.", 5000) + "a", strings.Repeat("*.", 5000) + ">"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, key, filter string) {
		if store.ValidKey(key) {
			if strings.HasPrefix(key, "_kv") {
				t.Fatalf("reserved key %q accepted", key)
			}
			for _, tok := range strings.Split(key, ".") {
				if tok == "" || tok == "*" || tok == ">" {
					t.Fatalf("key %q accepted with token %q", key, tok)
				}
			}
			for _, c := range []byte(key) {
				if c <= ' ' || c >= 0x7f || c == '*' || c == '>' {
					t.Fatalf("key %q accepted with byte %q", key, c)
				}
			}
			if !store.ValidFilter(key) || !store.MatchFilter(key, key) || !store.MatchFilter("", key) || !store.MatchFilter(">", key) {
				t.Fatalf("key %q is not a filter matching itself", key)
			}
			// Each token may be replaced by '*', and any tail by '>'
			// (a few tokens of long keys, to stay fast).
			toks := strings.Split(key, ".")
			idx := []int{0, len(toks) / 2, len(toks) - 1}
			if len(toks) <= 16 {
				idx = idx[:0]
				for i := range toks {
					idx = append(idx, i)
				}
			}
			for _, i := range idx {
				w := append([]string(nil), toks...)
				w[i] = "*"
				if !store.MatchFilter(strings.Join(w, "."), key) {
					t.Fatalf("%q does not match %q", strings.Join(w, "."), key)
				}
				if tail := strings.Join(append(append([]string(nil), toks[:i]...), ">"), "."); !store.MatchFilter(tail, key) {
					t.Fatalf("%q does not match %q", tail, key)
				}
			}
			if store.MatchFilter(key+".>", key) || store.MatchFilter(key+".*", key) {
				t.Fatalf("a longer filter matches %q", key)
			}
		}
		if store.ValidFilter(filter) && store.ValidKey(key) && store.MatchFilter(filter, key) {
			// A match is token by token: a literal token only matches
			// itself.
			ft, kt := strings.Split(filter, "."), strings.Split(key, ".")
			for i, f := range ft {
				if f == ">" {
					break
				}
				if i >= len(kt) || (f != "*" && f != kt[i]) {
					t.Fatalf("%q matched %q", filter, key)
				}
			}
			if ft[len(ft)-1] != ">" && len(ft) != len(kt) {
				t.Fatalf("%q matched %q of another length", filter, key)
			}
		}
		if store.ValidFilter(filter) && !strings.ContainsAny(filter, "*>") && store.ValidKey(filter) != !strings.HasPrefix(filter, "_kv") {
			t.Fatalf("literal filter %q: ValidKey %v", filter, store.ValidKey(filter))
		}
	})
}
