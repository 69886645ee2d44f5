package httpapi_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"maps"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/harmony-fleet/harmony/api/httpapi"
	v1 "github.com/harmony-fleet/harmony/api/v1alpha1"
)

// TestCatalogueIsComplete: every Code constant declared in the package is
// in Codes, once, with an error status and a meaning.
func TestCatalogueIsComplete(t *testing.T) {
	declared := map[string]bool{}
	f, err := parser.ParseFile(token.NewFileSet(), "codes.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range f.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Tok != token.CONST {
			continue
		}
		for _, spec := range g.Specs {
			vs := spec.(*ast.ValueSpec)
			if id, ok := vs.Type.(*ast.Ident); ok && id.Name == "Code" {
				v, _ := strconv.Unquote(vs.Values[0].(*ast.BasicLit).Value)
				declared[v] = true
			}
		}
	}
	seen := map[httpapi.Code]bool{}
	for _, c := range httpapi.Codes() {
		if seen[c.Code] {
			t.Errorf("%s is in the catalogue twice", c.Code)
		}
		seen[c.Code] = true
		if c.Status < 400 || c.Status > 599 || c.Meaning == "" {
			t.Errorf("%s: status %d, meaning %q", c.Code, c.Status, c.Meaning)
		}
		if !declared[string(c.Code)] {
			t.Errorf("%s is in the catalogue but not a constant of codes.go", c.Code)
		}
		if info, ok := c.Code.Info(); !ok || info != c || c.Code.Status() != c.Status {
			t.Errorf("%s: Info %v %v", c.Code, info, ok)
		}
	}
	for code := range declared {
		if !seen[httpapi.Code(code)] {
			t.Errorf("the constant %q is not in the catalogue (Codes)", code)
		}
	}
	if _, ok := httpapi.Code("nonsense").Info(); ok || httpapi.Code("nonsense").Status() != 500 {
		t.Error("a code outside the catalogue is known")
	}
}

// openapi is docs/openapi.yaml as far as the checks read it.
type openapi struct {
	Paths      map[string]map[string]any `json:"paths"`
	Components struct {
		Schemas map[string]schema `json:"schemas"`
	} `json:"components"`
}

type schema struct {
	Description string            `json:"description"`
	Enum        []string          `json:"enum"`
	Properties  map[string]schema `json:"properties"`
}

func readOpenAPI(t *testing.T) openapi {
	t.Helper()
	b, err := os.ReadFile("../../docs/openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc openapi
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatalf("docs/openapi.yaml: %v", err)
	}
	return doc
}

// TestOpenAPIDescribesTheRoutes: docs/openapi.yaml has exactly the routes
// of the package (which the server registers, see its tests).
func TestOpenAPIDescribesTheRoutes(t *testing.T) {
	doc := readOpenAPI(t)
	var described []string
	for path, item := range doc.Paths {
		for method := range item {
			switch method {
			case "get", "post", "put", "patch", "delete", "head":
				described = append(described, strings.ToUpper(method)+" "+path)
			}
		}
	}
	slices.Sort(described)
	routes := slices.Sorted(slices.Values(httpapi.Routes()))
	if !slices.Equal(described, routes) {
		t.Errorf("docs/openapi.yaml describes\n%s\nthe package's routes are\n%s", strings.Join(described, "\n"), strings.Join(routes, "\n"))
	}
}

// TestOpenAPIListsTheCatalogue: the ErrorCode schema lists every code of
// the catalogue and no other, and gives each its status.
func TestOpenAPIListsTheCatalogue(t *testing.T) {
	ec := readOpenAPI(t).Components.Schemas["ErrorCode"]
	var codes []string
	for _, c := range httpapi.Codes() {
		codes = append(codes, string(c.Code))
		if want := string(c.Code) + " " + strconv.Itoa(c.Status); !strings.Contains(ec.Description, want) {
			t.Errorf("ErrorCode's description does not say %q", want)
		}
	}
	if !slices.Equal(slices.Sorted(slices.Values(ec.Enum)), slices.Sorted(slices.Values(codes))) {
		t.Errorf("ErrorCode lists %v, the catalogue has %v", ec.Enum, codes)
	}
}

// TestOpenAPISchemasMatchTheTypes: every schema with properties has
// exactly the JSON names of its Go type; the ones without are opaque
// (described in api/v1alpha1).
func TestOpenAPISchemasMatchTheTypes(t *testing.T) {
	types := map[string]any{
		"ErrorBody": httpapi.ErrorBody{}, "Error": httpapi.Error{}, "Status": httpapi.Status{}, "FleetCounts": httpapi.FleetCounts{},
		"DeploymentList": httpapi.DeploymentList{}, "DeviceList": httpapi.DeviceList{}, "DeploymentView": httpapi.DeploymentView{},
		"DeploymentStatus": httpapi.DeploymentStatus{}, "DeploymentDevice": httpapi.DeploymentDevice{}, "Device": httpapi.Device{},
		"DeviceView": httpapi.DeviceView{}, "Inventory": v1.Inventory{}, "ApplyResults": httpapi.ApplyResults{},
		"ApplyResult": httpapi.ApplyResult{}, "DeleteResult": httpapi.DeleteResult{}, "LabelPatch": httpapi.LabelPatch{},
		"DeviceLabels": httpapi.DeviceLabels{}, "ExecRequest": httpapi.ExecRequest{}, "CommandReply": v1.CommandReply{},
		"OrphanHold": httpapi.OrphanHold{}, "OrphanRelease": httpapi.OrphanRelease{}, "OrphanReleaseResult": httpapi.OrphanReleaseResult{},
		"TokenRequest": httpapi.TokenRequest{}, "EnrollmentToken": httpapi.EnrollmentToken{}, "EnrollRequest": httpapi.EnrollRequest{},
		"EnrollStatus": httpapi.EnrollStatus{}, "Identities": httpapi.Identities{}, "Identity": httpapi.Identity{},
		"PendingRequest": httpapi.PendingRequest{}, "ApproveRequest": httpapi.ApproveRequest{}, "Approval": httpapi.Approval{},
		"SecretWrite": httpapi.SecretWrite{}, "SecretInfo": httpapi.SecretInfo{}, "SecretList": httpapi.SecretList{},
		"DeploymentHistory": httpapi.DeploymentHistory{}, "HistoryRecord": httpapi.HistoryRecord{}, "UndoRequest": httpapi.UndoRequest{},
		"RolloutStatus": v1.RolloutStatus{}, "RolloutBatchStatus": v1.RolloutBatchStatus{},
	}
	opaque := map[string]bool{"Deployment": true, "DeviceState": true, "ErrorCode": true}
	schemas := readOpenAPI(t).Components.Schemas
	for name, s := range schemas {
		v, ok := types[name]
		switch {
		case opaque[name]:
			continue
		case !ok:
			t.Errorf("schema %s: no Go type is checked against it (add it to this test)", name)
			continue
		}
		got := slices.Sorted(maps.Keys(s.Properties))
		want := jsonNames(reflect.TypeOf(v))
		if !slices.Equal(got, want) {
			t.Errorf("schema %s has properties %v, its Go type %T has %v", name, got, v, want)
		}
	}
	for name := range types {
		if _, ok := schemas[name]; !ok {
			t.Errorf("no schema %s in docs/openapi.yaml", name)
		}
	}
}

// jsonNames are the JSON names of a struct's fields, embedded structs'
// included, sorted.
func jsonNames(t reflect.Type) []string {
	var out []string
	for f := range t.Fields() {
		tag := f.Tag.Get("json")
		name, _, _ := strings.Cut(tag, ",")
		switch {
		case name == "-" || !f.IsExported():
		case f.Anonymous && name == "":
			out = append(out, jsonNames(f.Type)...)
		case name == "":
			out = append(out, f.Name)
		default:
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}
