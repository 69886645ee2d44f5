package doccheck

import (
	"reflect"
	"testing"
)

const sample = "# Title\n" + // 1
	"\n" + // 2
	"```yaml\n" + // 3
	"data_dir: /var/lib/harmony\n" + // 4
	"nats: 0.0.0.0:4222\n" + // 5
	"```\n" + // 6
	"\n" + // 7
	"- a list item:\n" + // 8
	"\n" + // 9
	"  ```sh\n" + // 10
	"  harmony get devices\n" + // 11
	"  ```\n" + // 12
	"<!-- doccheck: agent -->\n" + // 13
	"~~~yml title\n" + // 14
	"nats_url: [nats://a:4222]\n" + // 15
	"~~~\n" + // 16
	"```\n" + // 17
	"no language\n" + // 18
	"```\n" // 19

func TestParse(t *testing.T) {
	got := Parse("x.md", []byte(sample))
	want := []Block{
		{File: "x.md", Lang: "yaml", Line: 4, Text: "data_dir: /var/lib/harmony\nnats: 0.0.0.0:4222\n"},
		{File: "x.md", Lang: "sh", Line: 11, Text: "harmony get devices\n"},
		{File: "x.md", Lang: "yml", Line: 15, Text: "nats_url: [nats://a:4222]\n", Marker: AgentConfig},
		{File: "x.md", Lang: "", Line: 18, Text: "no language\n"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Parse:\n got %+v\nwant %+v", got, want)
	}
	if loc := got[0].Location(1); loc != "x.md:5" {
		t.Errorf("Location(1) = %q, want x.md:5", loc)
	}
}

func TestParseUnclosedBlockRunsToTheEnd(t *testing.T) {
	got := Parse("x.md", []byte("text\n```yaml\na: 1\n"))
	if len(got) != 1 || got[0].Text != "a: 1\n" || got[0].Line != 3 {
		t.Fatalf("got %+v", got)
	}
}

func TestParseLongerFenceHoldsShorterOne(t *testing.T) {
	got := Parse("x.md", []byte("````md\n```yaml\na: 1\n```\n````\n"))
	if len(got) != 1 || got[0].Lang != "md" || got[0].Text != "```yaml\na: 1\n```\n" {
		t.Fatalf("got %+v", got)
	}
}

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		name, text string
		marker     Kind
		want       Kind
	}{
		{"server keys", "data_dir: /x\nnats: 0.0.0.0:4222\nhttp: :8080\n", "", ServerConfig},
		{"server tokens only", "tokens:\n  - name: a\n    role: admin\n", "", ServerConfig},
		{"cluster fragment", "name: hm-1\nroutes: [a:6222]\nreplicas: 3\n", "", ServerConfig},
		{"agent keys", "id: pi\nnats_url: [nats://a:4222]\nlabels: {a: b}\n", "", AgentConfig},
		{"agent with failover", "id: db-1\nfailover:\n  cluster: orders\n", "", AgentConfig},
		{"agent with a typo still agent", "id: pi\nstate_dri: /x\n", "", AgentConfig},
		{"shared keys only", "nats_url: [nats://a:4222]\nnats_ca: /ca.pem\n", "", Ambiguous},
		{"marker decides", "nats_url: [nats://a:4222]\n", ServerConfig, ServerConfig},
		{"deployment", "apiVersion: harmony/v1alpha1\nkind: Deployment\nmetadata: {name: web}\n", "", Deployment},
		{"deployment second doc", "# c\n---\nkind: Deployment\n", "", Deployment},
		{"other kind", "apiVersion: v1\nkind: Pod\n", "", Other},
		{"openapi", "openapi: 3.0.3\ninfo: {title: x}\npaths: {}\n", "", Other},
		{"unknown keys", "defaults:\n  mode: tcp\n", "", Other},
		{"not a mapping", "- a\n- b\n", "", Other},
		{"broken yaml with agent keys", "id: pi\nlabels: {a: [\n", "", AgentConfig},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := Block{Lang: "yaml", Text: tc.text, Marker: tc.marker}
			if got := Classify(b); got != tc.want {
				t.Errorf("Classify = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestDocuments(t *testing.T) {
	got := Documents("a: 1\n---\nb: 2\nc: 3\n")
	want := []Document{{Text: "a: 1\n", Line: 0}, {Text: "b: 2\nc: 3\n", Line: 2}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
}

func TestCommands(t *testing.T) {
	b := Block{Lang: "sh", Text: "# admin\n" +
		"harmony token create --expires 1h --device kiosk-3      # prints a token\n" +
		"harmony enroll --server https://h:8080 --ca ca.pem \\\n" +
		"  --id kiosk-3 --token \"$TOKEN\"\n" +
		"$ HARMONY_TOKEN=abc harmony get devices -o json | jq .\n" +
		"sudo harmony agent --label 'site=home' 2>/dev/null\n" +
		"echo harmony\n" +
		"secret=$(openssl rand -hex 32)\n"}
	got := Commands(b)
	want := []Command{
		{Args: []string{"token", "create", "--expires", "1h", "--device", "kiosk-3"}, Line: 1},
		{Args: []string{"enroll", "--server", "https://h:8080", "--ca", "ca.pem", "--id", "kiosk-3", "--token", "$TOKEN"}, Line: 2},
		{Args: []string{"get", "devices", "-o", "json"}, Line: 4},
		{Args: []string{"agent", "--label", "site=home"}, Line: 5},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d commands %+v, want %d", len(got), got, len(want))
	}
	for i := range want {
		if !reflect.DeepEqual(got[i].Args, want[i].Args) || got[i].Line != want[i].Line {
			t.Errorf("command %d: got %q at %d, want %q at %d", i, got[i].Args, got[i].Line, want[i].Args, want[i].Line)
		}
	}
}

func TestSplit(t *testing.T) {
	for in, want := range map[string][]string{
		`a "b c" 'd e' f\ g`: {"a", "b c", "d e", "f g"},
		`a --x="1 2";b`:      {"a", "--x=1 2"},
		`a # comment`:        {"a"},
		`a#b`:                {"a#b"},
		`a > out`:            {"a"},
		`a 2>&1`:             {"a"},
		``:                   nil,
	} {
		if got := Split(in); !reflect.DeepEqual(got, want) {
			t.Errorf("Split(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestIndentedCommands: harmony lines of indented code blocks are found
// (with their continuations), prose and fenced blocks' lines are not.
func TestIndentedCommands(t *testing.T) {
	md := "Run it:\n" + // 1
		"\n" + // 2
		"    harmony agent --id a \\\n" + // 3
		"        --label x=y\n" + // 4
		"    make run\n" + // 5
		"\n" + // 6
		"text harmony get devices\n" + // 7
		"continued prose\n" + // 8
		"    harmony not-code-after-prose\n" + // 9
		"```sh\n" + // 10
		"    harmony in-a-fence\n" + // 11
		"```\n" + // 12
		"\n" + // 13
		"    bin/harmony get devices\n" // 14
	var got []string
	for _, b := range Parse("x.md", []byte(md)) {
		for _, c := range Commands(b) {
			got = append(got, b.Location(c.Line)+" "+c.Text)
		}
	}
	want := []string{
		"x.md:11 harmony in-a-fence",
		"x.md:3 harmony agent --id a  --label x=y",
		"x.md:14 bin/harmony get devices",
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("commands\n got %q\nwant %q", got, want)
	}
}
