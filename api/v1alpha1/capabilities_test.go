package v1alpha1

import "testing"

// Can finds a capability under its name, and shell_jobs also under
// "shelljob", the name agents announced before ADR 0015.
func TestCanReadsOlderNames(t *testing.T) {
	older := DeviceInfo{Capabilities: []string{"exec", "shelljob"}}
	newer := DeviceInfo{Capabilities: []string{CapabilityExec, CapabilityShellJob, CapabilitySystemdUnitFiles}}
	for _, d := range []DeviceInfo{older, newer} {
		if !d.Can(CapabilityExec) || !d.Can(CapabilityShellJob) {
			t.Errorf("%v: Can(exec)=%v Can(shell_jobs)=%v", d.Capabilities, d.Can(CapabilityExec), d.Can(CapabilityShellJob))
		}
		if d.Can(CapabilityHostNetwork) {
			t.Errorf("%v: announces what it does not", d.Capabilities)
		}
	}
	if !newer.Can(CapabilitySystemdUnitFiles) || older.Can(CapabilitySystemdUnitFiles) {
		t.Error("systemd_unit_files")
	}
}
