package cli

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/harmony-fleet/harmony/api/httpapi"
)

func newSecretCmd(stdout io.Writer) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "secret",
		Short: "Create, replace, list and delete secrets",
		Long: `Secrets hold values (passwords, keys, certificates) that resources take by
reference instead of carrying them: a File's contentFrom, a Container's or a
ShellJob's secretEnv. Only the devices whose desired state uses a secret can
read it; the API, the dashboard, status and 'harmony get' show its name, keys
and version, never a value. Replacing a secret rolls out to the devices that
use it.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	var ep endpoint

	var literals, files []string
	var replace bool
	create := &cobra.Command{
		Use:   "create NAME (--from-literal KEY=VALUE | --from-file [KEY=]PATH)... [--replace]",
		Short: "Create a secret, or replace one with --replace",
		Long: `Create a secret from literal values and files. --from-file takes a file's
whole content; its key is the file's base name unless given as KEY=PATH. With
--replace, an existing secret is replaced as a whole (every key it should keep
must be given again) and the devices that use it get the new values; a key a
deployment uses cannot be dropped.`,
		Example: `  harmony secret create db --from-literal password=s3cret --from-file tls.key=./server.key
  harmony secret create db --from-literal password=n3w --from-file tls.key=./server.key --replace`,
		Args: exactArgs(1, "harmony secret create NAME --from-literal KEY=VALUE ..."),
		RunE: func(cmd *cobra.Command, args []string) error {
			data, err := secretData(literals, files)
			if err != nil {
				return err
			}
			c, err := ep.client(cmd)
			if err != nil {
				return err
			}
			var info httpapi.SecretInfo
			if replace {
				info, err = c.ReplaceSecret(cmd.Context(), args[0], httpapi.SecretWrite{Data: data})
			} else {
				info, err = c.CreateSecret(cmd.Context(), httpapi.SecretWrite{Name: args[0], Data: data})
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(stdout, "secret/%s %s (keys: %s; version %s)\n", info.Name, info.Result, strings.Join(info.Keys, ", "), short(info.Version))
			return nil
		}}
	create.Flags().StringArrayVar(&literals, "from-literal", nil, "a key and its value, KEY=VALUE (repeatable)")
	create.Flags().StringArrayVar(&files, "from-file", nil, "a file's content, [KEY=]PATH (repeatable; the key defaults to the file's name)")
	create.Flags().BoolVar(&replace, "replace", false, "replace an existing secret (all its keys)")

	var output string
	list := &cobra.Command{
		Use:   "list",
		Short: "List secrets: names, keys, versions and the deployments that use them",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := ep.client(cmd)
			if err != nil {
				return err
			}
			l, err := c.Secrets(cmd.Context())
			if err != nil {
				return err
			}
			if output != "table" {
				return printAs(stdout, output, l)
			}
			tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tKEYS\tVERSION\tUPDATED\tUSED BY")
			for _, s := range l.Items {
				used := strings.Join(s.UsedBy, ",")
				if used == "" {
					used = "-"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", s.Name, strings.Join(s.Keys, ","), short(s.Version),
					s.UpdatedAt.Local().Format(time.RFC3339), used)
			}
			return tw.Flush()
		}}
	addOutputFlag(list, &output)

	del := &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete a secret no deployment uses",
		Args:  exactArgs(1, "harmony secret delete NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := ep.client(cmd)
			if err != nil {
				return err
			}
			if _, err := c.DeleteSecret(cmd.Context(), args[0]); err != nil {
				return err
			}
			fmt.Fprintf(stdout, "secret/%s deleted\n", args[0])
			return nil
		}}
	for _, c := range []*cobra.Command{create, list, del} {
		addServerFlag(c, &ep)
		cmd.AddCommand(c)
	}
	return cmd
}

// secretData reads --from-literal and --from-file into a secret's data.
func secretData(literals, files []string) (map[string]string, error) {
	data := map[string]string{}
	put := func(flag, k, v string) error {
		if _, dup := data[k]; dup {
			return usageError{fmt.Errorf("%s: key %q is given twice", flag, k)}
		}
		data[k] = v
		return nil
	}
	for _, l := range literals {
		k, v, ok := strings.Cut(l, "=")
		if !ok || k == "" {
			return nil, usageError{fmt.Errorf("--from-literal %q: want KEY=VALUE", redact(l))}
		}
		if err := put("--from-literal", k, v); err != nil {
			return nil, err
		}
	}
	for _, f := range files {
		k, path, ok := strings.Cut(f, "=")
		if !ok {
			k, path = filepath.Base(f), f
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("--from-file %s: %w", f, err)
		}
		if err := put("--from-file", k, string(b)); err != nil {
			return nil, err
		}
	}
	if len(data) == 0 {
		return nil, usageError{fmt.Errorf("a secret needs at least one --from-literal or --from-file")}
	}
	return data, nil
}

// redact keeps what an error may show of a malformed --from-literal: it
// may be a value.
func redact(s string) string {
	if len(s) <= 3 {
		return "***"
	}
	return s[:3] + "***"
}

func short(version string) string {
	if len(version) > 12 {
		return version[:12]
	}
	return version
}
