package store

import "fmt"

// WriteRecordChange applies one record change to the records of a repo and
// appends its event, in tx. ev must be a record event: for create and update
// ev.CID and ev.Record hold the new value; for delete both are nil. ev.ID is
// assigned. It is the one place where a record and its event are written
// together, for the backfill and the live path alike.
func WriteRecordChange(tx Tx, ev *Event) error {
	if ev.Kind != KindRecord {
		return fmt.Errorf("store: WriteRecordChange: event kind %v is not a record", ev.Kind)
	}
	switch ev.Action {
	case ActionCreate, ActionUpdate:
		if len(ev.CID) == 0 {
			return fmt.Errorf("store: %s %s/%s of %s: missing CID", ev.Action, ev.Collection, ev.RKey, ev.DID)
		}
		if err := tx.PutRecord(&Record{DID: ev.DID, Collection: ev.Collection, RKey: ev.RKey,
			CID: ev.CID, Rev: ev.Rev, Value: ev.Record}); err != nil {
			return err
		}
	case ActionDelete:
		if err := tx.DeleteRecord(ev.DID, ev.Collection, ev.RKey); err != nil {
			return err
		}
	default:
		return fmt.Errorf("store: WriteRecordChange: unknown action %v", ev.Action)
	}
	return tx.AppendEvent(ev)
}
