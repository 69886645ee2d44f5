package store_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/harmony-fleet/harmony/internal/mesh"
	"github.com/harmony-fleet/harmony/internal/store"
)

// TestListDirect: ListDirect returns what List returns (latest values,
// deleted keys left out, sorted) with one batched direct get: a client that
// may send direct gets but create no consumer lists with it and cannot
// with List. Past MaxDirectList keys it says so (ErrTooManyToList).
func TestListDirect(t *testing.T) {
	full, _ := nkeys.CreateUser()
	fullPub, _ := full.PublicKey()
	reader, _ := nkeys.CreateUser()
	readerPub, _ := reader.PublicKey()
	srv, err := mesh.StartServer(mesh.ServerConfig{DataDir: t.TempDir(), Listen: "127.0.0.1:0", Nkeys: []*natsserver.NkeyUser{
		{Nkey: fullPub},
		{Nkey: readerPub, Permissions: &natsserver.Permissions{Publish: &natsserver.SubjectPermission{Allow: []string{
			"$JS.API.STREAM.INFO.KV_b", "$JS.API.DIRECT.GET.KV_b"}}}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	connect := func(kp nkeys.KeyPair, pub string) store.Store {
		nc, err := nats.Connect(srv.ClientURL(), nats.Nkey(pub, kp.Sign))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		st, err := store.NewNATS(nc, store.NATSOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	ctx := context.Background()
	kv, err := connect(full, fullPub).Ensure(ctx, store.BucketConfig{Name: "b", History: 1, Replicas: 1})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"d1.x", "d1.y", "d1.z", "d2.x"} {
		if _, err := kv.Create(ctx, k, []byte(k)); err != nil {
			t.Fatal(err)
		}
	}
	e, _ := kv.Get(ctx, "d1.y")
	if _, err := kv.Update(ctx, "d1.y", []byte("y2"), e.Revision); err != nil {
		t.Fatal(err)
	}
	if err := kv.Delete(ctx, "d1.z", 0); err != nil {
		t.Fatal(err)
	}
	rkv, err := connect(reader, readerPub).Open(ctx, "b")
	if err != nil {
		t.Fatal(err)
	}
	got, err := rkv.(store.DirectLister).ListDirect(ctx, "d1.*")
	if err != nil {
		t.Fatalf("ListDirect: %v", err)
	}
	want, err := kv.List(ctx, "d1.*")
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(keysValues(got)) != fmt.Sprint(keysValues(want)) || len(got) != 2 {
		t.Fatalf("ListDirect = %v, List = %v", keysValues(got), keysValues(want))
	}
	for i := range got {
		if got[i].Revision != want[i].Revision {
			t.Fatalf("%s: revision %d, List says %d", got[i].Key, got[i].Revision, want[i].Revision)
		}
	}
	if l, err := rkv.(store.DirectLister).ListDirect(ctx, "nobody.*"); err != nil || len(l) != 0 {
		t.Fatalf("ListDirect of nothing = %v, %v", l, err)
	}
	if _, err := rkv.List(ctx, "d1.*"); err == nil {
		t.Fatal("List without the right to make a consumer worked: the test proves nothing")
	}
	for i := range store.MaxDirectList + 1 {
		if _, err := kv.Create(ctx, fmt.Sprintf("many.k%d", i), []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := rkv.(store.DirectLister).ListDirect(ctx, "many.*"); !errors.Is(err, store.ErrTooManyToList) {
		t.Fatalf("ListDirect of %d keys: %v, want ErrTooManyToList", store.MaxDirectList+1, err)
	}
}

func keysValues(es []store.Entry) []string {
	var out []string
	for _, e := range es {
		out = append(out, e.Key+"="+string(e.Value))
	}
	return out
}
