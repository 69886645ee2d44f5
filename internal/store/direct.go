package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// DirectLister is a KV that can list the latest value of its keys with one
// batched direct get (JetStream's multi_last) instead of a consumer: no
// consumer is created and deleted on the server for it. Any replica may
// answer, so on a replicated bucket the answer can lag the leader by a
// moment, like a watch.
type DirectLister interface {
	// ListDirect is List for at most MaxDirectList keys whose values fit
	// one answer; past that it returns ErrTooManyToList (use List).
	ListDirect(ctx context.Context, filter string) ([]Entry, error)
}

// MaxDirectList is how many keys one batched direct get returns at most
// (nats-server answers more with "413 Too Many Results").
const MaxDirectList = 1024

// ErrTooManyToList: the keys (or their values) do not fit one batched
// direct get.
var ErrTooManyToList = errors.New("too many keys for one direct read")

var _ DirectLister = (*natsKV)(nil)

// ListDirect implements DirectLister.
func (k *natsKV) ListDirect(ctx context.Context, filter string) ([]Entry, error) {
	filter, err := k.listFilter("list", filter)
	if err != nil {
		return nil, err
	}
	ctx, cancel := k.s.withTimeout(ctx)
	defer cancel()
	inbox := k.s.nc.NewRespInbox()
	sub, err := k.s.nc.SubscribeSync(inbox)
	if err != nil {
		return nil, opError("list", k.bucket, filter, classify(err, false), err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	body, _ := json.Marshal(map[string]any{"multi_last": []string{k.prefix + filter}, "batch": MaxDirectList})
	if err := k.s.nc.PublishRequest("$JS.API.DIRECT.GET."+k.stream, inbox, body); err != nil {
		return nil, opError("list", k.bucket, filter, classify(err, false), err)
	}
	var out []Entry
	for {
		m, err := sub.NextMsgWithContext(ctx)
		if err != nil {
			return nil, opError("list", k.bucket, filter, ErrUnavailable, err)
		}
		switch status := m.Header.Get("Status"); status {
		case "":
		case "404": // no key matches
			return nil, nil
		case "204": // end of the batch: complete only if nothing is left
			if np := m.Header.Get("Nats-Num-Pending"); np != "" && np != "0" {
				return nil, opError("list", k.bucket, filter, ErrTooManyToList, fmt.Errorf("%s more", np))
			}
			sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
			return out, nil
		case "413":
			return nil, opError("list", k.bucket, filter, ErrTooManyToList, nil)
		case "503":
			return nil, opError("list", k.bucket, filter, ErrUnavailable, errors.New(m.Header.Get("Description")))
		default:
			return nil, opError("list", k.bucket, filter, ErrUnavailable,
				fmt.Errorf("direct get answered %s %s", status, m.Header.Get("Description")))
		}
		e, ok := k.directEntry(m)
		if !ok {
			return nil, opError("list", k.bucket, filter, ErrUnavailable, errors.New("direct get: a message without its headers"))
		}
		if e.Op == OpPut {
			out = append(out, e)
		}
	}
}

// directEntry reads one message of a direct get answer.
func (k *natsKV) directEntry(m *nats.Msg) (Entry, bool) {
	key, ok := strings.CutPrefix(m.Header.Get(jetstream.SubjectHeader), k.prefix)
	if !ok {
		return Entry{}, false
	}
	seq, err := strconv.ParseUint(m.Header.Get(jetstream.SequenceHeader), 10, 64)
	if err != nil {
		return Entry{}, false
	}
	created, _ := time.Parse(time.RFC3339Nano, m.Header.Get(jetstream.TimeStampHeaer))
	e := Entry{Key: key, Value: m.Data, Revision: seq, Created: created, Op: opFromHeaders(m.Header)}
	if e.Op != OpPut {
		e.Value = nil
	}
	return e, true
}
