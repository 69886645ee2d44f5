package doccheck_test

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/harmony-fleet/harmony/api/v1alpha1"
	"github.com/harmony-fleet/harmony/internal/cli"
	"github.com/harmony-fleet/harmony/internal/config"
	"github.com/harmony-fleet/harmony/internal/doccheck"
)

// docFiles are the documents whose examples are checked: README.md and
// docs/*.md (not the ADRs, which record what was decided when).
func docFiles(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob("../../docs/*.md")
	if err != nil {
		t.Fatal(err)
	}
	return append([]string{"../../README.md"}, files...)
}

// TestDocsYAMLExamples reads every YAML example of the docs with the code
// that reads it in the product: the server's and the agent's config loader
// and Validate, or the Deployment decoder and validation of `harmony apply`.
// A block both configs could read needs a marker above it
// (<!-- doccheck: server --> or agent); server-fragment and agent-fragment
// mark settings to add to a file shown before (read, not validated alone);
// <!-- doccheck: skip --> leaves a block out.
func TestDocsYAMLExamples(t *testing.T) {
	checked := 0
	for _, file := range docFiles(t) {
		blocks, err := doccheck.Blocks(file)
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range blocks {
			if !b.IsYAML() {
				continue
			}
			kind := doccheck.Classify(b)
			if err := checkYAML(b, kind); err != nil {
				t.Errorf("%s: %s example: %v", where(b, err), kind, inBlock(err))
			}
			if kind != doccheck.Other && kind != doccheck.Skip {
				checked++
			}
		}
	}
	t.Logf("%d YAML examples checked", checked)
	if checked < 5 {
		t.Errorf("only %d YAML examples checked: is the docs' layout still the one this test reads?", checked)
	}
}

// where is file:line of an error in a block: the line the loader named,
// else the block's first.
func where(b doccheck.Block, err error) string {
	n := 0
	var fe *config.FileError
	if errors.As(err, &fe) && fe.Line > 0 {
		n = fe.Line - 1
	}
	return strings.TrimPrefix(filepath.ToSlash(b.Location(n)), "../../")
}

// inBlock is an error without the loader's file and line (where says them).
func inBlock(err error) error {
	var fe *config.FileError
	if errors.As(err, &fe) {
		if fe.Path != "" {
			return fmt.Errorf("%s: %s", fe.Path, fe.Reason)
		}
		return errors.New(fe.Reason)
	}
	return err
}

// checkYAML reads one block as its kind is read in the product.
func checkYAML(b doccheck.Block, kind doccheck.Kind) error {
	name := "block"
	switch kind {
	case doccheck.ServerConfig:
		c := config.DefaultServer()
		if err := config.Parse(name, []byte(b.Text), &c); err != nil {
			return err
		}
		return c.Validate()
	case doccheck.AgentConfig:
		c := config.DefaultAgent()
		if err := config.Parse(name, []byte(b.Text), &c); err != nil {
			return err
		}
		if c.ID == "" {
			c.ID = "doc-example" // the agent takes the host name
		}
		return c.Validate()
	case doccheck.ServerFragment:
		c := config.DefaultServer()
		return config.Parse(name, []byte(b.Text), &c)
	case doccheck.AgentFragment:
		c := config.DefaultAgent()
		return config.Parse(name, []byte(b.Text), &c)
	case doccheck.Deployment:
		docs, err := v1.ParseDeployments([]byte(b.Text))
		if err != nil {
			return err
		}
		for i := range docs {
			if err := docs[i].Validate(); err != nil {
				return fmt.Errorf("document %d: %w", i+1, err)
			}
		}
		return nil
	case doccheck.Ambiguous:
		return fmt.Errorf("both the server and the agent know these settings: put <!-- doccheck: server --> or <!-- doccheck: agent --> above the block")
	case doccheck.Other, doccheck.Skip:
		return nil
	}
	return fmt.Errorf("unknown marker %q (server, agent, deployment, other, skip)", kind)
}

// TestDocsCommandLines checks every `harmony ...` command of the docs'
// shell blocks against the CLI's commands and flags, without running them.
func TestDocsCommandLines(t *testing.T) {
	checked := 0
	for _, file := range docFiles(t) {
		blocks, err := doccheck.Blocks(file)
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range blocks {
			if !b.IsShell() || b.Marker == doccheck.Skip {
				continue
			}
			for _, c := range doccheck.Commands(b) {
				checked++
				if err := cli.CheckCommandLine(c.Args); err != nil {
					t.Errorf("%s: %s: %v", strings.TrimPrefix(filepath.ToSlash(b.Location(c.Line)), "../../"), c.Text, err)
				}
			}
		}
	}
	if checked < 3 {
		t.Errorf("only %d command lines checked", checked)
	}
}
