package cli

import (
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"github.com/harmony-fleet/harmony/api/httpapi"
	"github.com/harmony-fleet/harmony/internal/pki"
)

// endpoint is where the API is, the token to show it and the CA that
// signs its certificate, as the flags and the environment say.
type endpoint struct {
	url, token, ca string
}

// addServerFlag adds --server, --token and --ca, defaulting to the
// environment (HARMONY_SERVER, HARMONY_TOKEN, HARMONY_CA).
func addServerFlag(cmd *cobra.Command, server *endpoint) {
	addURLFlag(cmd, &server.url)
	// The default comes from the environment, so that the secret need not
	// be on the command line (where other users of the machine can see it).
	cmd.Flags().StringVar(&server.token, "token", os.Getenv("HARMONY_TOKEN"), "API token (env HARMONY_TOKEN; prefer the variable, a flag shows in ps)")
	cmd.Flags().Lookup("token").DefValue = "" // help must not print the secret
	cmd.Flags().StringVar(&server.ca, "ca", os.Getenv("HARMONY_CA"), "CA that signs the server's certificate (env HARMONY_CA; the server's <data_dir>/tls/ca.pem)")
}

// addURLFlag adds --server (env HARMONY_SERVER).
func addURLFlag(cmd *cobra.Command, url *string) {
	def := os.Getenv("HARMONY_SERVER")
	if def == "" {
		def = "https://127.0.0.1:8080" // the server speaks TLS by default
	}
	cmd.Flags().StringVar(url, "server", def, "server URL such as https://host:8080 (env HARMONY_SERVER)")
}

// client makes the API client, or says which setting (--server or
// HARMONY_SERVER) is not a usable URL.
func (e endpoint) client(cmd *cobra.Command) (*httpapi.Client, error) {
	var conf *tls.Config
	if e.ca != "" {
		var err error
		if conf, err = pki.ClientConfig(e.ca); err != nil {
			return nil, err
		}
	}
	c, err := httpapi.New(e.url, e.token, conf)
	var ue *httpapi.URLError
	if errors.As(err, &ue) {
		from := "--server"
		if !cmd.Flags().Changed("server") && os.Getenv("HARMONY_SERVER") != "" {
			from = "HARMONY_SERVER"
		}
		return nil, usageError{fmt.Errorf("%s %w", from, err)}
	}
	return c, err
}

// printAs writes v as JSON or YAML.
func printAs(w io.Writer, format string, v any) error {
	switch format {
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	case "yaml":
		b, err := json.Marshal(v)
		if err != nil {
			return err
		}
		y, err := yaml.JSONToYAML(b)
		if err != nil {
			return err
		}
		_, err = w.Write(y)
		return err
	}
	return usageError{fmt.Errorf("output %q: want table, json or yaml", format)}
}

func addOutputFlag(cmd *cobra.Command, out *string) {
	cmd.Flags().StringVarP(out, "output", "o", "table", "table, json or yaml")
}

func age(secs float64) string {
	if secs < 0 {
		return "never"
	}
	d := time.Duration(secs * float64(time.Second))
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	default:
		return fmt.Sprintf("%dh", int(d.Hours()))
	}
}
