package files_test

import (
	"io/fs"
	"reflect"
	"testing"

	"github.com/harmony-fleet/harmony/internal/agent/files"
)

func TestSpecial(t *testing.T) {
	for _, tc := range []struct {
		mode fs.FileMode
		want []string
	}{
		{0o755, nil},
		{0o777, nil},
		{fs.ModeSetuid | 0o755, []string{"setuid"}},
		{fs.ModeSetgid | 0o755, []string{"setgid"}},
		{fs.ModeSticky | 0o644, []string{"sticky"}},
		{files.SpecialBits | 0o777, []string{"setuid", "setgid", "sticky"}},
	} {
		if got := files.Special(tc.mode); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("Special(%v) = %v, want %v", tc.mode, got, tc.want)
		}
	}
}
