/// Counters kept by the membership core. The runtime exports them as Prometheus counters; the
/// simulator sums them across members.
public struct MembershipStats: Sendable, Equatable {
    public var probesSent = 0
    public var acksReceived = 0
    public var pingReqsSent = 0
    public var pingReqsServed = 0
    public var nacksSent = 0
    public var nacksReceived = 0
    public var probesFailed = 0
    public var suspicionsRaised = 0
    public var refutations = 0
    public var deathsDeclared = 0
    public var packetsSent = 0
    public var messagesSent = 0
    public var messagesReceived = 0
    /// Messages that changed nothing: stale incarnations, unknown members, misdirected pings.
    public var messagesIgnored = 0
    public var pushPullsStarted = 0
    public var pushPullsServed = 0
    public var pushPullsFailed = 0
    public var reaped = 0
    public var relaysDropped = 0
    public var membersRejected = 0
    /// Messages refused as invalid (an incarnation over `WireLimits.maxIncarnation`, metadata
    /// over its bounds) by the state rules, for callers that bypass the decoders.
    public var messagesRejected = 0
    /// Push-pull entries skipped as malformed while the rest of the exchange was applied.
    public var pushPullEntriesSkipped = 0
    /// Accusations told to the accused member itself (`tellAccused`): when we heard from it, a
    /// death we declared (and its retelling), and an unconfirmed suspicion's last word.
    public var accusationsTold = 0
    /// Probes of a member others had just begun to suspect (`ProbeOrder.suspectsFirst`).
    public var urgentProbes = 0
    /// Push-pulls asked of a member after refusing a message about it as too far ahead
    /// (CatchUp.swift).
    public var catchUpsAsked = 0
    /// Chains of our own `alive`s sent to a peer that held us more than a step behind.
    public var catchUpChainsSent = 0
    /// `alive`s refused because they named a known member (or this node) under another
    /// identity key than the one held for it (Identity.swift).
    public var identityConflicts = 0

    public init() {}
}
