package v1alpha1

import (
	"bufio"
	"embed"
	"fmt"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// PostgreSQL's settings catalogue per major version
// (scripts/pg-settings.sh writes it from pg_settings): a PostgresCluster's
// parameters are checked against it when applied, so that a value
// PostgreSQL would refuse never reaches a member.
//
//go:embed pgsettings/*.tsv
var pgSettingsFS embed.FS

// PGSetting is one setting of the catalogue.
type PGSetting struct {
	Name, Context, Type, Unit string
	Min, Max                  string
	Enum                      []string
}

// NeedsRestart reports whether a change takes a server restart.
func (s PGSetting) NeedsRestart() bool { return s.Context == "postmaster" }

var (
	pgSettingsMu sync.Mutex
	pgSettings   = map[int]map[string]PGSetting{}
)

// PGSettings is the catalogue of a major version (nil when Harmony has
// none for it: then only names are checked for form).
func PGSettings(version int) map[string]PGSetting {
	pgSettingsMu.Lock()
	defer pgSettingsMu.Unlock()
	if m, ok := pgSettings[version]; ok {
		return m
	}
	f, err := pgSettingsFS.Open(fmt.Sprintf("pgsettings/%d.tsv", version))
	if err != nil {
		pgSettings[version] = nil
		return nil
	}
	defer f.Close()
	m := map[string]PGSetting{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		c := strings.Split(sc.Text(), "\t")
		if len(c) != 7 {
			continue
		}
		s := PGSetting{Name: c[0], Context: c[1], Type: c[2], Unit: c[3], Min: c[4], Max: c[5]}
		if c[6] != "" {
			s.Enum = strings.Split(c[6], ",")
		}
		m[strings.ToLower(c[0])] = s
	}
	pgSettings[version] = m
	return m
}

var pgNumberRe = regexp.MustCompile(`^\s*(-?[0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?)\s*([a-zA-Z]*)\s*$`)

// Factors of PostgreSQL's units, in bytes and in microseconds.
var (
	pgMemoryUnits = map[string]float64{"B": 1, "kB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40, "8kB": 8 << 10, "16MB": 16 << 20}
	pgTimeUnits   = map[string]float64{"us": 1, "ms": 1e3, "s": 1e6, "min": 60e6, "h": 3600e6, "d": 86400e6}
)

// checkPGValue says why PostgreSQL would refuse value for s ("" when it
// would take it).
func checkPGValue(s PGSetting, value string) string {
	switch s.Context {
	case "internal":
		return "is fixed when PostgreSQL is built or initialised; it cannot be set"
	}
	switch s.Type {
	case "bool":
		switch strings.ToLower(strings.TrimSpace(value)) {
		case "on", "off", "true", "false", "yes", "no", "1", "0", "t", "f", "y", "n":
			return ""
		}
		return fmt.Sprintf("%q: want on or off", value)
	case "enum":
		if slices.ContainsFunc(s.Enum, func(e string) bool { return strings.EqualFold(e, strings.TrimSpace(value)) }) {
			return ""
		}
		return fmt.Sprintf("%q: want one of %s", value, strings.Join(s.Enum, ", "))
	case "integer", "real":
		m := pgNumberRe.FindStringSubmatch(value)
		if m == nil {
			return fmt.Sprintf("%q: want a number%s", value, unitHint(s.Unit))
		}
		n, _ := strconv.ParseFloat(m[1], 64)
		if u := m[2]; u != "" {
			from, to, ok := unitFactors(u, s.Unit)
			if !ok {
				return fmt.Sprintf("%q: unit %q does not fit this setting%s", value, u, unitHint(s.Unit))
			}
			n = n * from / to
		}
		if s.Type == "integer" {
			n = math.Round(n)
		}
		lo, _ := strconv.ParseFloat(s.Min, 64)
		hi, _ := strconv.ParseFloat(s.Max, 64)
		if s.Min != "" && s.Max != "" && (n < lo || n > hi) {
			return fmt.Sprintf("%q is outside %s to %s%s", value, s.Min, s.Max, unitSuffix(s.Unit))
		}
	}
	return ""
}

func unitFactors(given, unit string) (from, to float64, ok bool) {
	if f, ok1 := pgMemoryUnits[given]; ok1 {
		if t, ok2 := pgMemoryUnits[unit]; ok2 {
			return f, t, true
		}
	}
	if f, ok1 := pgTimeUnits[given]; ok1 {
		if t, ok2 := pgTimeUnits[unit]; ok2 {
			return f, t, true
		}
	}
	return 0, 0, false
}

func unitHint(unit string) string {
	switch {
	case unit == "":
		return ""
	case pgMemoryUnits[unit] != 0:
		return " (in " + unit + ", or with a unit: B, kB, MB, GB, TB)"
	default:
		return " (in " + unit + ", or with a unit: us, ms, s, min, h, d)"
	}
}

func unitSuffix(unit string) string {
	if unit == "" {
		return ""
	}
	return " (" + unit + ")"
}
