package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"github.com/harmony-fleet/harmony/internal/pki"
)

// client talks to the server's HTTP API.
type client struct {
	base  string
	token string
	http  *http.Client
	err   error // from setting up TLS: every call fails with it
	// secretBody: a request body carries a secret (an enrollment token),
	// which the plain-HTTP guard protects like a bearer token.
	secretBody bool
}

// endpoint is where the API is, the token to show it and the CA that
// signs its certificate.
type endpoint struct {
	url, token, ca string
}

// apiError is the server's error body.
type apiError struct {
	Code     string `json:"code"`
	Message  string `json:"message"`
	Field    string `json:"field"`
	Document int    `json:"document"`
}

func (e *apiError) Error() string { return e.Message }

func addServerFlag(cmd *cobra.Command, server *endpoint) {
	def := os.Getenv("HARMONY_SERVER")
	if def == "" {
		def = "https://127.0.0.1:8080" // the server speaks TLS by default
	}
	cmd.Flags().StringVar(&server.url, "server", def, "server URL (env HARMONY_SERVER)")
	// The default comes from the environment, so that the secret need not
	// be on the command line (where other users of the machine can see it).
	cmd.Flags().StringVar(&server.token, "token", os.Getenv("HARMONY_TOKEN"), "API token (env HARMONY_TOKEN; prefer the variable, a flag shows in ps)")
	cmd.Flags().Lookup("token").DefValue = "" // help must not print the secret
	cmd.Flags().StringVar(&server.ca, "ca", os.Getenv("HARMONY_CA"), "CA that signs the server's certificate (env HARMONY_CA; the server's <data_dir>/tls/ca.pem)")
}

func newClient(server endpoint) *client {
	c := &client{base: strings.TrimSuffix(server.url, "/"), token: server.token, http: &http.Client{Timeout: 60 * time.Second}}
	if server.ca != "" {
		conf, err := pki.ClientConfig(server.ca)
		if err != nil {
			c.err = err
			return c
		}
		c.http.Transport = &http.Transport{TLSClientConfig: conf, Proxy: http.ProxyFromEnvironment}
	}
	return c
}

// do sends a request and decodes a JSON answer into out; a non-2xx answer
// becomes an *apiError.
func (c *client) do(ctx context.Context, method, path, contentType string, body []byte, out any) error {
	if c.err != nil {
		return c.err
	}
	if err := c.plainTextGuard(); err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("server %s: %w", c.base, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		var e struct {
			Error *apiError `json:"error"`
		}
		if json.Unmarshal(data, &e) == nil && e.Error != nil {
			if resp.StatusCode == http.StatusUnauthorized && c.token == "" {
				e.Error.Message += " (set HARMONY_TOKEN)"
			}
			return e.Error
		}
		// Device command replies carry their own shape.
		var reply struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(data, &reply) == nil && reply.Error != "" {
			return &apiError{Code: "device_error", Message: reply.Error}
		}
		return fmt.Errorf("server answered %s: %s", resp.Status, strings.TrimSpace(string(data)))
	}
	if out != nil {
		return json.Unmarshal(data, out)
	}
	return nil
}

// plainTextGuard refuses to send a token over plain HTTP to anything but
// this machine: it would cross the network readable by anyone on the way.
func (c *client) plainTextGuard() error {
	u, err := url.Parse(c.base)
	if err != nil {
		return fmt.Errorf("server %q: %w", c.base, err)
	}
	if (c.token == "" && !c.secretBody) || u.Scheme != "http" {
		return nil
	}
	host := u.Hostname()
	if ip := net.ParseIP(host); (ip != nil && ip.IsLoopback()) || host == "localhost" {
		return nil
	}
	return fmt.Errorf("server %s: refusing to send the token over plain HTTP to another machine; use https:// (the server's default) with HARMONY_CA", c.base)
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

func jsonMarshal(v any) ([]byte, error) { return json.Marshal(v) }
