package stream

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/cistern-dev/cistern/store"
)

// Meta keys of durable consumers: one per consumer holding its position,
// and an index of names (the store offers no prefix scan of meta).
const (
	consumerKeyPrefix = "stream/consumer/"
	consumerIndexKey  = "stream/consumers"
	maxNameLen        = 128
)

// Consumer is the persisted position of a durable consumer.
type Consumer struct {
	// Name is the consumer's name (SubscribeOptions.Name).
	Name string
	// Acked is the id of the last event acknowledged.
	Acked uint64
	// Updated is when Acked last moved.
	Updated time.Time
}

func checkName(name string) error {
	if name == "" || len(name) > maxNameLen {
		return fmt.Errorf("%w: consumer name must be 1 to %d characters, got %d", ErrInvalidOptions, maxNameLen, len(name))
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '.', c == '-', c == '_', c == ':':
		default:
			return fmt.Errorf("%w: consumer name %q: character %q not allowed (letters, digits and \".-_:\")",
				ErrInvalidOptions, name, c)
		}
	}
	return nil
}

func readConsumer(tx store.ReadTx, name string) (*Consumer, error) {
	v, err := tx.Meta(consumerKeyPrefix + name)
	if err != nil {
		return nil, err
	}
	if len(v) != 16 {
		return nil, fmt.Errorf("stream: consumer %q: corrupt position (%d bytes)", name, len(v))
	}
	return &Consumer{
		Name:    name,
		Acked:   binary.BigEndian.Uint64(v[:8]),
		Updated: time.Unix(0, int64(binary.BigEndian.Uint64(v[8:]))).UTC(),
	}, nil
}

func readNames(tx store.ReadTx) ([]string, error) {
	v, err := tx.Meta(consumerIndexKey)
	if errors.Is(err, store.ErrNotFound) || len(v) == 0 {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return splitNames(v), nil
}

func splitNames(v []byte) []string {
	var names []string
	for part := range bytes.SplitSeq(v, []byte{'\n'}) {
		names = append(names, string(part))
	}
	return names
}

func writeNames(tx store.Tx, names []string) error {
	if len(names) == 0 {
		return tx.DeleteMeta(consumerIndexKey)
	}
	var b bytes.Buffer
	for i, n := range names {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(n)
	}
	return tx.PutMeta(consumerIndexKey, b.Bytes())
}

// Ack records that the consumer has processed every event up to id, so
// that a later subscription under the same name resumes after it. Acks only
// move forward: an id at or below the stored one is ignored. id must not be
// beyond what the subscription has delivered (or filtered out); that fails
// with an error wrapping ErrFutureCursor. Each Ack that moves the position
// is one durable write transaction: ack every few hundred events, or every
// second, rather than every event.
func (s *Subscription) Ack(ctx context.Context, id uint64) error {
	if s.name == "" {
		return ErrNotDurable
	}
	if limit := max(s.sent.Load(), s.pos.Load()); id > limit {
		return fmt.Errorf("%w: ack %d beyond delivered position %d", ErrFutureCursor, id, limit)
	}
	now := s.log.opts.Now()
	return s.log.opts.Writer.Write(ctx, func(tx store.Tx) error {
		c, err := readConsumer(tx, s.name)
		switch {
		case errors.Is(err, store.ErrNotFound):
			names, err := readNames(tx)
			if err != nil {
				return err
			}
			if i, found := slices.BinarySearch(names, s.name); !found {
				if err := writeNames(tx, slices.Insert(names, i, s.name)); err != nil {
					return err
				}
			}
		case err != nil:
			return err
		case id <= c.Acked:
			return nil
		}
		var v [16]byte
		binary.BigEndian.PutUint64(v[:8], id)
		binary.BigEndian.PutUint64(v[8:], uint64(now.UnixNano()))
		return tx.PutMeta(consumerKeyPrefix+s.name, v[:])
	})
}

// Consumers returns the durable consumers with a stored position, by name.
func (l *Log) Consumers(ctx context.Context) ([]Consumer, error) {
	var out []Consumer
	err := l.st.View(ctx, func(tx store.ReadTx) error {
		names, err := readNames(tx)
		if err != nil {
			return err
		}
		for _, n := range names {
			c, err := readConsumer(tx, n)
			if errors.Is(err, store.ErrNotFound) {
				continue
			}
			if err != nil {
				return err
			}
			out = append(out, *c)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("stream: consumers: %w", err)
	}
	return out, nil
}

// Consumer returns the stored position of one durable consumer, or an error
// wrapping store.ErrNotFound.
func (l *Log) Consumer(ctx context.Context, name string) (*Consumer, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	var c *Consumer
	err := l.st.View(ctx, func(tx store.ReadTx) error {
		var err error
		c, err = readConsumer(tx, name)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("stream: consumer %q: %w", name, err)
	}
	return c, nil
}

// DeleteConsumer forgets a durable consumer's position; its next
// subscription starts from its Cursor. Deleting an unknown consumer is not
// an error; deleting one with an active subscription fails with
// ErrConsumerBusy.
func (l *Log) DeleteConsumer(ctx context.Context, name string) error {
	if err := checkName(name); err != nil {
		return err
	}
	l.mu.Lock()
	busy := l.names[name]
	l.mu.Unlock()
	if busy {
		return fmt.Errorf("%w: %q", ErrConsumerBusy, name)
	}
	return l.opts.Writer.Write(ctx, func(tx store.Tx) error {
		names, err := readNames(tx)
		if err != nil {
			return err
		}
		if i, found := slices.BinarySearch(names, name); found {
			if err := writeNames(tx, slices.Delete(names, i, i+1)); err != nil {
				return err
			}
		}
		return tx.DeleteMeta(consumerKeyPrefix + name)
	})
}
