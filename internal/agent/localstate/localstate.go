// Package localstate keeps what the agent must remember across restarts on
// local disk: the last good desired state of each deployment (so the agent
// enforces it without the mesh), the ownership ledger (what the agent created
// and may therefore change or remove), and the record of ShellJob runs.
// Every file is written atomically: temporary file, fsync, rename, fsync of
// the directory.
package localstate

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
)

// Dir is the agent's state directory.
type Dir struct {
	path string
	mu   sync.Mutex
}

// Open creates the directory layout under path when missing.
func Open(path string) (*Dir, error) {
	for _, sub := range []string{"desired", "ledger", "jobs", "secrets"} {
		if err := os.MkdirAll(filepath.Join(path, sub), 0o700); err != nil {
			return nil, fmt.Errorf("state dir: %w", err)
		}
	}
	return &Dir{path: path}, nil
}

// Path is where the state lives.
func (d *Dir) Path() string { return d.path }

// WriteFileAtomic writes data to path through a temporary file in the same
// directory, fsyncs it, renames it into place and fsyncs the directory, so a
// crash leaves either the old or the new content, never a torn file.
func WriteFileAtomic(path string, data []byte, mode os.FileMode) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmpName := tmp.Name()
	defer os.Remove(tmpName) // no-op after a successful rename
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmpName, path); err != nil {
		return err
	}
	if df, err := os.Open(dir); err == nil {
		_ = df.Sync()
		df.Close()
	}
	return nil
}

// SaveDesired stores the raw desired-state value of one deployment.
func (d *Dir) SaveDesired(deployment string, value []byte) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return WriteFileAtomic(filepath.Join(d.path, "desired", deployment+".json"), value, 0o600)
}

// SaveSecret keeps a secret the desired state uses (the stored record,
// mode 0600 in a 0700 directory), so that an agent started without the
// mesh can still enforce what takes values from it.
func (d *Dir) SaveSecret(name string, value []byte) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return WriteFileAtomic(filepath.Join(d.path, "secrets", name+".json"), value, 0o600)
}

// LoadSecret reads a kept secret (os.ErrNotExist when none is kept).
func (d *Dir) LoadSecret(name string) ([]byte, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return os.ReadFile(filepath.Join(d.path, "secrets", name+".json"))
}

// DropSecretsExcept removes the kept secrets not named in keep.
func (d *Dir) DropSecretsExcept(keep map[string]bool) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	dir := filepath.Join(d.path, "secrets")
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		name := e.Name()
		if filepath.Ext(name) != ".json" || keep[name[:len(name)-len(".json")]] {
			continue
		}
		if err := os.Remove(filepath.Join(dir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	return nil
}

// DropDesired forgets a deployment's desired state.
func (d *Dir) DropDesired(deployment string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	err := os.Remove(filepath.Join(d.path, "desired", deployment+".json"))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}

// LoadDesired returns every cached desired state by deployment name.
func (d *Dir) LoadDesired() (map[string][]byte, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	entries, err := os.ReadDir(filepath.Join(d.path, "desired"))
	if err != nil {
		return nil, err
	}
	out := map[string][]byte{}
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || filepath.Ext(name) != ".json" || name[0] == '.' {
			continue
		}
		b, err := os.ReadFile(filepath.Join(d.path, "desired", name))
		if err != nil {
			return nil, err
		}
		out[name[:len(name)-len(".json")]] = b
	}
	return out, nil
}

// Owned is one thing the agent created on the device.
type Owned struct {
	Kind       string `json:"kind"`
	Claim      string `json:"claim"` // the device-level name: file path, unit, container name
	Deployment string `json:"deployment"`
	ResourceID string `json:"resourceId"`
	// Spec is the last spec applied, so the reconciler can undo it.
	Spec json.RawMessage `json:"spec,omitempty"`
}

// Key identifies an owned thing on the device.
func (o Owned) Key() string { return o.Kind + "/" + o.Claim }

// Ledger is the set of owned things, persisted as one file.
type Ledger struct {
	dir   *Dir
	mu    sync.Mutex
	items map[string]Owned
}

// Ledger loads the ownership ledger.
func (d *Dir) Ledger() (*Ledger, error) {
	l := &Ledger{dir: d, items: map[string]Owned{}}
	b, err := os.ReadFile(l.file())
	if errors.Is(err, os.ErrNotExist) {
		return l, nil
	}
	if err != nil {
		return nil, err
	}
	var list []Owned
	if err := json.Unmarshal(b, &list); err != nil {
		return nil, fmt.Errorf("ledger %s: %w", l.file(), err)
	}
	for _, o := range list {
		l.items[o.Key()] = o
	}
	return l, nil
}

func (l *Ledger) file() string { return filepath.Join(l.dir.path, "ledger", "owned.json") }

// Get returns the owner record of kind/claim.
func (l *Ledger) Get(kind, claim string) (Owned, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	o, ok := l.items[kind+"/"+claim]
	return o, ok
}

// All returns every owned thing, sorted by key.
func (l *Ledger) All() []Owned {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.sortedLocked()
}

func (l *Ledger) sortedLocked() []Owned {
	out := make([]Owned, 0, len(l.items))
	for _, o := range l.items {
		out = append(out, o)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key() < out[j].Key() })
	return out
}

// Put records (or updates) an owned thing and persists the ledger.
func (l *Ledger) Put(o Owned) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.items[o.Key()] = o
	return l.saveLocked()
}

// Remove forgets an owned thing and persists the ledger.
func (l *Ledger) Remove(kind, claim string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.items, kind+"/"+claim)
	return l.saveLocked()
}

func (l *Ledger) saveLocked() error {
	b, err := json.MarshalIndent(l.sortedLocked(), "", "  ")
	if err != nil {
		return err
	}
	return WriteFileAtomic(l.file(), b, 0o600)
}

// JobRecord says a ShellJob ran for one (deployment, deployment UID,
// generation, job id).
type JobRecord struct {
	Deployment string `json:"deployment"`
	UID        string `json:"uid,omitempty"`
	Generation int64  `json:"generation"`
	JobID      string `json:"jobId"`
	ExitCode   int    `json:"exitCode"`
	Error      string `json:"error,omitempty"`
	OutputTail string `json:"outputTail"`
	StartedAt  string `json:"startedAt"`
	FinishedAt string `json:"finishedAt"`
}

// jobFile is where a run's record is. A deployment deleted and created
// again starts at generation 1 under a new UID, so the UID is part of the
// name; records of deployments created before UIDs keep the old name.
func (d *Dir) jobFile(deployment, uid string, generation int64, jobID string) string {
	if uid == "" {
		return filepath.Join(d.path, "jobs", fmt.Sprintf("%s.%d.%s.json", deployment, generation, jobID))
	}
	return filepath.Join(d.path, "jobs", fmt.Sprintf("%s.%s.%d.%s.json", deployment, uid, generation, jobID))
}

// Job returns the record of a run, if there was one.
func (d *Dir) Job(deployment, uid string, generation int64, jobID string) (JobRecord, bool, error) {
	b, err := os.ReadFile(d.jobFile(deployment, uid, generation, jobID))
	if errors.Is(err, os.ErrNotExist) {
		return JobRecord{}, false, nil
	}
	if err != nil {
		return JobRecord{}, false, err
	}
	var r JobRecord
	if err := json.Unmarshal(b, &r); err != nil {
		return JobRecord{}, false, err
	}
	return r, true, nil
}

// RecordJob stores the record of a run.
func (d *Dir) RecordJob(r JobRecord) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return WriteFileAtomic(d.jobFile(r.Deployment, r.UID, r.Generation, r.JobID), b, 0o600)
}
