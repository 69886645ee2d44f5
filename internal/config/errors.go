package config

import (
	"errors"
	"sort"
)

// joinErrors returns the errors sorted by setting (so messages are stable),
// joined; nil when there are none.
func joinErrors(errs []error) error {
	sort.SliceStable(errs, func(i, j int) bool {
		var a, b *Error
		if errors.As(errs[i], &a) && errors.As(errs[j], &b) {
			return a.Setting < b.Setting
		}
		return false
	})
	return errors.Join(errs...)
}
