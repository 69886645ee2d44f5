package guard

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/harmony-fleet/harmony/internal/testutil/pgtest"
)

// TestGuardRealPostgres guards a real PostgreSQL 15 primary: fed in time
// and then disarmed it keeps serving; a deadline left to pass stops the
// postmaster and every backend.
func TestGuardRealPostgres(t *testing.T) {
	in := pgtest.Cluster(t, "n1")[0]
	sock := filepath.Join(shortDir(t), "g.sock")
	runGuard(t, Config{Socket: sock, DataDir: in.DataDir})
	c := attach(t, sock, in.DataDir)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	pmPID, err := postmasterPID(in.DataDir)
	if err != nil {
		t.Fatal(err)
	}
	kids := children(pmPID)
	if len(kids) < 3 {
		t.Fatalf("postmaster %d has only %v", pmPID, kids)
	}

	// Fed: several deadlines pass while the agent keeps moving them.
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	first := Now() + 300*time.Millisecond
	for until := first; Now() < first+600*time.Millisecond; until = Now() + 300*time.Millisecond {
		if err := c.Arm(until); err != nil {
			t.Fatal(err)
		}
		<-tick.C
	}
	if st, err := c.Status(); err != nil || st.Fired != 0 {
		t.Fatalf("fenced while fed: %+v %v", st, err)
	}
	if err := in.Healthy(ctx); err != nil {
		t.Fatalf("fenced while fed: %v", err)
	}
	// Disarmed: never fenced.
	if err := c.Disarm(); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, Now()+500*time.Millisecond)
	if err := in.Healthy(ctx); err != nil {
		t.Fatalf("fenced while disarmed: %v", err)
	}

	// A deadline just ahead, not fed: gone shortly after.
	until := Now() + 200*time.Millisecond
	if err := c.Arm(until); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the fence", func() bool { running, _ := in.Running(); return !running })
	if Now() < until {
		t.Fatal("fenced before the deadline")
	}
	st, err := c.Status() // answered once the fence is confirmed
	if err != nil || st.Fired != 1 {
		t.Fatalf("%+v %v", st, err)
	}
	for _, k := range kids {
		if alive(k) {
			t.Errorf("backend %d survived", k)
		}
	}
	if err := in.Healthy(ctx); err == nil {
		t.Fatal("PostgreSQL still answers")
	}
	t.Logf("fence: %s (at %s, deadline %s)", st.LastFence, Now()-until, until)

	// It starts again (crash recovery): the fence left nothing in the way
	// once the dead postmaster is reaped (by init, here not at once).
	waitFor(t, 30*time.Second, "the postmaster reaped", func() bool {
		_, err := os.Stat(filepath.Join("/proc", strconv.Itoa(pmPID)))
		return os.IsNotExist(err)
	})
	if err := in.Start(ctx); err != nil {
		log, _ := os.ReadFile(filepath.Join(in.DataDir, "server.log"))
		t.Fatalf("%v\n%s", err, log)
	}
	if err := in.Healthy(ctx); err != nil {
		t.Fatal(err)
	}
}
