package agent_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/harmony-fleet/harmony/api/v1alpha1"
)

// Hostile desired state, as a compromised control plane or a forged store
// write could send it, is refused with a typed status naming what is wrong,
// and nothing on the device changes: the last good generation stays
// enforced and no file appears outside the allowed roots.
func TestHostileDesiredStateChangesNothing(t *testing.T) {
	f := startFleet(t)
	root := t.TempDir()
	outside := t.TempDir()
	startAgent(t, agentConfig(t, f.srv.ClientURL(), root, t.TempDir()))

	good := filepath.Join(root, "good")
	f.putDesired(t, v1.DesiredState{V: 1, Device: "dev-1", Deployment: "web", Generation: 1,
		Resources: []v1.Resource{fileRes("good", good, "v1\n", "")}})
	f.waitStatus(t, "web", readyAt(1))

	// A symlink inside the root that leads out of it.
	if err := os.Symlink(outside, filepath.Join(root, "link")); err != nil {
		t.Fatal(err)
	}
	typed := func(gen int64, rs ...v1.Resource) []byte {
		b, err := v1.Marshal(v1.DesiredState{V: 1, Device: "dev-1", Deployment: "web", Generation: gen, Resources: rs})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	spec := func(v any) json.RawMessage { b, _ := json.Marshal(v); return b }
	nested := `{"v":1,"device":"dev-1","deployment":"web","generation":9,"resources":[{"id":"x","kind":"File","spec":` +
		strings.Repeat("[", 10000) + strings.Repeat("]", 10000) + `}]}`
	// Each case waits for a status only it can produce (its generation, or
	// for undecodable values its own reason), then checks what it names.
	cases := []struct {
		name  string
		value []byte
		want  string // in the status message or a resource's field/message
		own   string // in this case's status message only
	}{
		{"path traversal", typed(2, fileRes("pwn", root+"/../"+filepath.Base(outside)+"/pwn", "x", "")), "spec.path", "generation 2 refused"},
		{"symlink escape", typed(3, fileRes("pwn", filepath.Join(root, "link", "pwn"), "x", "")), "spec.path", "generation 3 refused"},
		{"oversize content", typed(4, fileRes("big", filepath.Join(root, "big"), strings.Repeat("x", v1.MaxFileContentBytes+1), "")), "spec.content", "generation 4 refused"},
		{"privileged container", typed(5, v1.Resource{ID: "c", Kind: v1.KindContainer,
			Spec: spec(map[string]any{"image": "localhost/busybox:latest", "command": []string{"sleep", "1000"}, "privileged": true})}), "spec.privileged", "generation 5 refused"},
		{"host network", typed(6, v1.Resource{ID: "c", Kind: v1.KindContainer,
			Spec: spec(map[string]any{"image": "localhost/busybox:latest", "command": []string{"sleep", "1000"}, "hostNetwork": true})}), "spec.hostNetwork", "generation 6 refused"},
		{"host path outside the roots", typed(7, v1.Resource{ID: "c", Kind: v1.KindContainer,
			Spec: spec(map[string]any{"image": "localhost/busybox:latest", "volumes": []map[string]string{{"hostPath": "/etc", "containerPath": "/x"}}})}), "hostPath", "generation 7 refused"},
		{"volume through a symlink", typed(11, v1.Resource{ID: "c", Kind: v1.KindContainer,
			Spec: spec(map[string]any{"image": "localhost/busybox:latest", "volumes": []map[string]string{{"hostPath": filepath.Join(root, "link"), "containerPath": "/x"}}})}), "hostPath", "generation 11 refused"},
		{"setuid file", typed(12, fileRes("su", filepath.Join(root, "su"), "#!/bin/sh\nid\n", "4755")), "spec.mode", "generation 12 refused"},
		{"unit file running a command as root", typed(13, v1.Resource{ID: "u", Kind: v1.KindSystemdUnit,
			Spec: spec(map[string]any{"name": "pwn.service", "content": "[Service]\nExecStart=/bin/sh -c 'id > /tmp/pwn'\n"})}), "spec.content", "generation 13 refused"},
		{"unknown kind", typed(8, v1.Resource{ID: "tele", Kind: "Teleporter", Spec: spec(map[string]any{})}), v1.PhaseUnsupported, "generation 8 refused"},
		{"invalid UTF-8", []byte("{\"v\":1,\"device\":\"dev-1\",\"deployment\":\"web\",\"generation\":10,\"resources\":[{\"id\":\"f\",\"kind\":\"File\",\"spec\":{\"path\":\"" + filepath.Join(root, "utf") + "\",\"content\":\"\xff\xfe\"}}]}"), "UTF-8", "not valid UTF-8"},
		{"deeply nested JSON", []byte(nested), "nest", "nested deeper than"},
		{"not JSON", []byte("\x00\x01garbage"), "desired state refused", "invalid character"},
	}
	for _, c := range cases {
		f.putRaw(t, "dev-1.web", c.value)
		s := f.waitStatus(t, "web", func(s v1.DeviceState) error {
			all := s.Message
			for _, r := range s.Resources {
				all += " | " + r.Phase + " " + r.Field + " " + r.Message
			}
			if !strings.Contains(s.Message, c.own) {
				return fmt.Errorf("%s: no status for this case yet: %s", c.name, all)
			}
			if !strings.Contains(all, c.want) {
				t.Fatalf("%s: the status does not name %q: %s", c.name, c.want, all)
			}
			return nil
		})
		if s.ObservedGeneration != 1 || s.Phase != v1.PhaseFailed {
			t.Errorf("%s: phase %s at generation %d, want Failed with generation 1 still enforced", c.name, s.Phase, s.ObservedGeneration)
		}
		if b, err := os.ReadFile(good); err != nil || string(b) != "v1\n" {
			t.Fatalf("%s: the last good file changed: %q %v", c.name, b, err)
		}
		for _, p := range []string{filepath.Join(outside, "pwn"), filepath.Join(root, "big"), filepath.Join(root, "utf"), filepath.Join(root, "su")} {
			if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("%s: %s was created", c.name, p)
			}
		}
		t.Logf("%s: refused: %s", c.name, s.Message)
	}
}
