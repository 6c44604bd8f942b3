// Package tunnel holds one SSH connection to a bastion host and opens
// direct-tcpip channels through it; a [Chain] ([DialChain]) is one such
// connection per hop of a chain of jump hosts, each dialled through the
// one before.
//
// A [Tunnel] is made by [Dial]. It verifies the bastion's host key against
// pinned keys (failing closed), authenticates with its client key (or a
// second one, [Config.Fallback], when the bastion refuses the first), sends
// keepalive@openssh.com requests and answers the bastion's own keepalives.
// When the bastion stops answering or the connection closes, the tunnel is
// dropped: [Tunnel.Done] closes, [Tunnel.Err] reports a [*DroppedError], and
// every connection handed out by [Tunnel.DialContext] fails promptly with it.
//
// The key exchange, cipher, MAC and host key algorithms offered are set
// explicitly to modern ones (no SHA-1, DSA, CBC or RC4); [Tunnel.Negotiated]
// reports what the handshake settled on, and a bastion that offers nothing
// acceptable for some part is refused with an [*AlgorithmError] naming what
// it offered.
//
// [Tunnel.DialContext] has the signature of a pgx DialFunc, so many database
// connections can share one SSH connection as channels.
//
// Every failure is a typed error that says which hop failed and what to do:
// [*DialError], [*HandshakeError] (caused by an [*AlgorithmError] when no
// algorithm is in common), [*HostKeyMismatchError], [*AuthError],
// [*ForwardError] and [*DroppedError]. Callers classify them with errors.As,
// never by their text.
package tunnel
