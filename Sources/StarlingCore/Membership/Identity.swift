/// The identity rule: a member's name is bound to the identity key it first arrived with.
///
/// Each node gossips its Ed25519 public key in `MemberMetadata.identityKey`. A node that holds a
/// member with a key refuses any `alive` for that name under another key, or under none,
/// whatever its incarnation or metadata version, and counts it (`stats.identityConflicts`,
/// `lastIdentityConflict`). The usual cause is a node restarted under the same name with a
/// fresh data directory (so a fresh key): another machine, or the same one reinstalled, that
/// must not inherit the old member's place, its records or its sessions.
///
/// How long the pin lasts: as long as this node holds the member, alive, suspect, dead or left,
/// that is until it is reaped (`reapAfter` after its death or leave). After that the name is
/// free and the next key that arrives with it is pinned. The pin lives in the member table and
/// nowhere else, because a pin is only as strong as the cluster's memory anyway: a node that
/// never heard of the member (one that joined later, or restarted with an empty table) takes
/// the new key, and every other node then refuses it. See NOTES, "Identity".
///
/// A refused claim that comes with a newer incarnation than the one held is evidence that the
/// member's life under its key has ended (its name now answers at its address under another
/// key, and would keep answering its probes). So an `alive` member is then suspected at the
/// claim's incarnation (the incarnation the message carried, rule 1 of StateRules.swift): if the
/// member with the pinned key is alive after all, it refutes, with its key, and wins back its
/// entry; if it is gone, the suspicion runs out, it is declared dead and later reaped. A member
/// already suspected is left to its running suspicion (restarting it on every refused refutation
/// would keep it from ever running out).
///
/// A member held without a key (a test, or an in-process node configured without an identity)
/// takes the first key that arrives: no key means nothing to pin, not a pin on "none".
///
/// About itself, a node counts (as `aboutMe`) an `alive` naming it under another key, and a
/// push-pull entry that holds it suspect or dead under another key (`merge`): that is how a node
/// restarted with a fresh key learns why the cluster refuses its refutations. It refutes as
/// usual and does not leave: otherwise one forged `alive` would make any node leave.
///
/// What this does not stop: a peer holding the cluster key can forge `alive`s, so a node that
/// first hears of a member from a forger pins the forger's key (trust on first use). Closing
/// that needs `alive`s signed with the member's own key.
public struct IdentityConflict: Equatable, Sendable {
    /// The member the refused `alive` named.
    public var name: String
    /// The address the refused `alive` came with.
    public var address: NodeAddress
    public var incarnation: UInt64
    /// The key held for the member and the one the refused `alive` carried (nil: none).
    public var heldKey: [UInt8]
    public var claimedKey: [UInt8]?
    /// True when the claim is about this node itself (someone else uses our name).
    public var aboutMe: Bool
}

extension Membership {
    /// Whether `claimed` may replace what is held under `held`: only the same key, or anything
    /// when no key is held.
    static func identityMatches(held: [UInt8]?, claimed: [UInt8]?) -> Bool {
        guard let held else { return true }
        return claimed == held
    }

    /// Records a refused `alive` (counted, and kept for the shell's log line).
    mutating func noteIdentityConflict(_ a: MembershipMessage.Alive, held: [UInt8], aboutMe: Bool) {
        stats.identityConflicts += 1
        lastIdentityConflict = IdentityConflict(name: a.name, address: a.address, incarnation: a.incarnation,
                                                heldKey: held, claimedKey: a.metadata.identityKey, aboutMe: aboutMe)
    }
}

extension MemberMetadata {
    /// `identityKey` as lowercase hex (64 digits), for logs and the API.
    public var identityKeyHex: String? { identityKey.map(Self.hex) }

    public static func hex(_ bytes: [UInt8]) -> String {
        let digits = Array("0123456789abcdef".utf8)
        return String(decoding: bytes.flatMap { [digits[Int($0 >> 4)], digits[Int($0 & 0x0f)]] }, as: UTF8.self)
    }
}
