/// The identity key each member signs with, as membership gossips it
/// (`MemberMetadata.identityKey`), for every protocol that takes signed records from peers.
///
/// The rule, one for all of them: a record signed by a peer is accepted only if its key is the
/// one that peer's membership entry carries. A peer with no gossiped key (not yet known, reaped,
/// or a member without one) is an unknown signer: refused, fail closed. Membership pins a name
/// to its key while the member is in the table (Identity.swift), so the key a protocol reads
/// here cannot change under a name that stays known.
public struct SignerKeys: Sendable, Equatable {
    public enum Verdict: Sendable, Equatable {
        /// The key is the signer's gossiped key.
        case matches
        /// Membership gives no key for the signer.
        case unknownSigner
        /// The signer's gossiped key is another one.
        case keyMismatch
    }

    private var keys: [PeerName: [UInt8]] = [:]

    public init() {}

    /// Follows the host's membership events: a member's key comes and goes with its entry.
    public mutating func apply(_ event: MembershipEvent) {
        switch event {
        case .updated(let view): keys[view.name] = expectedIdentityKey(of: view)
        case .removed(let name): keys[name] = nil
        }
    }

    /// The key `signer` must sign with, or nil when membership gives none.
    public func expectedKey(of signer: PeerName) -> [UInt8]? { keys[signer] }

    /// Whether a record `signer` signed under `publicKey` may be accepted. The signature itself
    /// is the caller's to verify, under this same key.
    public func verdict(signer: PeerName, publicKey: [UInt8]) -> Verdict {
        guard let expected = keys[signer] else { return .unknownSigner }
        return expected == publicKey ? .matches : .keyMismatch
    }
}

/// The identity key a member's records must verify under: its gossiped key, when it has one of
/// the right size (a decoder refuses any other, this checks again for views built in memory).
public func expectedIdentityKey(of view: PeerView) -> [UInt8]? {
    guard let key = view.metadata.identityKey, key.count == MemberMetadata.identityKeyBytes else { return nil }
    return key
}

extension Membership {
    /// The identity key membership holds for `name` (alive, suspect or dead while in the
    /// table; pinned to the name there), or nil.
    public func gossipedIdentityKey(of name: String) -> [UInt8]? {
        guard let key = members[name]?.metadata.identityKey, key.count == MemberMetadata.identityKeyBytes else { return nil }
        return key
    }
}
