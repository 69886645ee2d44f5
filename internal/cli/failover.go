package cli

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/harmony-fleet/harmony/internal/failover"
	"github.com/harmony-fleet/harmony/internal/mesh"
	"github.com/harmony-fleet/harmony/internal/store"
)

// failoverFlags are how the failover commands reach a cluster's bucket:
// straight through NATS, as the agents do.
type failoverFlags struct {
	cluster       string
	urls          []string
	creds, nkey   string
	ca, cert, key string
	timeout       time.Duration
	output        string
}

func (f *failoverFlags) add(cmd *cobra.Command) {
	cmd.PersistentFlags().StringVar(&f.cluster, "cluster", "", "cluster id (required)")
	cmd.PersistentFlags().StringSliceVar(&f.urls, "nats-url", []string{"nats://127.0.0.1:4222"}, "NATS URLs, comma-separated")
	cmd.PersistentFlags().StringVar(&f.creds, "nats-creds", "", "NATS credentials file")
	cmd.PersistentFlags().StringVar(&f.nkey, "nats-nkey", os.Getenv("HARMONY_NATS_NKEY"), "nkey seed of an admin identity (the server's <data_dir>/nats-admin.nk; env HARMONY_NATS_NKEY)")
	cmd.PersistentFlags().StringVar(&f.ca, "nats-ca", "", "CA bundle of the NATS servers")
	cmd.PersistentFlags().StringVar(&f.cert, "nats-cert", "", "client certificate")
	cmd.PersistentFlags().StringVar(&f.key, "nats-key", "", "client key")
	cmd.PersistentFlags().DurationVar(&f.timeout, "timeout", 10*time.Second, "how long to wait for NATS (and for a switchover)")
}

// open connects and opens the cluster's bucket (never creating it).
func (f *failoverFlags) open(ctx context.Context) (store.KV, func(), error) {
	if f.cluster == "" {
		return nil, nil, usageError{errors.New("--cluster is required")}
	}
	nc, err := mesh.Connect(mesh.ClientConfig{Name: "harmony failover", URLs: f.urls, CredsFile: f.creds, NkeySeedFile: f.nkey, CAFile: f.ca, CertFile: f.cert, KeyFile: f.key})
	if err != nil {
		return nil, nil, err
	}
	st, err := store.NewNATS(nc, store.NATSOptions{Timeout: f.timeout})
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	kv, err := st.Open(ctx, failover.BucketName(f.cluster))
	if err != nil {
		nc.Close()
		if errors.Is(err, store.ErrNotFound) {
			return nil, nil, fmt.Errorf("cluster %q: no failover bucket (no agent of it has started)", f.cluster)
		}
		return nil, nil, fmt.Errorf("cluster %q: %w", f.cluster, err)
	}
	return kv, nc.Close, nil
}

// session opens the bucket under the command's timeout; done releases
// both.
func (f *failoverFlags) session(ctx context.Context) (context.Context, store.KV, func(), error) {
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	kv, closer, err := f.open(ctx)
	if err != nil {
		cancel()
		return nil, nil, nil, err
	}
	return ctx, kv, func() { closer(); cancel() }, nil
}

// readState reads and decodes cluster-state (Rev is its revision).
func readState(ctx context.Context, kv store.KV) (failover.ClusterState, failover.StateRecord, error) {
	e, err := kv.Get(ctx, failover.KeyClusterState)
	if err != nil {
		return failover.ClusterState{}, failover.StateRecord{}, fmt.Errorf("cluster-state: %w", err)
	}
	return failover.DecodeState(e)
}

func newFailoverCmd(stdout io.Writer) *cobra.Command {
	var f failoverFlags
	cmd := &cobra.Command{
		Use:   "failover",
		Short: "Inspect and steer a PostgreSQL cluster's failover",
		Args:  noArgs,
		RunE:  func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	f.add(cmd)
	status := &cobra.Command{Use: "status", Short: "Members: role, state, heartbeat age, lag, timeline", Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return failoverStatus(cmd.Context(), &f, stdout) }}
	addOutputFlag(status, &f.output)
	history := &cobra.Command{Use: "history", Short: "The cluster-state timeline (the bucket keeps 64 revisions)", Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return failoverHistory(cmd.Context(), &f, stdout) }}
	addOutputFlag(history, &f.output)
	var to string
	switchover := &cobra.Command{Use: "switchover --to NODE", Short: "Planned hand-over of the primary role; loses nothing", Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return failoverSwitchover(cmd.Context(), &f, to, stdout) }}
	switchover.Flags().StringVar(&to, "to", "", "the member to make primary (required)")
	pause := &cobra.Command{Use: "pause", Short: "Stop automatic failover (maintenance)", Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return failoverPause(cmd.Context(), &f, true, stdout) }}
	resume := &cobra.Command{Use: "resume", Short: "Turn automatic failover back on", Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return failoverPause(cmd.Context(), &f, false, stdout) }}
	cmd.AddCommand(status, history, switchover, pause, resume)
	var wait time.Duration
	for _, o := range []struct{ op, short string }{
		{failover.OpRestart, "Restart a member safely (a primary hands over first; the only synchronous standby is refused)"},
		{failover.OpReload, "Reload a member's configuration"},
		{failover.OpReinit, "Remove a replica's data directory and clone it again from the primary"},
	} {
		c := &cobra.Command{Use: o.op + " NODE", Short: o.short,
			Long: o.short + ". Members of clusters declared with a PostgresCluster resource take these (docs/postgres.md): " +
				"each member carries the request out when it is safe, or refuses it with the reason.",
			Args: exactArgs(1, "harmony failover "+o.op+" NODE --cluster C"),
			RunE: func(cmd *cobra.Command, args []string) error {
				return failoverOperate(cmd.Context(), &f, o.op, args[0], wait, stdout)
			}}
		c.Flags().DurationVar(&wait, "wait", 2*time.Minute, "how long to wait for the member's answer")
		cmd.AddCommand(c)
	}
	return cmd
}

// failoverOperate asks a member to restart, reload or re-initialise and
// waits for its answer.
func failoverOperate(ctx context.Context, f *failoverFlags, op, node string, wait time.Duration, w io.Writer) error {
	kv, closer, err := f.open(ctx)
	if err != nil {
		return err
	}
	defer closer()
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	if _, err := kv.Get(ctx, failover.HeartbeatPrefix+node); errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("%s: no such member of cluster %s", node, f.cluster)
	}
	id := rand.Text()
	req, _ := json.Marshal(failover.Operation{ID: id, Op: op, At: time.Now().UTC()})
	key := failover.OpPrefix + node
	if err := failover.PutKey(ctx, kv, key, req); err != nil {
		return err
	}
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s did not answer within %s (only members declared with a PostgresCluster resource take operations)", node, wait)
		case <-tick.C:
		}
		e, err := kv.Get(ctx, key)
		if err != nil {
			continue
		}
		var got failover.Operation
		if json.Unmarshal(e.Value, &got) != nil || got.ID != id || !got.Done {
			continue
		}
		if got.Refused {
			return fmt.Errorf("%s refused to %s: %s", node, op, got.Result)
		}
		fmt.Fprintf(w, "%s: %s\n", node, got.Result)
		return nil
	}
}

func failoverStatus(ctx context.Context, f *failoverFlags, w io.Writer) error {
	ctx, kv, done, err := f.session(ctx)
	if err != nil {
		return err
	}
	defer done()
	v, err := failover.ReadView(ctx, kv, f.cluster)
	if err != nil {
		return err
	}
	if f.output != "table" {
		return printAs(w, f.output, v)
	}
	paused := ""
	if v.Paused {
		paused = " (automatic failover PAUSED)"
	}
	fmt.Fprintf(w, "cluster %s: primary %s, epoch %d%s\n", f.cluster, v.Primary, v.Epoch, paused)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tROLE\tSTATE\tHEARTBEAT\tLAG\tTIMELINE\tEPOCH")
	for _, m := range v.Members {
		state, beat := m.State, "none yet"
		if m.Setup != "" && m.Setup != m.State {
			state += " (" + m.Setup + ")"
		}
		if len(m.PendingRestart) > 0 {
			state += " [restart pending: " + strings.Join(m.PendingRestart, ",") + "]"
		}
		if m.HeartbeatAge >= 0 {
			beat = fmt.Sprintf("%.1fs ago", m.HeartbeatAge)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d B\t%d\t%d\n", m.Node, m.Role, state, beat, m.LagBytes, m.Timeline, m.Epoch)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, warning := range v.Warnings {
		fmt.Fprintln(w, "WARNING: "+warning)
	}
	return nil
}

func failoverHistory(ctx context.Context, f *failoverFlags, w io.Writer) error {
	ctx, kv, done, err := f.session(ctx)
	if err != nil {
		return err
	}
	defer done()
	rows, err := failover.ReadHistory(ctx, kv)
	if err != nil {
		return err
	}
	if f.output != "table" {
		return printAs(w, f.output, rows)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME (SERVER)\tREVISION\tEPOCH\tPRIMARY\tSYNC\tREASON")
	for _, r := range rows {
		reason := r.Reason
		if r.Paused {
			reason += " [paused]"
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%s\t%s\n", r.At.Format(time.RFC3339Nano), r.Revision, r.Epoch, r.Primary, r.Sync, reason)
	}
	return tw.Flush()
}

// failoverSwitchover asks the primary to hand over, then waits until
// cluster-state names the target (or the timeout passes).
func failoverSwitchover(ctx context.Context, f *failoverFlags, to string, w io.Writer) error {
	if to == "" {
		return usageError{errors.New("--to is required")}
	}
	ctx, kv, done, err := f.session(ctx)
	if err != nil {
		return err
	}
	defer done()
	cs, _, err := readState(ctx, kv)
	if err != nil {
		return err
	}
	if cs.Primary == to {
		return fmt.Errorf("%s is the primary already", to)
	}
	if _, err := kv.Get(ctx, failover.HeartbeatPrefix+to); errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("--to %s: no such member of cluster %s", to, f.cluster)
	}
	if cs.Sync != "" && cs.Sync != to {
		fmt.Fprintf(w, "note: %s is not the synchronous standby (%s); in AbsoluteConsistency the primary refuses\n", to, cs.Sync)
	}
	req, _ := json.Marshal(failover.SwitchoverRequest{To: to, Epoch: cs.Epoch})
	if err := failover.PutKey(ctx, kv, failover.KeySwitchover, req); err != nil {
		return err
	}
	w2, err := kv.Watch(ctx, failover.KeyClusterState, store.WatchOptions{})
	if err != nil {
		return err
	}
	for ev := range w2.Events() {
		if ev.Entry.Key != failover.KeyClusterState || ev.Entry.Op != store.OpPut {
			continue
		}
		now, _, err := failover.DecodeState(ev.Entry)
		if err != nil || now.Epoch <= cs.Epoch {
			continue
		}
		if now.Primary == to {
			fmt.Fprintf(w, "switchover done: %s is primary (epoch %d); %s rejoins as a replica\n", to, now.Epoch, cs.Primary)
			return nil
		}
		return fmt.Errorf("the cluster moved on differently: %s is primary (epoch %d)", now.Primary, now.Epoch)
	}
	return fmt.Errorf("switchover to %s not confirmed within %s (the primary refuses when %s is not its synchronous standby, or it is busy); see 'harmony failover status'", to, f.timeout, to)
}

// failoverPause sets or clears the pause flag by compare-and-set, keeping
// everything else of cluster-state.
func failoverPause(ctx context.Context, f *failoverFlags, paused bool, w io.Writer) error {
	ctx, kv, done, err := f.session(ctx)
	if err != nil {
		return err
	}
	defer done()
	for {
		cs, _, err := readState(ctx, kv)
		if err != nil {
			return err
		}
		if cs.Paused == paused {
			fmt.Fprintf(w, "cluster %s: automatic failover already %s\n", f.cluster, pausedWord(paused))
			return nil
		}
		cs.Paused = paused
		_, err = kv.Update(ctx, failover.KeyClusterState, failover.EncodeState(cs, "automatic failover "+pausedWord(paused)+" by an operator"), cs.Rev)
		if errors.Is(err, store.ErrConflict) {
			continue // the cluster changed meanwhile: apply to the new value
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "cluster %s: automatic failover %s\n", f.cluster, pausedWord(paused))
		return nil
	}
}

func pausedWord(p bool) string {
	if p {
		return "paused"
	}
	return "resumed"
}
