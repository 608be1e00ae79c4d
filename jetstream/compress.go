package jetstream

import (
	_ "embed"
	"fmt"

	"github.com/klauspost/compress/zstd"
)

// dictionary is Jetstream's zstd dictionary for /subscribe (ID 1612007021);
// see zstd_dictionary.NOTICE for where it comes from and its license.
//
//go:embed zstd_dictionary
var dictionary []byte

// Dictionary returns a copy of the zstd dictionary compressed frames are
// written with: Jetstream's, which its clients ship.
func Dictionary() []byte { return append([]byte(nil), dictionary...) }

// Compressor compresses messages as Jetstream does for compress=true: each
// message one zstd frame written with Dictionary. It is safe for
// concurrent use and starts no goroutine.
type Compressor struct {
	enc *zstd.Encoder
}

// NewCompressor returns a Compressor.
func NewCompressor() (*Compressor, error) {
	enc, err := zstd.NewWriter(nil,
		zstd.WithEncoderDict(dictionary),
		zstd.WithEncoderLevel(zstd.SpeedDefault),
		zstd.WithEncoderCRC(false),
		zstd.WithLowerEncoderMem(true))
	if err != nil {
		return nil, fmt.Errorf("jetstream: zstd encoder: %w", err)
	}
	return &Compressor{enc: enc}, nil
}

// Append appends the compressed frame of msg to dst.
func (c *Compressor) Append(dst, msg []byte) []byte { return c.enc.EncodeAll(msg, dst) }
