package server

import (
	"go/ast"
	"go/parser"
	"go/token"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/harmony-fleet/harmony/api/httpapi"
)

// TestServesTheContractsRoutes: the server registers exactly the routes
// of api/httpapi (which docs/openapi.yaml is checked against).
func TestServesTheContractsRoutes(t *testing.T) {
	got := slices.Sorted(maps.Keys((&handler{}).apiRoutes()))
	want := slices.Sorted(slices.Values(httpapi.Routes()))
	if !slices.Equal(got, want) {
		t.Fatalf("the server serves\n%s\nthe contract has\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestErrorCodesComeFromTheCatalogue: every error answer is made by
// httpapi.Errorf with one of the catalogue's constants (httpapi's own test
// checks that every constant is in the catalogue), so the server cannot
// send a code the catalogue does not have, nor a status other than its
// code's. The check reads the package's source: no httpapi.Error literal,
// no Code conversion or assignment other than from a constant.
func TestErrorCodesComeFromTheCatalogue(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	isConst := func(e ast.Expr) bool {
		sel, ok := e.(*ast.SelectorExpr)
		if !ok {
			return false
		}
		pkg, ok := sel.X.(*ast.Ident)
		if !ok || pkg.Name != "httpapi" || !strings.HasPrefix(sel.Sel.Name, "Code") {
			return false
		}
		_, known := slices.BinarySearch(catalogueNames(t), sel.Sel.Name)
		return known
	}
	checked := 0
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		src, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		f, err := parser.ParseFile(fset, name, src, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.CompositeLit:
				if sel, ok := n.Type.(*ast.SelectorExpr); ok && sel.Sel.Name == "Error" && isIdent(sel.X, "httpapi") {
					t.Errorf("%s: an httpapi.Error literal: use httpapi.Errorf with a catalogue code", fset.Position(n.Pos()))
				}
			case *ast.CallExpr:
				if sel, ok := n.Fun.(*ast.SelectorExpr); ok && isIdent(sel.X, "httpapi") {
					switch sel.Sel.Name {
					case "Code":
						t.Errorf("%s: a conversion to httpapi.Code", fset.Position(n.Pos()))
					case "Errorf":
						checked++
						if !isConst(n.Args[0]) {
							t.Errorf("%s: httpapi.Errorf with %s, not a catalogue constant", fset.Position(n.Pos()), src[n.Args[0].Pos()-1:n.Args[0].End()-1])
						}
					}
				}
			case *ast.AssignStmt:
				for i, l := range n.Lhs {
					if sel, ok := l.(*ast.SelectorExpr); ok && sel.Sel.Name == "Code" && i < len(n.Rhs) && !isConst(n.Rhs[i]) {
						t.Errorf("%s: an error's Code assigned from something other than a catalogue constant", fset.Position(n.Pos()))
					}
				}
			}
			return true
		})
	}
	if checked < 20 {
		t.Fatalf("found only %d httpapi.Errorf calls: the check no longer sees the handlers", checked)
	}
}

func isIdent(e ast.Expr, name string) bool {
	id, ok := e.(*ast.Ident)
	return ok && id.Name == name
}

// catalogueNames are the Go names of the catalogue's codes, sorted, read
// from api/httpapi/codes.go.
func catalogueNames(t *testing.T) []string {
	t.Helper()
	byValue := map[string]bool{}
	for _, c := range httpapi.Codes() {
		byValue[`"`+string(c.Code)+`"`] = true
	}
	f, err := parser.ParseFile(token.NewFileSet(), "../../api/httpapi/codes.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, d := range f.Decls {
		if g, ok := d.(*ast.GenDecl); ok && g.Tok == token.CONST {
			for _, s := range g.Specs {
				vs := s.(*ast.ValueSpec)
				if lit, ok := vs.Values[0].(*ast.BasicLit); ok && byValue[lit.Value] {
					names = append(names, vs.Names[0].Name)
				}
			}
		}
	}
	slices.Sort(names)
	return names
}
