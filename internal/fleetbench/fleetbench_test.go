package fleetbench

import (
	"encoding/csv"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestPerDevice(t *testing.T) {
	r := Result{Devices: 100, PeakRSS: 300 << 20, BaseRSS: 100 << 20, IdleCPUShare: 0.05,
		IdleRate: Rate{InMsgs: 10}, FDsBefore: 40, FDsOnline: 140}
	r.perDevice()
	if want := float64(2 << 20); r.RSSPerDevice != want {
		t.Errorf("RSS per device %v, want %v", r.RSSPerDevice, want)
	}
	if r.IdleCPUPerDevice != 0.0005 || r.IdleMsgsPerDevice != 0.1 || r.FDsPerDevice != 1 {
		t.Errorf("per device: CPU %v, msgs %v, descriptors %v; want 0.0005, 0.1, 1", r.IdleCPUPerDevice, r.IdleMsgsPerDevice, r.FDsPerDevice)
	}
	// Not measured (a run that failed early): no figure made up.
	r = Result{Devices: 100, PeakRSS: 300 << 20}
	r.perDevice()
	if r.RSSPerDevice != 0 || r.FDsPerDevice != 0 {
		t.Errorf("unmeasured baselines gave RSS %v and descriptors %v per device", r.RSSPerDevice, r.FDsPerDevice)
	}
}

// flag returns the value after name in args ("" when absent).
func flag(args []string, name string) string {
	i := slices.Index(args, name)
	if i < 0 || i+1 >= len(args) {
		return ""
	}
	return args[i+1]
}

// TestServerArgs: three servers get what docs/install.md "Three servers"
// adds to each one's file; one server gets none of it.
func TestServerArgs(t *testing.T) {
	b := &bench{cfg: Config{Servers: 3, Server: []string{"harmony"}}, tokens: "/t.yaml"}
	if err := b.newMembers(t.TempDir()); err != nil {
		t.Fatal(err)
	}
	var routes []string
	for _, m := range b.members {
		routes = append(routes, m.route)
	}
	names := map[string]bool{}
	for _, m := range b.members {
		args := b.serverArgs(m)
		names[flag(args, "--name")] = true
		for name, want := range map[string]string{"--cluster-name": clusterName, "--cluster-listen": m.route,
			"--routes": strings.Join(routes, ","), "--replicas": "3", "--tokens-file": "/t.yaml", "--data-dir": m.dataDir} {
			if got := flag(args, name); got != want || want == "" {
				t.Errorf("%s: %s %q, want %q", m.name, name, got, want)
			}
		}
		if slices.Contains(args, "--tls") || slices.Contains(args, "--nats-auth") {
			t.Errorf("%s: %v: the bench runs the servers' TLS and identity defaults", m.name, args)
		}
	}
	if len(names) != 3 || names[""] {
		t.Errorf("names %v: want three of their own", names)
	}
	if b.api != b.members[0] {
		t.Error("the bench asks the first server's API")
	}

	one := &bench{cfg: Config{Servers: 1, Server: []string{"harmony"}}}
	if err := one.newMembers(t.TempDir()); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"--name", "--cluster-name", "--cluster-listen", "--routes", "--replicas"} {
		if slices.Contains(one.serverArgs(one.members[0]), name) {
			t.Errorf("one server is given %s", name)
		}
	}
}

func TestShareCA(t *testing.T) {
	from, to := t.TempDir(), t.TempDir()
	if err := os.MkdirAll(filepath.Join(from, "tls"), 0o700); err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string]string{"ca.pem": "cert", "ca-key.pem": "key", "server.pem": "own"} {
		if err := os.WriteFile(filepath.Join(from, "tls", name), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := shareCA(from, to); err != nil {
		t.Fatal(err)
	}
	for name, mode := range map[string]os.FileMode{"ca.pem": 0o644, "ca-key.pem": 0o600} {
		fi, err := os.Stat(filepath.Join(to, "tls", name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != mode {
			t.Errorf("%s: mode %v, want %v", name, fi.Mode().Perm(), mode)
		}
	}
	if _, err := os.Stat(filepath.Join(to, "tls", "server.pem")); err == nil {
		t.Error("the server certificate was copied too: each server issues its own")
	}
}

func TestCSVRowsMatchTheHeader(t *testing.T) {
	dir := t.TempDir()
	r := Result{Devices: 3, Deployments: 1, Servers: 3, Apply: Latencies{time.Millisecond, 2 * time.Millisecond, 3 * time.Millisecond}}
	r.perDevice()
	if err := WriteCSV(dir, []Result{r, {Devices: 5, Servers: 1, Err: "failed"}}); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join(dir, "fleet.csv"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rows, err := csv.NewReader(f).ReadAll() // fails on a row of another length
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 3 {
		t.Fatalf("%d rows, want a header and two", len(rows))
	}
	if i := slices.Index(rows[0], "servers"); i < 0 || rows[1][i] != "3" || rows[2][i] != "1" {
		t.Errorf("servers column: header %v, rows %v %v", rows[0], rows[1], rows[2])
	}
}

func TestWriteTableSaysHowManyServers(t *testing.T) {
	var one, three strings.Builder
	WriteTable(&one, Result{Devices: 10, Servers: 1})
	WriteTable(&three, Result{Devices: 10, Servers: 3})
	if strings.Contains(one.String(), "servers") || strings.Contains(one.String(), "busiest") {
		t.Errorf("one server:\n%s", one.String())
	}
	for _, want := range []string{"3 servers", "busiest server", "largest server", "rolling restart"} {
		if !strings.Contains(three.String(), want) {
			t.Errorf("three servers: no %q in\n%s", want, three.String())
		}
	}
}
