package web

import (
	"fmt"
	"time"

	"github.com/harmony-fleet/harmony/internal/failover"
)

// timeline is the picture of a cluster's history: one band per stretch of
// time a node was primary, a mark at every epoch change (a failover or a
// switchover). Coordinates are in a 1000 x 60 viewBox.
type timeline struct {
	Bands   []band
	Marks   []mark
	From    string
	To      string
	Changes int
}

type band struct {
	X, W    float64
	Class   string // c0..c5, one colour per node
	Primary string
	Label   bool // wide enough to print the name
	Title   string
}

type mark struct {
	X     float64
	Title string
}

const timelineWidth = 1000.0

func newTimeline(hist []failover.HistoryEntry, now time.Time) timeline {
	var t timeline
	if len(hist) == 0 {
		return t
	}
	start := hist[0].At
	span := now.Sub(start)
	if span <= 0 {
		span = time.Second
	}
	x := func(at time.Time) float64 { return timelineWidth * float64(at.Sub(start)) / float64(span) }
	colour := map[string]int{}
	for i, h := range hist {
		if _, ok := colour[h.Primary]; !ok {
			colour[h.Primary] = len(colour) % 6
		}
		end := now
		if i+1 < len(hist) {
			end = hist[i+1].At
		}
		// Entries that only change the sync standby or pause extend the band.
		if n := len(t.Bands); n > 0 && t.Bands[n-1].Primary == h.Primary && hist[i-1].Epoch == h.Epoch {
			b := &t.Bands[n-1]
			b.W = x(end) - b.X
			b.Label = b.W > 60
			b.Title = fmt.Sprintf("%s primary, epoch %d, since %s", h.Primary, h.Epoch, hist[i-1].At.Format(time.RFC3339))
			continue
		}
		w := x(end) - x(h.At)
		t.Bands = append(t.Bands, band{X: x(h.At), W: w, Class: fmt.Sprintf("c%d", colour[h.Primary]),
			Primary: h.Primary, Label: w > 60,
			Title: fmt.Sprintf("%s primary, epoch %d, since %s (%s)", h.Primary, h.Epoch, h.At.Format(time.RFC3339), h.Reason)})
		if i > 0 && hist[i-1].Epoch != h.Epoch {
			t.Changes++
			t.Marks = append(t.Marks, mark{X: x(h.At),
				Title: fmt.Sprintf("%s: %s → %s (epoch %d): %s", h.At.Format(time.RFC3339), hist[i-1].Primary, h.Primary, h.Epoch, h.Reason)})
		}
	}
	t.From, t.To = start.Format(time.RFC3339), now.UTC().Format(time.RFC3339)
	return t
}
