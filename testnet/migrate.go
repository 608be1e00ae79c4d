package testnet

import "fmt"

// MoveTo migrates the account to host h, as an account migration between
// PDS hosts does: from now on h serves the repo (the same records, commits
// and keys) and the old host answers RepoNotFound for it, the DID document
// names h as the PDS, and an #identity frame says the document changed. It
// returns the frame's sequence number.
func (a *Account) MoveTo(h *Host) (int64, error) {
	if h == nil || h.net != a.net {
		return 0, fmt.Errorf("testnet: move %s: the host is not of this network", a.did)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.movedTo.Store(h)
	return a.emitIdentityLocked()
}
