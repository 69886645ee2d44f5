// Package pgtest starts real PostgreSQL 15 instances for tests: a primary
// and streaming replicas in temporary directories, run as the postgres user
// (PostgreSQL refuses root), reachable over Unix sockets only.
package pgtest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/harmony-fleet/harmony/internal/failover/pg"
)

// BinDir holds the PostgreSQL server programs (Debian's postgresql-15).
const BinDir = "/usr/lib/postgresql/15/bin"

// Setup checks that PostgreSQL and its OS user are there; scripts/deps.sh
// installs them.
func Setup(t testing.TB) {
	t.Helper()
	if _, err := os.Stat(filepath.Join(BinDir, "initdb")); err != nil {
		t.Fatalf("PostgreSQL 15 is not installed (%v): run scripts/deps.sh", err)
	}
	if _, err := user.Lookup("postgres"); err != nil {
		t.Fatalf("no postgres user (%v): run scripts/deps.sh", err)
	}
}

func freePort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Cluster starts names[0] as a primary and the others as its streaming
// replicas; everything is stopped and removed at cleanup.
func Cluster(t testing.TB, names ...string) []*pg.Instance {
	t.Helper()
	Setup(t)
	base, err := os.MkdirTemp("", "harmony-pg-")
	if err != nil {
		t.Fatal(err)
	}
	u, _ := user.Lookup("postgres")
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(base, uid, gid); err != nil {
		t.Fatal(err)
	}
	var out []*pg.Instance
	t.Cleanup(func() {
		for _, in := range out {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			if running, _ := in.Running(); running {
				_ = in.Fence(ctx, 1)
			}
			cancel()
		}
		_ = os.RemoveAll(base)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for k, name := range names {
		dir := filepath.Join(base, name)
		sock := filepath.Join(base, name+"-sock")
		for _, d := range []string{sock} {
			if err := os.MkdirAll(d, 0o755); err != nil {
				t.Fatal(err)
			}
			_ = os.Chown(d, uid, gid)
		}
		in := &pg.Instance{Name: name, BinDir: BinDir, DataDir: dir, Port: freePort(t), SocketDir: sock, OSUser: "postgres", Superuser: "postgres"}
		out = append(out, in)
		if k == 0 {
			initPrimary(t, ctx, in)
			continue
		}
		basebackup(t, ctx, in, out[0])
	}
	return out
}

func runAs(ctx context.Context, args ...string) error {
	cmd := exec.CommandContext(ctx, "runuser", append([]string{"-u", "postgres", "--"}, args...)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%v: %w: %s", args, err, out)
	}
	return nil
}

func initPrimary(t testing.TB, ctx context.Context, in *pg.Instance) {
	t.Helper()
	if err := runAs(ctx, filepath.Join(BinDir, "initdb"), "-D", in.DataDir, "-U", "postgres", "--auth=trust", "--data-checksums", "-E", "UTF8", "--no-instructions"); err != nil {
		t.Fatal(err)
	}
	conf := fmt.Sprintf(`
listen_addresses = ''
unix_socket_directories = '%s'
wal_level = replica
max_wal_senders = 10
wal_log_hints = on
hot_standby = on
synchronous_commit = on
wal_keep_size = '256MB'
`, in.SocketDir)
	f, err := os.OpenFile(filepath.Join(in.DataDir, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(conf); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if err := in.Start(ctx); err != nil {
		t.Fatal(err)
	}
}

func basebackup(t testing.TB, ctx context.Context, in, primary *pg.Instance) {
	t.Helper()
	if err := runAs(ctx, filepath.Join(BinDir, "pg_basebackup"), "-D", in.DataDir, "-d", primary.ConnString("postgres"), "-X", "stream", "-c", "fast"); err != nil {
		t.Fatal(err)
	}
	// The copy carries the primary's socket directory; give it its own.
	f, err := os.OpenFile(filepath.Join(in.DataDir, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(f, "\nunix_socket_directories = '%s'\n", in.SocketDir)
	f.Close()
	if err := in.ConfigureStandby(primary); err != nil {
		t.Fatal(err)
	}
	if err := in.Start(ctx); err != nil {
		t.Fatal(err)
	}
}
