package web

import (
	"os/exec"
	"strings"
	"testing"
)

// The dashboard reads the fleet in the HTTP API's types (api/httpapi), as
// the CLI does (docs/adr/0021-http-contract.md): neither it nor its tests
// may depend on the operator, whose types would otherwise leak back into
// the pages. (internal/failover stays: its status is not part of the API.)
func TestDashboardDoesNotDependOnTheOperator(t *testing.T) {
	goCmd, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("go list needs the go command, which runs this test: %v", err)
	}
	out, err := exec.Command(goCmd, "list", "-f", "{{join .Deps \"\\n\"}}\n{{join .TestImports \"\\n\"}}", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, pkg := range strings.Fields(string(out)) {
		if strings.HasSuffix(pkg, "/internal/operator") || strings.Contains(pkg, "/internal/operator/") {
			t.Errorf("internal/web depends on %s; read the fleet through Fleet, in api/httpapi's types", pkg)
		}
	}
	if !strings.Contains(string(out), "/api/httpapi\n") {
		t.Errorf("go list does not show api/httpapi among the dependencies; the check is not looking at the right thing:\n%s", out)
	}
}
