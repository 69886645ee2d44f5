package store_test

import (
	"context"
	"fmt"
	"runtime"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/harmony-fleet/harmony/internal/mesh"
	"github.com/harmony-fleet/harmony/internal/mesh/meshtest"
	"github.com/harmony-fleet/harmony/internal/store"
)

// benchStore starts an embedded server on its own data directory (on the
// machine's real disk under t.TempDir) and returns a store over a TCP
// connection to it.
func benchStore(b *testing.B, syncAlways bool) store.Store {
	b.Helper()
	ns, err := mesh.StartServer(mesh.ServerConfig{Name: "bench", DataDir: b.TempDir(), Listen: "127.0.0.1:0", SyncAlways: syncAlways})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(ns.Shutdown)
	nc := meshtest.Connect(b, ns)
	st, err := store.NewNATS(nc, store.NATSOptions{Timeout: 30 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	return st
}

// BenchmarkKVUpdate measures CAS updates (Update with the expected revision),
// each writer on its own key, in three durability modes: the server syncs
// every write (sync-always), the server syncs every write but the bucket
// opts out (async-bucket: what Harmony does for heartbeats and observed
// state), and the server's default lazy sync (no-sync). b.N is the total
// number of updates. Reported: updates/s and per-update latency percentiles.
func BenchmarkKVUpdate(b *testing.B) {
	for _, mode := range []string{"sync-always", "async-bucket", "no-sync"} {
		for _, writers := range []int{1, 16, 64} {
			b.Run(fmt.Sprintf("%s/writers=%d", mode, writers), func(b *testing.B) {
				st := benchStore(b, mode != "no-sync")
				ctx := context.Background()
				kv, err := st.Ensure(ctx, store.BucketConfig{Name: "bench", History: 1, Replicas: 1, AsyncPersist: mode == "async-bucket"})
				if err != nil {
					b.Fatal(err)
				}
				revs := make([]uint64, writers)
				for w := range revs {
					if revs[w], err = kv.Create(ctx, "k"+strconv.Itoa(w), []byte("0")); err != nil {
						b.Fatal(err)
					}
				}
				lat := make([][]time.Duration, writers)
				per := b.N / writers
				if per == 0 {
					per = 1
				}
				value := make([]byte, 200) // about a device-state record
				b.ResetTimer()
				start := time.Now()
				var wg sync.WaitGroup
				for w := 0; w < writers; w++ {
					wg.Add(1)
					go func() {
						defer wg.Done()
						key := "k" + strconv.Itoa(w)
						for i := 0; i < per; i++ {
							t0 := time.Now()
							rev, err := kv.Update(ctx, key, value, revs[w])
							if err != nil {
								b.Error(err)
								return
							}
							lat[w] = append(lat[w], time.Since(t0))
							revs[w] = rev
						}
					}()
				}
				wg.Wait()
				elapsed := time.Since(start)
				b.StopTimer()
				var all []time.Duration
				for _, l := range lat {
					all = append(all, l...)
				}
				sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
				b.ReportMetric(float64(len(all))/elapsed.Seconds(), "updates/s")
				b.ReportMetric(ms(all[len(all)/2]), "p50-ms")
				b.ReportMetric(ms(all[len(all)*99/100]), "p99-ms")
			})
		}
	}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// BenchmarkWatchFanout measures what it costs to follow N keys: one watch
// (one JetStream consumer) per key, against one watch over the whole bucket.
// Each iteration writes one update to every key and waits until every update
// was delivered. Reported: time from the first write until every watcher has
// its update, the part of it after the last write, heap growth of the process
// (the embedded server and its client, both in this process) per key, and the
// time to set the watches up.
func BenchmarkWatchFanout(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		for _, mode := range []string{"watch-per-key", "one-watch"} {
			b.Run(fmt.Sprintf("keys=%d/%s", n, mode), func(b *testing.B) {
				st := benchStore(b, false)
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				kv, err := st.Ensure(ctx, store.BucketConfig{Name: "fan", History: 1, Replicas: 1, MaxWatchers: 2 * n})
				if err != nil {
					b.Fatal(err)
				}
				revs := make([]uint64, n)
				for i := range revs {
					if revs[i], err = kv.Create(ctx, "d"+strconv.Itoa(i), []byte("0")); err != nil {
						b.Fatal(err)
					}
				}
				heapBefore := heapInUse()
				setupStart := time.Now()
				var watchers []store.Watcher
				if mode == "watch-per-key" {
					for i := 0; i < n; i++ {
						w, err := kv.Watch(ctx, "d"+strconv.Itoa(i), store.WatchOptions{UpdatesOnly: true})
						if err != nil {
							b.Fatal(err)
						}
						<-w.Events() // the replay marker
						watchers = append(watchers, w)
					}
				} else {
					w, err := kv.Watch(ctx, "", store.WatchOptions{UpdatesOnly: true})
					if err != nil {
						b.Fatal(err)
					}
					<-w.Events()
					watchers = append(watchers, w)
				}
				setup := time.Since(setupStart)
				heapAfter := heapInUse()

				// Every watcher is drained by one goroutine that counts
				// deliveries; the writer waits for the count of a round.
				delivered := make(chan struct{}, n)
				var wg sync.WaitGroup
				for _, w := range watchers {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for ev := range w.Events() {
							if !ev.Replayed {
								delivered <- struct{}{}
							}
						}
					}()
				}
				var total, tail time.Duration
				b.ResetTimer()
				for it := 0; it < b.N; it++ {
					start := time.Now()
					for i := range revs {
						if revs[i], err = kv.Update(ctx, "d"+strconv.Itoa(i), []byte("1"), revs[i]); err != nil {
							b.Fatal(err)
						}
					}
					written := time.Now()
					for i := 0; i < n; i++ {
						<-delivered
					}
					total += time.Since(start)
					tail += time.Since(written)
				}
				b.StopTimer()
				cancel()
				wg.Wait()
				b.ReportMetric(ms(total)/float64(b.N), "write-and-deliver-all-ms")
				b.ReportMetric(ms(tail)/float64(b.N), "after-last-write-ms")
				b.ReportMetric(float64(int64(heapAfter)-int64(heapBefore))/float64(n)/1024, "heap-KiB/key")
				b.ReportMetric(setup.Seconds(), "setup-s")
			})
		}
	}
}

func heapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}
