package pg

import (
	"context"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
)

// LoginRole is a login role a declared cluster's primary keeps.
type LoginRole struct {
	Name     string
	Password string // "": none set
	Options  []string
}

// Database is a database a declared cluster's primary keeps.
type Database struct {
	Name, Owner string
}

// EnsureRolesAndDatabases creates the roles and databases that do not
// exist and sets every role's options and password, on the primary.
// Passwords travel as SCRAM verifiers made here, so that no statement
// (which PostgreSQL may log) carries one in clear.
func (i *Instance) EnsureRolesAndDatabases(ctx context.Context, roles []LoginRole, dbs []Database) error {
	c, err := i.connect(ctx)
	if err != nil {
		return err
	}
	defer c.Close(context.Background())
	for _, r := range roles {
		var exists bool
		if err := c.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)", r.Name).Scan(&exists); err != nil {
			return err
		}
		verb := "ALTER"
		if !exists {
			verb = "CREATE"
		}
		stmt := verb + " ROLE " + pgx.Identifier{r.Name}.Sanitize() + " WITH LOGIN"
		for _, o := range r.Options {
			stmt += " " + o // validated: a fixed set of keywords
		}
		if r.Password != "" {
			v, err := scramVerifier(r.Password)
			if err != nil {
				return err
			}
			stmt += " PASSWORD " + quoteLiteral(v)
		}
		if _, err := c.Exec(ctx, stmt); err != nil {
			return fmt.Errorf("role %s: %w", r.Name, err)
		}
	}
	for _, d := range dbs {
		var exists bool
		if err := c.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", d.Name).Scan(&exists); err != nil {
			return err
		}
		owner := d.Owner
		if owner == "" {
			owner = i.Superuser
		}
		stmt := "CREATE DATABASE " + pgx.Identifier{d.Name}.Sanitize() + " OWNER " + pgx.Identifier{owner}.Sanitize()
		if exists {
			stmt = "ALTER DATABASE " + pgx.Identifier{d.Name}.Sanitize() + " OWNER TO " + pgx.Identifier{owner}.Sanitize()
		}
		if _, err := c.Exec(ctx, stmt); err != nil {
			return fmt.Errorf("database %s: %w", d.Name, err)
		}
	}
	return nil
}

// SetSuperuserPassword sets the superuser's password (as a verifier).
func (i *Instance) SetSuperuserPassword(ctx context.Context, password string) error {
	v, err := scramVerifier(password)
	if err != nil {
		return err
	}
	c, err := i.connect(ctx)
	if err != nil {
		return err
	}
	defer c.Close(context.Background())
	_, err = c.Exec(ctx, "ALTER ROLE "+pgx.Identifier{i.Superuser}.Sanitize()+" PASSWORD "+quoteLiteral(v))
	return err
}

// scramVerifier is PostgreSQL's SCRAM-SHA-256 verifier of password
// (RFC 5802, 4096 iterations, as PostgreSQL makes them).
func scramVerifier(password string) (string, error) {
	salt := make([]byte, 16)
	if _, err := rand.Read(salt); err != nil {
		return "", err
	}
	const iter = 4096
	salted, err := pbkdf2.Key(sha256.New, password, salt, iter, sha256.Size)
	if err != nil {
		return "", err
	}
	mac := func(key []byte, msg string) []byte {
		h := hmac.New(sha256.New, key)
		h.Write([]byte(msg))
		return h.Sum(nil)
	}
	stored := sha256.Sum256(mac(salted, "Client Key"))
	server := mac(salted, "Server Key")
	b64 := base64.StdEncoding.EncodeToString
	return fmt.Sprintf("SCRAM-SHA-256$%d:%s$%s:%s", iter, b64(salt), b64(stored[:]), b64(server)), nil
}

// PassFileLine is a libpq password file's line giving user's password
// for every host, port and database.
func PassFileLine(user, password string) string {
	esc := strings.NewReplacer(`\`, `\\`, `:`, `\:`)
	return "*:*:*:" + esc.Replace(user) + ":" + esc.Replace(password) + "\n"
}

// PendingRestart lists the parameters changed in the configuration that
// wait for a restart.
func (i *Instance) PendingRestart(ctx context.Context) ([]string, error) {
	c, err := i.connect(ctx)
	if err != nil {
		return nil, err
	}
	defer c.Close(context.Background())
	rows, err := c.Query(ctx, "SELECT name FROM pg_settings WHERE pending_restart ORDER BY name")
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// Reload asks the server to read its configuration again.
func (i *Instance) Reload(ctx context.Context) error {
	return i.run(ctx, "pg_ctl", "reload", "-D", i.DataDir)
}
