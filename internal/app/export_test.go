package app

// PendingCancels is the number of cancel requests the proxy's relay is
// still sending again (relay.Relay.PendingCancels), for tests.
func (p *ProxyServer) PendingCancels() int { return p.rl.PendingCancels() }
