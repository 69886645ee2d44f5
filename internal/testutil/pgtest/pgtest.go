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
// replicas, laid out as the failover agent keeps them: DocumentedCluster,
// then every replica renamed by Follow (it streams under its node name
// through its slot), and every node's rewind retention slot created by
// RetainRewindWAL, as the agent's first beats do (without it the old
// primary may recycle the WAL a later pg_rewind reads). Everything is
// stopped and removed at cleanup.
func Cluster(t testing.TB, names ...string) []*pg.Instance {
	t.Helper()
	out := DocumentedCluster(t, names...)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, in := range out[1:] {
		if how, err := in.Follow(ctx, out[0]); err != nil || how != "renamed" {
			t.Fatalf("%s follows %s: %q %v", in.Name, out[0].Name, how, err)
		}
	}
	for _, in := range out {
		if err := in.RetainRewindWAL(ctx); err != nil {
			t.Fatalf("%s retains its rewind WAL: %v", in.Name, err)
		}
	}
	return out
}

// DocumentedCluster builds the cluster exactly as docs/failover.md ("Setting
// it up") says, adapted only in ports and paths: initdb --data-checksums
// and PostgreSQL 15's defaults on names[0], started; every other node a
// `pg_basebackup -R` of it (streaming as "walreceiver", no slot), started.
// Nothing else: no wal_keep_size, no slots. Each instance listens on its
// own Unix socket and port (given at start, as the agent does) and no TCP
// address. Everything is stopped and removed at cleanup.
func DocumentedCluster(t testing.TB, names ...string) []*pg.Instance {
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
		if err := os.MkdirAll(sock, 0o755); err != nil {
			t.Fatal(err)
		}
		_ = os.Chown(sock, uid, gid)
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

// initPrimary: `initdb --data-checksums`, listen on no TCP address (the
// tests' adaptation of listen_addresses), start.
func initPrimary(t testing.TB, ctx context.Context, in *pg.Instance) {
	t.Helper()
	if err := runAs(ctx, filepath.Join(BinDir, "initdb"), "-D", in.DataDir, "--data-checksums", "--no-instructions"); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(filepath.Join(in.DataDir, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("\nlisten_addresses = ''\n"); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if err := in.Start(ctx); err != nil {
		t.Fatal(err)
	}
}

// basebackup: `pg_basebackup -R -c fast` from the primary, start.
func basebackup(t testing.TB, ctx context.Context, in, primary *pg.Instance) {
	t.Helper()
	src := fmt.Sprintf("host=%s port=%d user=%s", primary.SocketDir, primary.Port, primary.Superuser)
	if err := runAs(ctx, filepath.Join(BinDir, "pg_basebackup"), "-d", src, "-D", in.DataDir, "-R", "-c", "fast"); err != nil {
		t.Fatal(err)
	}
	if err := in.Start(ctx); err != nil {
		t.Fatal(err)
	}
}
