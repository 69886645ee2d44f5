package v1alpha1

import (
	"fmt"
	"strings"
)

// ParseSelector reads the short selector form of the API and CLI:
// "k=v,k2=v2" (equality only; spaces around keys and values are ignored).
func ParseSelector(s string) (Selector, error) {
	sel := Selector{MatchLabels: map[string]string{}}
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part == "" {
			continue
		}
		k, v, ok := strings.Cut(part, "=")
		if !ok {
			return sel, fmt.Errorf("%q: want key=value", part)
		}
		sel.MatchLabels[strings.TrimSpace(k)] = strings.TrimSpace(v)
	}
	return sel, nil
}
