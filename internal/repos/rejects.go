package repos

import (
	"encoding/binary"
	"errors"

	"github.com/cistern-dev/cistern/store"
	"github.com/cistern-dev/cistern/verify"
)

// metaRejectPrefix prefixes the meta keys of the rejection counts.
const metaRejectPrefix = "stats/rejected/"

// CountReject adds one to the persisted count of rejections for reason.
func CountReject(tx store.Tx, reason verify.RejectReason) error {
	key := metaRejectPrefix + string(reason)
	n := uint64(0)
	if v, err := tx.Meta(key); err == nil && len(v) == 8 {
		n = binary.BigEndian.Uint64(v)
	}
	return tx.PutMeta(key, binary.BigEndian.AppendUint64(nil, n+1))
}

// RejectCounts reads the persisted rejection counts, by reason.
func RejectCounts(tx store.ReadTx) (map[verify.RejectReason]int64, error) {
	out := map[verify.RejectReason]int64{}
	for _, r := range verify.RejectReasons {
		v, err := tx.Meta(metaRejectPrefix + string(r))
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if len(v) == 8 {
			out[r] = int64(binary.BigEndian.Uint64(v))
		}
	}
	return out, nil
}
