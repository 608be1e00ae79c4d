package testnet

// Load is a running load generator; see Network.StartLoad.
type Load struct{ stop func() }

// Stop stops the generator and waits for it.
func (l *Load) Stop() {
	if l.stop != nil {
		l.stop()
	}
}
