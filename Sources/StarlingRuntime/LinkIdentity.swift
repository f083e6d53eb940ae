import StarlingCore
import StarlingCrypto

/// Binds a peer link to its dialler's identity (issue #11 item 1, review of the sessions code):
/// the cluster key says only "a member of this mesh", so without this any key holder could dial
/// under another member's name and, on its links, speak as that member to every protocol: for
/// sessions, install a genuine but shortened chain on a session's replicas under the owner's
/// name, or fence the owner with a higher epoch.
///
/// The rule, checked by the acceptor after the envelope opened and its nonce was fresh:
/// - the hello names a member whose identity key membership gossips: the hello must carry a
///   valid Ed25519 signature under that key, over the address dialled, the name, the time sent
///   (within the replay window) and a random token that the hello cache has not seen (a signed
///   hello re-sealed in a new envelope is a replay);
/// - the name has no gossiped key: refused when this node has an identity (it has not heard of
///   the dialler, or the dialler gossips none: both fail closed; the dialler retries after its
///   link backoff, by when gossip has usually carried its key); accepted when this node has none
///   (a mesh without identities: in-process tests).
///
/// Not covered: the dialler does not check the acceptor's identity (an attacker must then take
/// over the acceptor's address), and frames after the hello are sealed under the cluster key
/// only (an on-path key holder could inject into a live link).
extension MeshNode {
    func linkIdentityRefusal(_ hello: PeerLink.Hello, nowMs: UInt64) -> (reason: String, message: String)? {
        guard let expected = membership.gossipedIdentityKey(of: hello.sender) else {
            if configuration.identityKey == nil { return nil }
            return ("link_unknown_identity", "membership gives no identity key for \(hello.sender): link refused")
        }
        guard hello.signature.count == PeerLink.helloSignatureBytes,
              NodeIdentity.verify(signature: hello.signature, message: hello.signed, publicKey: expected) else {
            return ("link_identity", "the link hello from \(hello.sender) is not signed by the identity key membership gossips for it")
        }
        let windowMs = UInt64(clamping: configuration.replayWindow.nanoseconds / 1_000_000)
        let age = nowMs >= hello.sentAtMs ? nowMs - hello.sentAtMs : hello.sentAtMs - nowMs
        guard age <= windowMs else { return ("link_hello_stale", "the link hello from \(hello.sender) is \(age) ms off") }
        switch helloNonces.admit(hello.token, now: now) {
        case .fresh, .freshEvicting: return nil
        case .replay: return ("hello_replay", "replayed link hello token from \(hello.sender)")
        case .full: return ("hello_cache_full", "too many recent hellos to remember")
        }
    }
}
