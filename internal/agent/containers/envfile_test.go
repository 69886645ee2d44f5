package containers

import (
	"os"
	"strings"
	"testing"
)

// A secret value given to a container's environment must be one line:
// podman's env file would otherwise read the rest as other variables.
func TestEnvFileRefusesAValueOfSeveralLines(t *testing.T) {
	for _, v := range []string{"a\nEVIL=1", "a\r", "a\x00b"} {
		if f, err := writeEnvFile(map[string]string{"OK": "x", "TOKEN": v}); err == nil {
			os.Remove(f)
			t.Errorf("%q: written", v)
		} else if !strings.Contains(err.Error(), "secretEnv TOKEN: a value given to a container's environment must be one line") {
			t.Errorf("%q: %v", v, err)
		}
	}
	f, err := writeEnvFile(map[string]string{"B": "two words", "A": "x=y"})
	if err != nil {
		t.Fatal(err)
	}
	defer os.Remove(f)
	b, err := os.ReadFile(f)
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != "A=x=y\nB=two words\n" {
		t.Errorf("env file %q", b)
	}
	if st, err := os.Stat(f); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("env file mode %v, %v", st.Mode(), err)
	}
}
