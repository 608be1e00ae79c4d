package firehose

import (
	"container/heap"
	"errors"
	"fmt"
	"sync"
)

// ErrSeqOrder is returned by Watermark.Begin for a sequence number that is
// not above every one begun before.
var ErrSeqOrder = errors.New("firehose: sequence number out of order")

// Watermark tracks which sequence numbers are in flight and reports the
// highest one at or below which all work has ended: the cursor that is safe
// to persist.
//
// Sequence numbers must be begun in increasing order; they may end in any
// order. Value is min(in flight) - 1 while something is in flight, and the
// highest number begun otherwise (the start value before anything is
// begun). It never decreases.
//
// Cost: an indexed min-heap of the numbers in flight plus a map from number
// to heap position, so Begin and End are O(log n) and Value is O(1), with n
// the number in flight; memory is about 50 bytes per number in flight and
// nothing for numbers that have ended. The zero value is ready to use and
// starts at 0. A Watermark is safe for concurrent use.
type Watermark struct {
	mu   sync.Mutex
	h    seqHeap
	pos  map[int64]int // seq → index in h.seqs
	last int64         // highest seq begun, or the start value
}

// NewWatermark returns a Watermark whose Value is start until a number is
// begun; start is typically the cursor the stream was resumed from.
func NewWatermark(start int64) *Watermark {
	return &Watermark{last: start}
}

// Begin marks seq as in flight. seq must be above every number begun
// before and above the start value; otherwise Begin returns an error
// wrapping ErrSeqOrder and changes nothing.
func (w *Watermark) Begin(seq int64) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if seq <= w.last {
		return fmt.Errorf("%w: %d after %d", ErrSeqOrder, seq, w.last)
	}
	if w.pos == nil {
		w.pos = make(map[int64]int)
		w.h.pos = w.pos
	}
	w.last = seq
	heap.Push(&w.h, seq)
	return nil
}

// End marks seq as done. It reports false, and changes nothing, when seq is
// not in flight.
func (w *Watermark) End(seq int64) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	i, ok := w.pos[seq]
	if !ok {
		return false
	}
	heap.Remove(&w.h, i)
	return true
}

// Value returns the highest sequence number at or below which nothing is in
// flight.
func (w *Watermark) Value() int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.h.seqs) > 0 {
		return w.h.seqs[0] - 1
	}
	return w.last
}

// InFlight returns how many numbers are begun and not ended.
func (w *Watermark) InFlight() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.h.seqs)
}

// seqHeap is a min-heap of sequence numbers that keeps pos up to date.
type seqHeap struct {
	seqs []int64
	pos  map[int64]int
}

func (h *seqHeap) Len() int           { return len(h.seqs) }
func (h *seqHeap) Less(i, j int) bool { return h.seqs[i] < h.seqs[j] }
func (h *seqHeap) Swap(i, j int) {
	h.seqs[i], h.seqs[j] = h.seqs[j], h.seqs[i]
	h.pos[h.seqs[i]] = i
	h.pos[h.seqs[j]] = j
}

func (h *seqHeap) Push(x any) {
	s := x.(int64)
	h.pos[s] = len(h.seqs)
	h.seqs = append(h.seqs, s)
}

func (h *seqHeap) Pop() any {
	n := len(h.seqs) - 1
	s := h.seqs[n]
	h.seqs = h.seqs[:n]
	delete(h.pos, s)
	return s
}
