package store

import (
	"fmt"
	"strings"
)

// Validate reports what makes r unstorable: an empty DID, collection, rkey
// or CID, or a collection containing '/' (a repo path is collection "/"
// rkey, so the separator cannot be part of the collection). Every Store's
// PutRecord refuses such a record with this error and writes nothing; an
// implementation may refuse more (boltstore bounds the field lengths).
func (r *Record) Validate() error {
	switch {
	case r.DID == "":
		return fmt.Errorf("store: record has an empty DID")
	case r.Collection == "":
		return fmt.Errorf("store: record %s has an empty collection", r.DID)
	case strings.IndexByte(r.Collection, '/') >= 0:
		return fmt.Errorf("store: record %s: collection %q contains '/'", r.DID, r.Collection)
	case r.RKey == "":
		return fmt.Errorf("store: record %s/%s has an empty rkey", r.DID, r.Collection)
	case len(r.CID) == 0:
		return fmt.Errorf("store: record %s/%s/%s has an empty CID", r.DID, r.Collection, r.RKey)
	}
	return nil
}
