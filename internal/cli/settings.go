package cli

import (
	"os"
	"strings"

	"github.com/spf13/pflag"

	"github.com/harmony-fleet/harmony/internal/config"
)

// settingFlags registers one flag per setting, showing the default, and
// returns how to read each flag's text. Values are applied after the file and
// the environment (see loadSettings).
func settingFlags(fs *pflag.FlagSet, settings []config.Setting) map[string]func() string {
	vals := map[string]func() string{}
	for _, s := range settings {
		usage := s.Usage + " (env " + config.EnvName(s.Key) + ")"
		if s.Repeat {
			p := fs.StringArray(s.Flag, nil, usage+"; repeatable")
			vals[s.Key] = func() string { return strings.Join(*p, ",") }
			continue
		}
		if s.Bool {
			// A switch: its value comes only after "=" (noArgs explains
			// the stray argument of "--x false").
			usage = s.Usage + "; --" + s.Flag + "=false turns it off (env " + config.EnvName(s.Key) + ")"
		}
		p := fs.String(s.Flag, s.Get(), usage)
		vals[s.Key] = func() string { return *p }
		if s.Bool {
			fs.Lookup(s.Flag).NoOptDefVal = "true"
		}
	}
	return vals
}

// loadSettings merges the three sources into the config behind settings:
// file (when path is set), then environment, then the flags that were given.
// settings must point into the config that load fills.
func loadSettings(fs *pflag.FlagSet, path string, load func(path string) error, settings func() []config.Setting, flags map[string]func() string) error {
	if path == "" {
		path = os.Getenv("HARMONY_CONFIG")
	}
	if path != "" {
		if err := load(path); err != nil {
			return err
		}
	}
	if err := config.ApplyEnv(settings(), os.Environ()); err != nil {
		return err
	}
	for _, s := range settings() {
		f := fs.Lookup(s.Flag)
		if f == nil || !f.Changed {
			continue
		}
		if err := s.Set(flags[s.Key]()); err != nil {
			return usageError{&config.Error{Setting: s.Key, Source: "flag --" + s.Flag, Reason: err.Error()}}
		}
	}
	return nil
}
