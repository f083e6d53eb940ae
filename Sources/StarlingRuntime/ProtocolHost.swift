import Dispatch
import StarlingCore

/// Carries out a hosted protocol's `.perform(action)`s: runs a sandbox, persists a record,
/// advertises capacity. Called on the node's loop thread, in effect order. Work that takes a
/// while goes to another thread, which hands the outcome back with `host.complete(_:)`; work
/// that must be durable before the protocol's next effect (a `.store`) is either done
/// synchronously inside `perform`, since the effects after it are carried out only once it
/// returns, or staged (`stage`) and committed with the other writes staged meanwhile
/// (`commitStaged` on the loop thread, or `detachStaged` off it), the effects after it being
/// held until then.
public protocol ProtocolPerformer<Hosted> {
    associatedtype Hosted: HostedProtocol
    func perform(_ action: Hosted.Action, host: ProtocolHandle<Hosted>)
    /// Group commit: whether `action` is a durable write that this performer keeps to commit
    /// with the other writes staged meanwhile instead of performing it now. The runner then
    /// carries out nothing that follows a staged write until its commit has succeeded: the rule
    /// "nothing said before its write is durable" holds, for one transaction (one fsync) per
    /// group of writes instead of one per write. Default: nothing is staged.
    func stage(_ action: Hosted.Action) -> Bool
    /// Makes every staged write durable, all or none. False when it failed, after the performer
    /// halted the protocol (`ProtocolHandle.halt`): the effects held behind the writes are
    /// dropped. Called on the loop thread once the batch of queued inputs being fed is applied
    /// (those queued while it ran included), before any effect held behind the writes; only
    /// when `detachStaged` returned nil.
    func commitStaged(host: ProtocolHandle<Hosted>) -> Bool
    /// Commit off the loop thread: takes the writes staged so far and returns the job that makes
    /// them durable, all or none, which the runner runs on its writer thread (one job at a time,
    /// in order), so a slow fsync never blocks membership or the node's other work. The job
    /// returns false when the writes failed (after it logged why and asked the node to leave);
    /// the runner then stops the protocol and drops every effect held behind them. While a job
    /// runs the protocol goes on taking inputs; their effects are held, and their writes staged
    /// for the next job: one commit then covers every input that came meanwhile.
    /// Default: nil, the runner calls `commitStaged` on the loop thread.
    func detachStaged() -> (@Sendable () -> Bool)?
}

extension ProtocolPerformer {
    public func stage(_ action: Hosted.Action) -> Bool { false }
    public func commitStaged(host: ProtocolHandle<Hosted>) -> Bool { true }
    public func detachStaged() -> (@Sendable () -> Bool)? { nil }
}

/// A performer for protocols that have no actions.
public struct NoPerformer<Hosted: HostedProtocol>: ProtocolPerformer {
    public init() {}
    public func perform(_ action: Hosted.Action, host: ProtocolHandle<Hosted>) {}
}

/// How any thread talks to a protocol a node hosts: commands with a reply, and the outcomes of
/// its actions. Everything goes through the node's inbox and is applied on the loop thread.
public struct ProtocolHandle<P: HostedProtocol>: Sendable {
    let node: MeshNode

    /// Hands `command` to the protocol and waits for its `.reply`. Throws `MeshError.stopped`
    /// when the node has stopped (or stops before the reply), `MeshError.busy` when the inbox is
    /// full (`maxInboxCommands`): it never waits forever on a node that is gone.
    public func command(_ command: P.Command) async throws -> P.Reply {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<P.Reply, any Error>) in
            node.post(.work({ node in
                guard let runner = node.protocols[P.channel.rawValue] as? ProtocolRunner<P> else {
                    return continuation.resume(throwing: MeshError.notRegistered(P.channel.description))
                }
                runner.command(command, replyingTo: continuation)
            }, refused: { continuation.resume(throwing: $0) }), bounded: true)
        }
    }

    /// The outcome of a `.perform` action, from any thread. Not bounded by the inbox limit: the
    /// protocol asked for every action, so outcomes are as many as it chose.
    public func complete(_ outcome: P.ActionOutcome) {
        node.post(.work({ node in
            (node.protocols[P.channel.rawValue] as? ProtocolRunner<P>)?.feed(.performed(outcome))
        }, refused: { _ in }))
    }

    /// Stops the protocol on this node at once, from its performer (on the loop thread): the
    /// effects after the action being performed are dropped, no input reaches the protocol any
    /// more, and commands waiting for a reply fail. For an action that must succeed before
    /// anything after it is said (a store write whose ack follows): a failed one must not be
    /// acknowledged while the node is on its way out of the mesh.
    public func halt() {
        (node.protocols[P.channel.rawValue] as? ProtocolRunner<P>)?.stop()
    }

    /// Advertises this node's free task slots in its gossiped metadata (any thread).
    public func setFreeSlots(_ free: Int) { node.setFreeSlots(free) }

    /// Changes this node's gossiped metadata (free slots, free memory), from any thread; applied
    /// on the loop thread, refused (logged) if peers would refuse the result. Protocols hear of
    /// it as a `.updated` event for this node.
    public func updateMetadata(_ change: @escaping @Sendable (inout MemberMetadata) -> Void) {
        node.post(.updateMetadata(change))
    }
}

/// What the node needs of a hosted protocol without knowing its types.
protocol HostedRunner: AnyObject {
    var maxMessageBytes: Int { get }
    var nextDeadline: Instant { get }
    func tick()
    func deliverMessage(_ bytes: [UInt8], from peer: PeerName)
    /// False when the request did not decode (no answer is owed).
    func deliverRequest(_ bytes: [UInt8], from peer: PeerName, token: RequestToken) -> Bool
    /// nil: no response (unreachable, broken link, timeout).
    func deliverResponse(_ bytes: [UInt8]?, to id: RequestID)
    func membershipChanged(_ event: MembershipEvent)
    /// The node stops: every command waiting for a reply fails.
    func stop()
}

/// Runs one protocol on the loop thread: feeds it its inputs one at a time, in order, and
/// carries out its effects. An effect that produces an input for the same protocol (a send to
/// itself) queues it behind the current one instead of re-entering the state machine.
///
/// Staged writes and the effects behind them (group commit): the effects of the protocol are
/// carried out in the order it produced them, each only once every write staged before it is
/// durable. Writes staged while no commit runs are committed when the inputs queued are fed;
/// while a commit runs (on the writer thread, `detachStaged`), later inputs are still fed, their
/// writes wait for the next commit and every effect waits behind the running one. Membership
/// and the other protocols never wait for a commit.
///
/// A request that cannot go (no link to the peer: dead to this node, in dial backoff, queue
/// full) gets its nil response on a later turn of the loop, never within the inputs being fed:
/// a protocol that answers a failure by sending again to a peer it still holds up (the swarm's
/// replication resends the whole swarm) would otherwise feed itself forever, and the membership
/// change that would stop it (the runtime closes a dead member's links before telling the
/// protocols) could never be delivered.
final class ProtocolRunner<P: HostedProtocol>: HostedRunner {
    enum Input {
        case tick
        case message(P.Message, from: PeerName)
        case request(P.Message, from: PeerName, token: RequestToken)
        case response(P.Message?, to: RequestID)
        case membership(MembershipEvent)
        case command(P.Command, id: CommandID)
        case performed(P.ActionOutcome)
    }

    /// Writes staged and not yet durable, and the effects that came after them, in order.
    struct Batch {
        /// Whether any write was staged into it (the writes are the performer's until taken).
        var hasWrites = false
        var held: [ProtocolEffect<P>] = []
    }

    unowned let node: MeshNode
    private var machine: P
    private let perform: (P.Action) -> Void
    private let stage: (P.Action) -> Bool
    private let commitStaged: () -> Bool
    private let detachStaged: () -> (@Sendable () -> Bool)?
    /// Writes staged since the last commit began, and the effects that followed the first of them.
    private var open = Batch()
    /// The batch whose writes the writer thread is committing: its effects (and every effect
    /// produced since, while `open` has no write) wait for it.
    private var committing: Batch?
    /// Runs detached commits one at a time, in order, off the loop thread.
    private let writer: DispatchQueue
    /// When the running commit must have ended. A commit still waiting then (a disk that stopped
    /// answering) fails closed like a failed one: the protocol stops and the node leaves, rather
    /// than look alive to membership while every input of this protocol waits behind it (and
    /// the effects held grow with them).
    private var commitDeadline = Instant.distantFuture
    /// How long a detached commit may take (settable for tests).
    var maxCommitWait: Duration = .seconds(30)
    private var replies: [UInt64: CheckedContinuation<P.Reply, any Error>] = [:]
    private var nextCommand: UInt64 = 1
    private var inputs: [Input] = []
    private var running = false
    private var stopped = false
    /// Requests that could not be sent, answered nil at `unsentDue` (see the type's comment).
    private var unsent: [RequestID] = []
    private var unsentDue = Instant.distantFuture
    /// How long an unsent request waits for its nil answer: at least a turn of the loop. Not 0:
    /// libuv before 1.45 runs a timer re-armed at 0 from its own callback again at once,
    /// without polling I/O, so a protocol that keeps resending would still starve the node.
    static var unsentDelay: Duration { .milliseconds(1) }

    init(node: MeshNode, machine: P, perform: @escaping (P.Action) -> Void,
         stage: @escaping (P.Action) -> Bool = { _ in false }, commitStaged: @escaping () -> Bool = { true },
         detachStaged: @escaping () -> (@Sendable () -> Bool)? = { nil }) {
        self.node = node
        self.machine = machine
        self.perform = perform
        self.stage = stage
        self.commitStaged = commitStaged
        self.detachStaged = detachStaged
        writer = DispatchQueue(label: "starling-commit-\(P.channel.rawValue)", qos: .userInitiated)
    }

    var maxMessageBytes: Int { min(P.maxMessageBytes, node.configuration.maxLinkFrameBytes) }
    /// A stopped protocol has no deadline (its machine no longer moves: one in the past would
    /// spin the loop).
    var nextDeadline: Instant { stopped ? .distantFuture : min(machine.nextDeadline, unsentDue, commitDeadline) }

    /// Whether a commit runs on the writer thread (for tests).
    var isCommitting: Bool { committing != nil }
    /// Effects held behind writes not yet durable (for tests).
    var heldEffects: Int { (committing?.held.count ?? 0) + open.held.count }

    func feed(_ input: Input) {
        guard !stopped else { return }
        inputs.append(input)
        guard !running else { return }
        running = true
        defer { running = false }
        drain()
    }

    /// Feeds the queued inputs; then commits what they staged, unless a commit already runs (its
    /// end commits them). A commit on the loop thread releases its effects at once, and those
    /// may queue more inputs (a request to this node): go round again.
    private func drain() {
        var next = 0
        while !stopped {
            while next < inputs.count && !stopped {
                let input = inputs[next]
                next += 1
                execute(apply(input))
            }
            guard open.hasWrites, committing == nil, !stopped else { break }
            let batch = open
            open = Batch()
            if let job = detachStaged() {
                committing = batch
                commitDeadline = node.now + maxCommitWait
                commitOffLoop(job)
                if next >= inputs.count { break }
                continue
            }
            guard commitStaged(), !stopped else { break }
            release(batch.held)
            if next >= inputs.count && !open.hasWrites { break }
        }
        inputs.removeAll(keepingCapacity: inputs.count <= 1024)
        if stopped {
            open = Batch()
            committing = nil
            commitDeadline = .distantFuture
        }
    }

    private func commitOffLoop(_ job: @escaping @Sendable () -> Bool) {
        let node = self.node
        writer.async {
            let committed = job()
            node.post(.work({ node in
                (node.protocols[P.channel.rawValue] as? ProtocolRunner<P>)?.finishCommit(committed)
            }, refused: { _ in }))
        }
    }

    /// On the loop thread, when the writer thread's commit ended: its held effects go out (or,
    /// when it failed, nothing more of this protocol does), then what was staged meanwhile is
    /// committed in its turn.
    private func finishCommit(_ committed: Bool) {
        guard !stopped, let batch = committing else { return }
        committing = nil
        commitDeadline = .distantFuture
        guard committed else {
            // The job logged the failure and asked the node to leave: fail closed.
            stop()
            open = Batch()
            return
        }
        precondition(!running, "a commit ended inside the protocol's own inputs")
        running = true
        defer { running = false }
        release(batch.held)
        drain()
    }

    /// Carries out effects whose writes are durable, in order.
    private func release(_ effects: [ProtocolEffect<P>]) {
        for effect in effects {
            guard !stopped else { return }
            carryOut(effect)
        }
    }

    private func apply(_ input: Input) -> [ProtocolEffect<P>] {
        let now = node.now
        switch input {
        case .tick: return machine.tick(now: now)
        case .message(let m, let peer): return machine.receive(m, from: peer, now: now)
        case .request(let m, let peer, let token): return machine.request(m, from: peer, token: token, now: now)
        case .response(let m, let id): return machine.response(m, to: id, now: now)
        case .membership(let event): return machine.membershipChanged(event, now: now)
        case .command(let c, let id): return machine.command(c, id: id, now: now)
        case .performed(let outcome): return machine.performed(outcome, now: now)
        }
    }

    /// Stages writes, holds what follows a write not yet durable, carries out the rest.
    private func execute(_ effects: [ProtocolEffect<P>]) {
        for effect in effects {
            // A performer halted the protocol (`ProtocolHandle.halt`): nothing after that is said.
            guard !stopped else { return }
            if case .perform(let action) = effect, stage(action) {
                open.hasWrites = true
                continue
            }
            if open.hasWrites {
                open.held.append(effect)
            } else if committing != nil {
                committing?.held.append(effect)
            } else {
                carryOut(effect)
            }
        }
    }

    private func carryOut(_ effect: ProtocolEffect<P>) {
        switch effect {
        case .send(let message, let peer):
            guard let bytes = encode(message) else { return }
            node.linkSend(bytes, channel: P.channel, to: peer)
        case .request(let message, let peer, let id, let timeout):
            guard let bytes = encode(message), node.linkRequest(bytes, channel: P.channel, to: peer, id: id, timeout: timeout) else {
                unsent.append(id)
                if unsentDue == .distantFuture { unsentDue = node.now + Self.unsentDelay }
                return
            }
        case .respond(let message, let token):
            guard let bytes = encode(message) else { return }
            node.linkRespond(bytes, channel: P.channel, to: token)
        case .reply(let reply, let id):
            guard let continuation = replies.removeValue(forKey: id.rawValue) else {
                node.linkMetrics.drop(P.channel, "unknown_command")
                return
            }
            continuation.resume(returning: reply)
        case .perform(let action):
            perform(action)
        }
    }

    /// The message's bytes, or nil (counted) when over the channel's bound.
    private func encode(_ message: P.Message) -> [UInt8]? {
        let bytes = P.encode(message)
        guard bytes.count <= maxMessageBytes else {
            node.linkMetrics.drop(P.channel, "oversize")
            return nil
        }
        return bytes
    }

    private func decode(_ bytes: [UInt8]) -> P.Message? {
        do { return try P.decode(bytes) } catch {
            node.linkMetrics.drop(P.channel, "malformed")
            return nil
        }
    }

    func command(_ command: P.Command, replyingTo continuation: CheckedContinuation<P.Reply, any Error>) {
        guard !stopped else { return continuation.resume(throwing: MeshError.stopped) }
        let id = nextCommand
        nextCommand &+= 1
        replies[id] = continuation
        feed(.command(command, id: CommandID(rawValue: id)))
    }

    func tick() {
        let now = node.now
        if committing != nil, now >= commitDeadline {
            node.logger.critical("a store commit did not end in time; leaving the mesh",
                                 metadata: ["channel": "\(P.channel)", "waited": "\(maxCommitWait)"])
            stop()
            node.requestLeave()
            return
        }
        if !unsent.isEmpty, now >= unsentDue {
            let failed = unsent
            unsent.removeAll()
            unsentDue = .distantFuture
            for id in failed { feed(.response(nil, to: id)) }
        }
        if now >= machine.nextDeadline { feed(.tick) }
    }

    func deliverMessage(_ bytes: [UInt8], from peer: PeerName) {
        if let m = decode(bytes) { feed(.message(m, from: peer)) }
    }

    func deliverRequest(_ bytes: [UInt8], from peer: PeerName, token: RequestToken) -> Bool {
        guard let m = decode(bytes) else { return false }
        feed(.request(m, from: peer, token: token))
        return true
    }

    func deliverResponse(_ bytes: [UInt8]?, to id: RequestID) {
        feed(.response(bytes.flatMap { decode($0) }, to: id))
    }

    func membershipChanged(_ event: MembershipEvent) { feed(.membership(event)) }

    func stop() {
        stopped = true
        commitDeadline = .distantFuture
        let waiting = replies
        replies = [:]
        for continuation in waiting.values { continuation.resume(throwing: MeshError.stopped) }
    }
}

extension MeshNode {
    /// Hosts `hosted` on this node, on its channel (`P.channel`; membership's is reserved).
    /// Call on the thread that made the node, before `start`. The protocol first hears of every
    /// member known (this node included), then of every change.
    public func register<P: HostedProtocol>(_ hosted: P, performer: some ProtocolPerformer<P>) -> ProtocolHandle<P> {
        precondition(!started, "register protocols before start")
        precondition(P.channel != .membership && protocols[P.channel.rawValue] == nil, "channel \(P.channel) is taken")
        let handle = ProtocolHandle<P>(node: self)
        let runner = ProtocolRunner(node: self, machine: hosted, perform: { performer.perform($0, host: handle) },
                                    stage: { performer.stage($0) }, commitStaged: { performer.commitStaged(host: handle) },
                                    detachStaged: { performer.detachStaged() })
        protocols[P.channel.rawValue] = runner
        for member in membership.members.sorted(by: { $0.name < $1.name }) {
            reportedMembers[member.name] = ReportedMember(status: member.status, version: member.metadata.version)
            runner.membershipChanged(.updated(Self.view(of: member)))
        }
        return handle
    }

    static func view(of member: Member) -> PeerView {
        PeerView(name: member.name, address: member.address, status: member.status, metadata: member.metadata)
    }

    /// Feeds protocols whose deadline has come.
    func tickProtocols(now t: Instant) {
        for runner in protocols.values where t >= runner.nextDeadline { runner.tick() }
    }

    var protocolsDeadline: Instant {
        protocols.values.reduce(Instant.distantFuture) { min($0, $1.nextDeadline) }
    }

    /// A membership change, as the core reported it: every protocol hears of it at once, and
    /// links to a member that is dead, left or reaped close.
    func memberChanged(_ change: MemberChange) {
        if change.to == nil || change.to == .dead || change.to == .left {
            closeLinks(to: change.name, reason: "member_\(change.to.map(\.description) ?? "reaped")")
        }
        guard !protocols.isEmpty else { return }
        if change.to == nil {
            guard reportedMembers.removeValue(forKey: change.name) != nil else { return }
            for runner in protocols.values { runner.membershipChanged(.removed(change.name)) }
        } else if let member = membership.members[change.name] {
            announce(member)
        }
    }

    /// Metadata changes (free slots) come without a `.changed` from the core: at each publish,
    /// members whose status or metadata version differ from what protocols last heard are
    /// announced again.
    func reconcileMembers() {
        guard !protocols.isEmpty else { return }
        for member in membership.members {
            let reported = reportedMembers[member.name]
            if reported?.status != member.status || reported?.version != member.metadata.version { announce(member) }
        }
    }

    private func announce(_ member: Member) {
        reportedMembers[member.name] = ReportedMember(status: member.status, version: member.metadata.version)
        let event = MembershipEvent.updated(Self.view(of: member))
        for runner in protocols.values { runner.membershipChanged(event) }
    }

    /// The node stops: commands waiting for a reply fail, links close.
    func stopProtocols() {
        for runner in protocols.values { runner.stop() }
        closeAllLinks()
    }
}

/// What protocols last heard of a member.
struct ReportedMember {
    var status: MemberStatus
    var version: UInt64
}
