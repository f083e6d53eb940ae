/// Catching up a peer that holds a member more than a step behind (rule 6 in StateRules.swift).
///
/// The step rule (rule 4) refuses a message that moves a member more than
/// `WireLimits.maxIncarnationStep` above what the node holds. An honest member climbs one step
/// per refutation, but its gossip queue keeps one update per member: a member that refutes
/// several times within one gossip interval (a forgery walked up two steps, answered by rule 5)
/// sends only its last refutation, and a peer that took none of the steps in between refuses it,
/// and every later copy of it, for good. That peer then lists the member alive at an old
/// incarnation forever and applies none of its later metadata or accusations about it (#8's
/// real-process self-claim test, `SelfClaimCatchUpTests.aPeerThatMissedEveryStepCatchesUp`).
///
/// Only the member itself may speak for its incarnations, so the repair goes through it:
/// 1. A node that refuses a message about a member as too far ahead asks that member for a
///    push-pull, at most once per `reconnectInterval` (a forger's implausible claims cost at
///    most that).
/// 2. A member that, in any push-pull, finds the other side holding it more than a step below
///    its own incarnation sends that side, at the address its own table holds for it, a chain
///    of `alive`s about itself: each a step above the last, from what the other side holds up to
///    its own incarnation. The receiver takes them in order, each within the step of the last.
///    A chain longer than one packet is cut; the next exchange goes on from where it stopped.
/// Nothing here stores an incarnation for another member, and every `alive` of the chain is
/// this node's, at its own address and metadata, at or below its own incarnation.
extension Membership {
    /// At most this many `alive`s in one catch-up packet (about 14 fit in 1,344 bytes).
    static let maxCatchUpChain = 16

    /// Rule 6.1: a message about the member in `slot` was refused as too far ahead of what we
    /// hold; ask the member itself for a push-pull, unless we asked anyone within the interval.
    mutating func askToCatchUp(_ slot: MemberTable.Slot, now: Instant, into out: inout [MembershipDirective]) {
        guard slot != 0, !isLeaving else { return }
        if let last = lastCatchUpAskedAt, now - last < settings.reconnectInterval { return }
        let m = members.member(at: slot)
        guard m.status != .left else { return }
        lastCatchUpAskedAt = now
        stats.catchUpsAsked += 1
        stats.pushPullsStarted += 1
        out.append(.pushPull(localState(join: false), to: m.address))
    }

    /// Rule 6.2: the push-pull state of `source` holds us at `held`. If that is more than a step
    /// below our incarnation, `source` would refuse our alive: send it the chain up to us.
    mutating func sendCatchUpChain(to source: String, holding held: UInt64, into out: inout [MembershipDirective]) {
        guard !isLeaving, source != myName, held < incarnation, incarnation - held > WireLimits.maxIncarnationStep,
              let peer = members[source] else { return }
        let room = (settings.maxPacketBytes - 2) / MembershipMessage.alive(selfAlive).encodedSize
        var chain: [MembershipMessage] = []
        var next = held
        while next < incarnation, chain.count < min(room, Self.maxCatchUpChain) {
            next = incarnation - next > WireLimits.maxIncarnationStep ? next + WireLimits.maxIncarnationStep : incarnation
            chain.append(.alive(.init(name: myName, address: myAddress, incarnation: next, metadata: metadata)))
        }
        guard !chain.isEmpty else { return }
        assert(chain.count <= Self.maxCatchUpChain)
        stats.catchUpChainsSent += 1
        send(chain, to: peer.address, into: &out)
    }
}
