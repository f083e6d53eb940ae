/// What the shell and the session protocol hand each other: commands from the HTTP routes and
/// their replies, durable writes and effect runs, and what a read of a session shows.

/// Work from an HTTP handler.
public enum SessionCommand: Sendable, Equatable {
    /// `forwarded`: another node sent the request here, so it is created here even when this
    /// node's ring disagrees (one hop, never forwarded again).
    case create(id: String, options: [UInt8], forwarded: Bool)
    case checkpoint(id: String, state: [UInt8])
    case act(id: String, key: String, task: [UInt8])
    case show(id: String, since: UInt64)
    case delete(id: String)
    /// What this node counted, and how many sessions it holds and serves (for metrics).
    case stats
}

public enum SessionReply: Sendable, Equatable {
    case created(id: String, owner: PeerName)
    /// A checkpoint stored by a majority of the replica set: its seq and record hash.
    case recorded(seq: UInt64, hash: [UInt8])
    /// An effect's recorded result; `replayed`: recorded before this request, not run now.
    case acted(key: String, replayed: Bool, result: [UInt8])
    /// The effect's start was recorded and its result never was (its owner died or lost the
    /// session mid-run). It is never run again; the client settles it (NOTES, "unknown").
    case outcomeUnknown(key: String, startedSeq: UInt64)
    /// The effect's result was recorded (at `resultSeq`) and later dropped by compaction: only
    /// the most recent results are kept. It is never run again (SessionCompaction.swift).
    case outcomeExpired(key: String, startedSeq: UInt64, resultSeq: UInt64)
    /// The effect runs now on the owner (another request with the same key is running it).
    case running(key: String)
    case view(SessionView)
    case deleted
    /// This node does not serve the session: the route forwards to the nodes that may.
    case notHere
    /// The request waited here while this node handed the session to `to`, which serves it now.
    /// A route forwards a client's request as for `notHere`; a request that another node
    /// forwarded here hears 503, not 404: that node may have asked `to` before the handoff
    /// committed and heard "not here" there, and 404s alone would call a live session missing.
    case moved(to: String)
    case notFound
    /// A session with this id exists (or was deleted).
    case conflict(String)
    /// Try again: resuming after an owner change, no majority reachable, queue full.
    case unavailable(String)
    /// Refused for good: over a bound of the session.
    case rejected(String)
    case stats(SessionCounters, held: Int, served: Int)
}

/// One journal entry: an effect, by its key.
public struct SessionJournalEntry: Sendable, Equatable {
    public enum Outcome: Sendable, Equatable {
        case done(result: [UInt8])
        case running
        case unknown
        /// Done, and its result dropped by compaction (only the most recent are kept).
        case expired
    }

    /// The seq of the effect's result record, or of its start when there is no result.
    public var seq: UInt64
    public var key: String
    public var startedSeq: UInt64
    public var outcome: Outcome
}

/// A session as its owner serves it: only what a majority of the replica set stored.
public struct SessionView: Sendable, Equatable {
    public var id: String
    public var owner: PeerName
    public var replicas: [PeerName]
    public var epoch: UInt64
    public var seq: UInt64
    public var hash: [UInt8]
    public var signer: PeerName
    /// The latest checkpoint's state; nil before the first checkpoint.
    public var state: [UInt8]?
    public var stateSeq: UInt64
    public var journal: [SessionJournalEntry]
    /// More journal entries follow the last one here (read again with `since` = its seq).
    public var journalMore: Bool
}

/// A durable write, carried out by the shell before it reports `.persisted`.
public enum SessionChange: Sendable, Equatable {
    /// Append a record; the session row takes the epoch, owner, replicas and joint set
    /// (`SessionImage.jointOld`: empty once the configuration is established). `dropContentOf`:
    /// the seq of a checkpoint whose state the new one supersedes (kept as its digest only).
    case record(SessionRecord, epoch: UInt64, owner: PeerName, replicas: [PeerName], dropContentOf: UInt64?, jointOld: [PeerName] = [])
    /// Replace everything held of the session with the image.
    case image(SessionImage)
    /// A promise of an epoch to an owner.
    case promise(session: String, epoch: UInt64, owner: PeerName)
    /// A member's promise at a handoff's fence (`transfer`): the epoch to the next owner, kept
    /// beside the session's promise so that a restarted member still promises that owner's own
    /// takeover (`SessionFencePromise`).
    case fencePromise(SessionFencePromise)
    /// The session's configuration is established: its joint set goes (`SessionImage.jointOld`).
    case established(session: String)
    /// Forget the session: this node is no longer in its replica set, and the new set stored it
    /// (migration, `SessionHandoff.swift`). The store keeps the release (`Sessions.releases`).
    case forget(SessionRelease)
}

/// A member's promise of a session's epoch to the next owner of a handoff, made at the fence
/// (`transfer`): it lets that owner, outside the replica set held here, be promised its own
/// takeover at that epoch or above (`Sessions.transferPromise`). Stored, so that a member
/// restarted between the fence and the commit does not refuse it.
public struct SessionFencePromise: Sendable, Equatable {
    public var session: String
    public var epoch: UInt64
    public var owner: PeerName
    public init(session: String, epoch: UInt64, owner: PeerName) {
        self.session = session
        self.epoch = epoch
        self.owner = owner
    }
}

/// What a member remembers of a session it released: the epoch and the owner it released it
/// to. A member holding nothing cannot otherwise tell "never stored it" from "stored it and
/// released it to a newer set", and a takeover that counted the second as an empty promise
/// let a stale member become a second owner (`Sessions.promise`).
public struct SessionRelease: Sendable, Equatable {
    public var session: String
    public var epoch: UInt64
    public var owner: PeerName

    public init(session: String, epoch: UInt64, owner: PeerName) {
        self.session = session
        self.epoch = epoch
        self.owner = owner
    }
}

/// What to do once a write is durable.
public enum SessionPersistTag: Sendable, Equatable {
    /// The owner's own copy of the record at `seq` is durable (one vote of the majority).
    case own(session: String, seq: UInt64)
    /// Answer a peer's request.
    case respond(RequestToken, SessionMessage)
    case nothing
}

public enum SessionAction: Sendable, Equatable {
    /// Write durably (and, for the owner's checkpoint and effect records, append to the audit
    /// log first, failing closed), then report `.persisted(tag)`. Writes are carried out in
    /// the order asked.
    case persist(SessionChange, then: SessionPersistTag)
    /// Run an effect's task in a sandbox on this node, with `STARLING_EFFECT_KEY` = `effectKey`,
    /// under the session's options (its creation record's content: the policy).
    case runEffect(session: String, key: String, effectKey: String, task: [UInt8], options: [UInt8])
}

public enum SessionActionOutcome: Sendable, Equatable {
    case persisted(SessionPersistTag)
    /// The effect's TaskResult (JSON, within `SessionLimits.maxEffectBytes`).
    case effectFinished(session: String, key: String, result: [UInt8])
}

/// What a node counted: refusals of peers' records and the takeovers it led.
public struct SessionCounters: Sendable, Equatable {
    /// Records or images whose signature, content or signer did not hold.
    public var forged = 0
    /// Records, images or prepares of an older epoch than the one promised here (fencing).
    public var stale = 0
    /// Records that did not continue the chain held here (a replica behind or off the chain).
    public var outOfChain = 0
    /// Effect keys answered "unknown" (start recorded, no result): counted once per key.
    public var unknownOutcomes = 0
    public var takeovers = 0
    /// Times this node stopped leading a session because a higher epoch fenced it.
    public var fenced = 0
    /// Handoffs this node began as owner, finished (the next owner serves), and gave up.
    public var handoffsStarted = 0
    public var handoffsDone = 0
    public var handoffsAborted = 0
    /// Copies dropped because the session's new replica set left this node out.
    public var released = 0
    /// Replica sets this node refilled (as owner) after a member died or left.
    public var refills = 0
    /// Sessions whose owner, asked by this holder, said it does not lead them (the lead check:
    /// `SessionLeadCheck.swift`): counted once per promise held.
    public var ownersDenied = 0
    /// Promises this holder raised to a newer one a lead check's answer named.
    public var promisesRaised = 0
    /// Releases this node remembers now, and whether it forgot one (it then refuses every
    /// empty promise: `Sessions.releasesForgotten`).
    public var releasesRemembered = 0
    public var releasesForgotten = false
    public init() {}
}
