package pg_test

import (
	osexec "os/exec"
	"strings"
	"testing"

	v1 "github.com/harmony-fleet/harmony/api/v1alpha1"
	"github.com/harmony-fleet/harmony/internal/testutil/pgtest"
)

// The settings catalogue apply checks parameters against
// (api/v1alpha1/pgsettings/15.tsv, from scripts/pg-settings.sh) names the
// settings of the installed PostgreSQL 15, with their contexts.
func TestSettingsCatalogueMatchesPostgres(t *testing.T) {
	pgtest.Setup(t)
	out, err := osexec.Command(pgtest.BinDir+"/postgres", "--describe-config").Output()
	if err != nil {
		t.Fatal(err)
	}
	cat := v1.PGSettings(15)
	seen := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Split(line, "\t")
		if len(f) < 2 {
			continue
		}
		s, ok := cat[strings.ToLower(f[0])]
		switch {
		case !ok:
			t.Errorf("%s: in PostgreSQL 15, not in the catalogue", f[0])
		case s.Context != f[1]:
			t.Errorf("%s: context %s in PostgreSQL 15, %s in the catalogue", f[0], f[1], s.Context)
		}
		seen++
	}
	if seen < 300 {
		t.Fatalf("postgres --describe-config listed %d settings", seen)
	}
}
