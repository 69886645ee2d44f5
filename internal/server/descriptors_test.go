package server

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

func TestWarnDescriptors(t *testing.T) {
	for _, c := range []struct {
		devices, maxConn int
		warn             bool
	}{
		{0, 100, false},
		{10_000, 18_000, false},
		{10_000, 11_000, false}, // exactly a tenth to spare
		{10_000, 10_999, true},
		{20_000, 18_000, true},
	} {
		var buf bytes.Buffer
		warnDescriptors(slog.New(slog.NewTextHandler(&buf, nil)), c.devices, c.maxConn)
		got := strings.Contains(buf.String(), "open-files limit is too low")
		if got != c.warn {
			t.Errorf("%d devices, %d connections allowed: warned %v, want %v (%q)", c.devices, c.maxConn, got, c.warn, buf.String())
		}
		if got && !strings.Contains(buf.String(), "LimitNOFILE") {
			t.Errorf("the warning does not say what to raise: %q", buf.String())
		}
	}
}
