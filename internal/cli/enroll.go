package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/harmony-fleet/harmony/api/httpapi"
	"github.com/harmony-fleet/harmony/internal/agent/localstate"
	"github.com/harmony-fleet/harmony/internal/config"
	"github.com/harmony-fleet/harmony/internal/identity"
)

func newTokenCmd(stdout, stderr io.Writer) *cobra.Command {
	cmd := &cobra.Command{Use: "token", Short: "Enrollment tokens for devices", Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() }}
	var server endpoint
	var req httpapi.TokenRequest
	create := &cobra.Command{
		Use:   "create [--expires 1h] [--device ID] [--failover-cluster C]",
		Short: "Create a one-time enrollment token (printed once; the server keeps its hash)",
		Long: `Create a one-time token that lets one device enroll with
'harmony enroll --token'. It expires after --expires (1m to 720h) or at its
first use. --device limits it to one device id; --failover-cluster also lets
the device join that PostgreSQL failover cluster's bucket.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := server.client(cmd)
			if err != nil {
				return err
			}
			ans, err := c.CreateEnrollmentToken(cmd.Context(), req)
			if err != nil {
				return err
			}
			fmt.Fprintln(stdout, ans.Token)
			fmt.Fprintf(stderr, "one-time enrollment token, valid until %s\n", ans.Expires.Local().Format(time.RFC3339))
			return nil
		},
	}
	create.Flags().StringVar(&req.Expires, "expires", "1h", "how long the token stays valid")
	create.Flags().StringVar(&req.Device, "device", "", "the only device id the token may enroll")
	create.Flags().StringVar(&req.Cluster, "failover-cluster", "", "also grant this failover cluster's bucket")
	addServerFlag(create, &server)
	cmd.AddCommand(create)
	return cmd
}

func newEnrollCmd(stdout, stderr io.Writer) *cobra.Command {
	var (
		server                       endpoint
		token, id, nkeyPath, cluster string
		wait                         time.Duration
	)
	cmd := &cobra.Command{
		Use:   "enroll --server URL --ca FILE [--token T] [--id ID] [--nkey FILE]",
		Short: "Give this device its own NATS identity (a one-time token, or an admin's approval)",
		Long: `Make a new nkey for this device, send its public key to the server and, once
it is accepted, write the seed to --nkey (mode 0600). The seed never leaves the
device. With --token (env HARMONY_ENROLL_TOKEN, from 'harmony token create')
the identity works at once; without, the request waits until an admin runs
'harmony device approve ID' (up to --wait; the server forgets a request after
24 h). While it waits it prints the key's fingerprint: the admin compares it
with the one 'harmony device identities' shows before approving. Enrolling
again rotates the identity (the old key stops working, and a running agent
picks up the new one); that needs a token made for the device ('harmony token
create --device ID'): a request without one for an enrolled device is refused.
Point the agent at the seed with nats_nkey.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if id == "" {
				h, _ := os.Hostname()
				id = strings.ToLower(h)
			}
			if err := config.ValidateDNSSubdomain(id); err != nil {
				return usageError{fmt.Errorf("--id %q: %v", id, err)}
			}
			if nkeyPath == "" {
				return usageError{errors.New("--nkey FILE is required")}
			}
			c, err := server.client(cmd) // no bearer token: the enrollment token, if any, is in the body
			if err != nil {
				return err
			}
			return enroll(cmd.Context(), c, httpapi.EnrollRequest{Device: id, Token: token, Cluster: cluster}, nkeyPath, wait, stdout, stderr)
		},
	}
	addURLFlag(cmd, &server.url)
	cmd.Flags().StringVar(&server.ca, "ca", os.Getenv("HARMONY_CA"), "CA that signs the server's certificate (env HARMONY_CA)")
	cmd.Flags().StringVar(&token, "token", os.Getenv("HARMONY_ENROLL_TOKEN"), "one-time enrollment token (env HARMONY_ENROLL_TOKEN)")
	cmd.Flags().Lookup("token").DefValue = ""
	cmd.Flags().StringVar(&id, "id", "", "device id (default: the hostname)")
	cmd.Flags().StringVar(&nkeyPath, "nkey", "", "where to write the identity's seed (the agent's nats_nkey)")
	cmd.Flags().StringVar(&cluster, "failover-cluster", "", "this device also runs a member of this failover cluster")
	cmd.Flags().DurationVar(&wait, "wait", 10*time.Minute, "how long to wait for an admin's approval")
	return cmd
}

// enroll writes the new seed next to the old one first, so that a device
// the server has accepted always has the matching seed on disk, and swaps
// it in once the server says the identity is granted.
func enroll(ctx context.Context, c *httpapi.Client, req httpapi.EnrollRequest, path string, wait time.Duration, stdout, stderr io.Writer) error {
	seed, pub, err := identity.NewSeed()
	if err != nil {
		return err
	}
	req.PublicKey = pub
	next := path + ".new"
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	if err := localstate.WriteFileAtomic(next, seed, 0o600); err != nil {
		return err
	}
	keep := false
	defer func() {
		if !keep {
			os.Remove(next)
		}
	}()
	ans, err := c.Enroll(ctx, req)
	if err != nil {
		return err
	}
	fp := identity.Fingerprint(pub)
	if ans.Status == httpapi.EnrollPending {
		fmt.Fprintf(stderr, "enrollment request for %s sent with key fingerprint %s", req.Device, fp)
		if !ans.Expires.IsZero() {
			fmt.Fprintf(stderr, " (it waits until %s)", ans.Expires.Local().Format(time.RFC3339))
		}
		fmt.Fprintf(stderr, "\nwaiting for an admin to compare the fingerprint and run: harmony device approve %s --fingerprint %s\n", req.Device, fp)
		wctx, cancel := context.WithTimeout(ctx, wait)
		defer cancel()
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for ans.Status == httpapi.EnrollPending {
			select {
			case <-wctx.Done():
				return fmt.Errorf("not approved within %s (--wait); run 'harmony enroll' again: the request stays waiting until it is approved, refused or expires", wait)
			case <-tick.C:
			}
			now, err := c.EnrollStatus(wctx, req.Device, pub)
			if err != nil {
				if wctx.Err() == nil {
					fmt.Fprintf(stderr, "asking for approval: %v\n", err)
				}
				continue
			}
			ans = now
		}
	}
	if ans.Status != httpapi.EnrollEnrolled {
		return fmt.Errorf("enrollment of %s was not granted (status %q): it was refused, replaced or expired", req.Device, ans.Status)
	}
	if err := os.Rename(next, path); err != nil {
		return fmt.Errorf("identity granted, but writing %s: %w (the seed is in %s)", path, err, next)
	}
	keep = true
	fmt.Fprintf(stdout, "device %s enrolled; identity %s (key fingerprint %s) written to %s\n", req.Device, pub, fp, path)
	return nil
}

func newDeviceCmd(stdout io.Writer) *cobra.Command {
	cmd := &cobra.Command{Use: "device", Short: "Device identities: list, approve, revoke", Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() }}
	var ep endpoint
	var output string
	list := &cobra.Command{Use: "identities", Short: "Enrolled devices and requests waiting for approval", Args: noArgs,
		Long: `List the enrolled devices and the enrollment requests waiting for approval,
with where each request came from, its key fingerprint (the first 20 hex
digits of the SHA-256 of the public key, as 'harmony enroll' prints it) and
when it expires (24 h after it was made).`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := ep.client(cmd)
			if err != nil {
				return err
			}
			ans, err := c.Identities(cmd.Context())
			if err != nil {
				return err
			}
			if output != "table" {
				return printAs(stdout, output, ans)
			}
			tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "DEVICE\tSTATE\tCLUSTER\tSINCE\tEXPIRES\tFINGERPRINT")
			for _, r := range ans.Identities {
				fmt.Fprintf(tw, "%s\tenrolled (%s)\t%s\t%s\t-\t%s\n", r.Device, r.Via, r.Cluster, r.Enrolled.Format(time.RFC3339), r.Fingerprint)
			}
			for _, p := range ans.Pending {
				fmt.Fprintf(tw, "%s\tpending (from %s)\t%s\t%s\t%s\t%s\n", p.Device, p.From, p.Cluster, p.Requested.Format(time.RFC3339),
					p.Expires.Format(time.RFC3339), p.Fingerprint)
			}
			return tw.Flush()
		}}
	addOutputFlag(list, &output)
	var opts httpapi.ApproveRequest
	approve := &cobra.Command{Use: "approve ID [--fingerprint FP] [--replace]", Short: "Grant a device's waiting enrollment request",
		Long: `Grant a device's waiting enrollment request. Compare the request's address and
key fingerprint ('harmony device identities') with what 'harmony enroll'
printed on the device first; --fingerprint makes the server refuse any other
key. A request for a device that is enrolled already would replace its key,
handing the device to whoever holds the new one: that needs --replace.`,
		Args: exactArgs(1, "approve ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := ep.client(cmd)
			if err != nil {
				return err
			}
			ans, err := c.Approve(cmd.Context(), args[0], opts)
			if err != nil {
				return err
			}
			fmt.Fprintf(stdout, "device/%s approved: key fingerprint %s, requested from %s at %s", ans.Device, ans.Fingerprint, ans.From, ans.Requested.Format(time.RFC3339))
			if ans.Replaced != "" {
				fmt.Fprintf(stdout, "; replaced key fingerprint %s", ans.Replaced)
			}
			fmt.Fprintln(stdout)
			return nil
		}}
	approve.Flags().BoolVar(&opts.Replace, "replace", false, "replace the key of a device that is enrolled already")
	approve.Flags().StringVar(&opts.Fingerprint, "fingerprint", "", "approve only a request with this key fingerprint (as 'harmony enroll' printed it)")
	revoke := &cobra.Command{Use: "revoke ID", Short: "Delete a device's identity: it is cut off within seconds", Args: exactArgs(1, "revoke ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := ep.client(cmd)
			if err != nil {
				return err
			}
			if err := c.Revoke(cmd.Context(), args[0]); err != nil {
				return err
			}
			fmt.Fprintf(stdout, "device/%s revoked\n", args[0])
			return nil
		}}
	for _, c := range []*cobra.Command{list, approve, revoke} {
		addServerFlag(c, &ep)
		cmd.AddCommand(c)
	}
	return cmd
}

func exactArgs(n int, want string) cobra.PositionalArgs {
	return func(_ *cobra.Command, args []string) error {
		if len(args) != n {
			return usageError{errors.New("want: " + want)}
		}
		return nil
	}
}
