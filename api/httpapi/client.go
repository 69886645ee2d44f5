package httpapi

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	v1 "github.com/harmony-fleet/harmony/api/v1alpha1"
)

// Client calls the API. Every method returns the answer's typed body, or
// an error: an *Error for an error answer (errors.As, IsCode), otherwise
// a transport failure.
type Client struct {
	base  *url.URL
	token string
	http  *http.Client
}

// maxAnswer bounds an answer's body (a device list of a large fleet).
const maxAnswer = 64 << 20

// New makes a client of the server at baseURL (https://host:port, or
// http:// for a server without TLS) that shows token (none when empty)
// and checks the server's certificate with tlsConf (nil: the system's
// roots). The token is never sent over plain HTTP to another machine: such
// a call fails with ErrPlainHTTP before connecting.
func New(baseURL, token string, tlsConf *tls.Config) (*Client, error) {
	u, err := ParseBaseURL(baseURL)
	if err != nil {
		return nil, err
	}
	c := &Client{base: u, token: token, http: &http.Client{Timeout: 60 * time.Second}}
	if tlsConf != nil {
		c.http.Transport = &http.Transport{TLSClientConfig: tlsConf, Proxy: http.ProxyFromEnvironment}
	}
	return c, nil
}

// URLError says that a server address is not a URL the client can use.
type URLError struct {
	Value string
}

func (e *URLError) Error() string {
	want := "https://127.0.0.1:8080"
	if host := strings.TrimRight(e.Value, "/"); host != "" && !strings.Contains(host, "://") && !strings.ContainsAny(host, "/?# ") {
		want = "https://" + host
	}
	return fmt.Sprintf("%q: want a URL such as %s", e.Value, want)
}

// ParseBaseURL checks a server address: an http or https URL with a host,
// optionally a path prefix, no query. A scheme is never guessed: whether
// the token may travel in clear must not depend on a default.
func ParseBaseURL(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return nil, &URLError{Value: s}
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	u.RawPath = ""
	return u, nil
}

// ErrPlainHTTP: the call would send the token (or an enrollment token)
// over plain HTTP to another machine, readable by anyone on the way.
var ErrPlainHTTP = errors.New("refusing to send the token over plain HTTP to another machine; use https:// (the server's default)")

// BaseURL is the server's address as the client uses it.
func (c *Client) BaseURL() string { return c.base.String() }

// HasToken reports whether the client shows a bearer token.
func (c *Client) HasToken() bool { return c.token != "" }

// guard refuses to send a secret over plain HTTP to anything but this
// machine.
func (c *Client) guard(secret bool) error {
	if (c.token == "" && !secret) || c.base.Scheme != "http" {
		return nil
	}
	host := c.base.Hostname()
	if ip := net.ParseIP(host); (ip != nil && ip.IsLoopback()) || host == "localhost" {
		return nil
	}
	return fmt.Errorf("server %s: %w", c.base, ErrPlainHTTP)
}

// call is one request: route is one of the Route constants, args fill its
// wildcards in order.
type call struct {
	route       string
	args        []string
	query       url.Values
	body        []byte
	contentType string
	// secret: the body carries a secret (an enrollment token), which the
	// plain-HTTP guard protects like the bearer token.
	secret bool
}

// withJSON sets a JSON body.
func (r call) withJSON(v any) call {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // the API's request types always marshal
	}
	r.body, r.contentType = b, "application/json"
	return r
}

// Path is a route's path with its wildcards filled (escaped) in order.
func Path(route string, args ...string) string {
	_, p, _ := strings.Cut(route, " ")
	var b strings.Builder
	for {
		open := strings.IndexByte(p, '{')
		if open < 0 {
			b.WriteString(p)
			return b.String()
		}
		end := strings.IndexByte(p[open:], '}')
		b.WriteString(p[:open])
		if len(args) > 0 {
			b.WriteString(url.PathEscape(args[0]))
			args = args[1:]
		}
		p = p[open+end+1:]
	}
}

// do sends a request and decodes a 2xx answer into out (when not nil).
func (c *Client) do(ctx context.Context, r call, out any) error {
	if err := c.guard(r.secret); err != nil {
		return err
	}
	method, _, _ := strings.Cut(r.route, " ")
	u := *c.base
	u.Path += Path(r.route, r.args...)
	u.RawQuery = r.query.Encode()
	req, err := http.NewRequestWithContext(ctx, method, u.String(), bytes.NewReader(r.body))
	if err != nil {
		return err
	}
	if r.contentType != "" {
		req.Header.Set("Content-Type", r.contentType)
	}
	req.Header.Set("Accept", "application/json")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("server %s: %w", c.base, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return fmt.Errorf("server %s: %w", c.base, err)
	}
	if resp.StatusCode/100 != 2 {
		var body ErrorBody
		if json.Unmarshal(data, &body) == nil && body.Error != nil && body.Error.Code != "" {
			body.Error.Status = resp.StatusCode
			if body.Error.Code == CodeUnauthorized && c.token == "" && !r.secret {
				body.Error.Message += " (no token was sent)"
			}
			return body.Error
		}
		return fmt.Errorf("server %s answered %s: %s", c.base, resp.Status, strings.TrimSpace(string(data)))
	}
	if out == nil || resp.StatusCode == http.StatusNoContent {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("server %s: %s %s: unreadable answer: %w", c.base, method, u.Path, err)
	}
	return nil
}

// Status is GET /api/v1/status.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var out Status
	return out, c.do(ctx, call{route: RouteStatus}, &out)
}

// Deployments lists the deployments with their roll-up.
func (c *Client) Deployments(ctx context.Context) (DeploymentList, error) {
	var out DeploymentList
	return out, c.do(ctx, call{route: RouteDeployments}, &out)
}

// Deployment is one deployment with its per-device lines.
func (c *Client) Deployment(ctx context.Context, name string) (DeploymentView, error) {
	var out DeploymentView
	return out, c.do(ctx, call{route: RouteDeployment, args: []string{name}}, &out)
}

// Apply stores a YAML or JSON stream of deployments (all or none valid).
func (c *Client) Apply(ctx context.Context, manifest []byte) (ApplyResults, error) {
	var out ApplyResults
	return out, c.do(ctx, call{route: RouteApply, body: manifest, contentType: "application/yaml"}, &out)
}

// History lists the kept generations of a deployment.
func (c *Client) History(ctx context.Context, name string) (DeploymentHistory, error) {
	var out DeploymentHistory
	return out, c.do(ctx, call{route: RouteHistory, args: []string{name}}, &out)
}

// Undo makes a kept generation's spec the deployment's again, as a new
// generation.
func (c *Client) Undo(ctx context.Context, name string, r UndoRequest) (ApplyResult, error) {
	var out ApplyResult
	return out, c.do(ctx, call{route: RouteUndo, args: []string{name}}.withJSON(r), &out)
}

// Rollout is a deployment's rollout: its batches, phase and why.
func (c *Client) Rollout(ctx context.Context, name string) (v1.RolloutStatus, error) {
	var out v1.RolloutStatus
	return out, c.do(ctx, call{route: RouteRollout, args: []string{name}}, &out)
}

// PauseRollout stops a rollout giving the change to more devices.
func (c *Client) PauseRollout(ctx context.Context, name string) (v1.RolloutStatus, error) {
	var out v1.RolloutStatus
	return out, c.do(ctx, call{route: RoutePauseRollout, args: []string{name}}, &out)
}

// ResumeRollout goes on with a paused rollout, judging its batch afresh.
func (c *Client) ResumeRollout(ctx context.Context, name string) (v1.RolloutStatus, error) {
	var out v1.RolloutStatus
	return out, c.do(ctx, call{route: RouteResumeRollout, args: []string{name}}, &out)
}

// DeleteDeployment deletes a deployment.
func (c *Client) DeleteDeployment(ctx context.Context, name string) (DeleteResult, error) {
	var out DeleteResult
	return out, c.do(ctx, call{route: RouteDeleteDeployment, args: []string{name}}, &out)
}

// Devices lists the devices whose labels match selector (k=v,k2=v2; all
// when empty).
func (c *Client) Devices(ctx context.Context, selector string) (DeviceList, error) {
	var out DeviceList
	r := call{route: RouteDevices}
	if selector != "" {
		r.query = url.Values{"selector": {selector}}
	}
	return out, c.do(ctx, r, &out)
}

// Device is one device with its per-deployment status.
func (c *Client) Device(ctx context.Context, id string) (DeviceView, error) {
	var out DeviceView
	return out, c.do(ctx, call{route: RouteDevice, args: []string{id}}, &out)
}

// PatchLabels sets and removes control-plane labels of a device; an
// unknown device is not_found.
func (c *Client) PatchLabels(ctx context.Context, id string, p LabelPatch) (DeviceLabels, error) {
	var out DeviceLabels
	return out, c.do(ctx, call{route: RouteLabels, args: []string{id}}.withJSON(p), &out)
}

// Logs reads the tail of a resource's output on a device.
func (c *Client) Logs(ctx context.Context, id string, r LogsRequest) (v1.CommandReply, error) {
	q := url.Values{"resource": {r.Resource}}
	if r.Deployment != "" {
		q.Set("deployment", r.Deployment)
	}
	if r.Lines != 0 {
		q.Set("lines", strconv.Itoa(r.Lines))
	}
	var out v1.CommandReply
	return out, c.do(ctx, call{route: RouteLogs, args: []string{id}, query: q}, &out)
}

// Exec runs a command on a device. A command that fails there is an
// *Error (device_error) whose Reply has its output and exit code.
func (c *Client) Exec(ctx context.Context, id string, r ExecRequest) (v1.CommandReply, error) {
	var out v1.CommandReply
	return out, c.do(ctx, call{route: RouteExec, args: []string{id}}.withJSON(r), &out)
}

// Orphans is what the orphan guard holds.
func (c *Client) Orphans(ctx context.Context) (OrphanHold, error) {
	var out OrphanHold
	return out, c.do(ctx, call{route: RouteOrphans}, &out)
}

// ReleaseOrphans releases the held removals (only the hold with r's
// fingerprint, when it has one).
func (c *Client) ReleaseOrphans(ctx context.Context, r OrphanRelease) (OrphanReleaseResult, error) {
	var out OrphanReleaseResult
	return out, c.do(ctx, call{route: RouteReleaseOrphans}.withJSON(r), &out)
}

// CreateEnrollmentToken makes a one-time enrollment token.
func (c *Client) CreateEnrollmentToken(ctx context.Context, r TokenRequest) (EnrollmentToken, error) {
	var out EnrollmentToken
	return out, c.do(ctx, call{route: RouteEnrollmentTokens}.withJSON(r), &out)
}

// Enroll sends a device's enrollment request (with an enrollment token,
// which the plain-HTTP guard protects like a bearer token).
func (c *Client) Enroll(ctx context.Context, r EnrollRequest) (EnrollStatus, error) {
	var out EnrollStatus
	req := call{route: RouteEnroll}.withJSON(r)
	req.secret = r.Token != ""
	return out, c.do(ctx, req, &out)
}

// EnrollStatus asks whether a device's request with this key was granted.
func (c *Client) EnrollStatus(ctx context.Context, device, publicKey string) (EnrollStatus, error) {
	var out EnrollStatus
	return out, c.do(ctx, call{route: RouteEnrollStatus, args: []string{device}, query: url.Values{"publicKey": {publicKey}}}, &out)
}

// Identities lists the enrolled devices and the waiting requests.
func (c *Client) Identities(ctx context.Context) (Identities, error) {
	var out Identities
	return out, c.do(ctx, call{route: RouteIdentities}, &out)
}

// Approve grants a device's waiting enrollment request.
func (c *Client) Approve(ctx context.Context, id string, r ApproveRequest) (Approval, error) {
	var out Approval
	req := call{route: RouteApprove, args: []string{id}}
	if r != (ApproveRequest{}) {
		req = req.withJSON(r)
	}
	return out, c.do(ctx, req, &out)
}

// Revoke deletes a device's identity.
func (c *Client) Revoke(ctx context.Context, id string) error {
	return c.do(ctx, call{route: RouteRevoke, args: []string{id}}, nil)
}

// Secrets lists the secrets: names, keys and versions, never values.
func (c *Client) Secrets(ctx context.Context) (SecretList, error) {
	var out SecretList
	return out, c.do(ctx, call{route: RouteSecrets}, &out)
}

// CreateSecret stores a new secret (conflict when the name is taken). The
// body carries values, which the plain-HTTP guard protects like a token.
func (c *Client) CreateSecret(ctx context.Context, w SecretWrite) (SecretInfo, error) {
	var out SecretInfo
	req := call{route: RouteCreateSecret}.withJSON(w)
	req.secret = true
	return out, c.do(ctx, req, &out)
}

// ReplaceSecret replaces every key of an existing secret (not_found when
// there is none): the devices that use it get the new values.
func (c *Client) ReplaceSecret(ctx context.Context, name string, w SecretWrite) (SecretInfo, error) {
	var out SecretInfo
	req := call{route: RouteReplaceSecret, args: []string{name}}.withJSON(w)
	req.secret = true
	return out, c.do(ctx, req, &out)
}

// DeleteSecret deletes a secret no deployment uses.
func (c *Client) DeleteSecret(ctx context.Context, name string) (SecretInfo, error) {
	var out SecretInfo
	return out, c.do(ctx, call{route: RouteDeleteSecret, args: []string{name}}, &out)
}
