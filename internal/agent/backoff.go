package agent

import (
	"time"

	"github.com/cenkalti/backoff/v5"
)

// newBackoff is capped exponential backoff with jitter that never gives up.
func newBackoff(initial, max time.Duration) *backoff.ExponentialBackOff {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = initial
	b.MaxInterval = max
	b.Multiplier = 2
	b.RandomizationFactor = 0.2
	b.Reset()
	return b
}
