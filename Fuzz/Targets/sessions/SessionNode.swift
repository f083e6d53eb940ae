import FuzzSupport
import StarlingCore
import StarlingCrypto

/// A session node (`Sessions`, channel 3) driven by a hostile member: the input is a script of
/// steps (a peer's request, an answer to one of the node's own requests, time passing, a member
/// coming or going, a client's command, an effect ending late or twice), and the node's store
/// always succeeds. Whatever the steps, the node never traps, every message it sends fits the
/// channel's bound and decodes again, every step settles (its effects and their outcomes end),
/// and every session it holds is a chain it would accept from a peer (`verify`).
///
/// Records here verify under any key: the attacker is a member that signs what it likes under
/// its own name, which is more than a real one can (a record verifies under its signer's
/// gossiped key), so the fuzzer reaches the code behind the signature checks.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzSessionNode(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    var script = Script(bytes(data, size))
    var driver = SessionNodeDriver()
    while let step = script.next() { driver.run(step) }
    return 0
}

@_cdecl("LLVMFuzzerInitialize")
public func initialize(_ argc: UnsafeMutableRawPointer?, _ argv: UnsafeMutableRawPointer?) -> Int32 {
    writeSeedsIfAsked(SessionNodeSeeds.all)
    return 0
}

/// One step of the script: an operation byte, an argument byte, and (for the operations that
/// carry one) a payload of at most 65,535 bytes with a big-endian 2-byte length.
struct Step {
    enum Operation: UInt8, CaseIterable {
        case request, response, tick, membership, checkpoint, act, show, create, finish, delete
    }
    var operation: Operation
    var argument: UInt8
    var payload: [UInt8]

    func encoded() -> [UInt8] {
        [operation.rawValue, argument, UInt8(payload.count >> 8), UInt8(payload.count & 0xFF)] + payload
    }
}

struct Script {
    var bytes: [UInt8]
    var at = 0
    init(_ bytes: [UInt8]) { self.bytes = bytes }

    mutating func next() -> Step? {
        guard at + 4 <= bytes.count else { return nil }
        let operation = Step.Operation.allCases[Int(bytes[at]) % Step.Operation.allCases.count]
        let argument = bytes[at + 1]
        let length = Int(bytes[at + 2]) << 8 | Int(bytes[at + 3])
        let end = min(bytes.count, at + 4 + length)
        let payload = Array(bytes[(at + 4)..<end])
        at = end
        return Step(operation: operation, argument: argument, payload: payload)
    }
}

struct SessionNodeDriver {
    static let me: PeerName = "node-a"
    static let peers: [PeerName] = ["node-b", "node-c", "node-d"]
    static let key = Array(repeating: UInt8(0x42), count: 32)

    var node: Sessions
    var now = Instant(nanoseconds: 1_000_000_000)
    /// The node's requests not answered yet, oldest first.
    var pending: [RequestID] = []
    var nextToken: UInt64 = 1
    var nextCommand: UInt64 = 1
    /// Effects the node started and the script has not finished yet (`finish` ends one, late:
    /// after a delete, a takeover, a handoff; sometimes twice).
    var running: [(session: String, key: String)] = []

    init() {
        node = Sessions(myName: Self.me, crypto: SessionNodeSeeds.crypto, settings: .init(requestTimeout: .seconds(1)), now: now)
        // s1 was held here and released to node-b at epoch 2 (a prepare for it names node-b).
        node.restore([SessionNodeSeeds.image], released: [SessionRelease(session: "s1", epoch: 2, owner: "node-b")])
        for name in [Self.me] + Self.peers { settle(node.membershipChanged(.updated(Self.view(name, .alive)), now: now)) }
    }

    static func view(_ name: PeerName, _ status: MemberStatus) -> PeerView {
        PeerView(name: name, address: NodeAddress(host: "127.0.0.1", port: 7000), status: status,
                 metadata: MemberMetadata(identityKey: key))
    }

    mutating func run(_ step: Step) {
        let peer = Self.peers[Int(step.argument) % Self.peers.count]
        trace("step \(step.operation) \(step.argument) peer \(peer) at \(now.nanoseconds / 1_000_000) ms: "
              + ((try? Sessions.decode(step.payload)).map { "\($0)" } ?? "\(step.payload.count) bytes"))
        switch step.operation {
        case .request:
            guard let message = try? Sessions.decode(step.payload) else { return }
            settle(node.request(message, from: peer, token: RequestToken(rawValue: nextToken), now: now))
            nextToken += 1
        case .response:
            guard !pending.isEmpty else { return }
            let id = pending.remove(at: Int(step.argument) % pending.count)
            settle(node.response(try? Sessions.decode(step.payload), to: id, now: now))
        case .tick:
            now = now + .milliseconds(100 * (Int64(step.argument) + 1))
            settle(node.tick(now: now))
        case .membership:
            let statuses: [MemberStatus] = [.alive, .suspect, .dead, .left]
            let event: MembershipEvent = step.argument >= 0xF0
                ? .removed(peer) : .updated(Self.view(peer, statuses[Int(step.argument / 3) % statuses.count]))
            settle(node.membershipChanged(event, now: now))
        case .checkpoint:
            command(.checkpoint(id: SessionNodeSeeds.session, state: step.payload))
        case .act:
            command(.act(id: SessionNodeSeeds.session, key: "k\(step.argument % 8)", task: Array(#"{"argv":["true"]}"#.utf8)))
        case .show:
            command(.show(id: SessionNodeSeeds.session, since: UInt64(step.argument)))
        case .create:
            command(.create(id: "s\(step.argument % 4)", options: Array("{}".utf8), forwarded: step.argument & 0x80 != 0))
        case .delete:
            command(.delete(id: SessionNodeSeeds.session))
        case .finish:
            guard !running.isEmpty else { return }
            let at = Int(step.argument & 0x7F) % running.count
            let effect = step.argument & 0x80 != 0 ? running[at] : running.remove(at: at)
            let outcome = SessionActionOutcome.effectFinished(session: effect.session, key: effect.key, result: Array(#"{"exitCode":0}"#.utf8))
            settle(node.performed(outcome, now: now))
        }
        // Whatever happened, every session the node holds is a chain it would accept from a peer.
        for sid in ["agent-1", "s0", "s1", "s2", "s3"] {
            if let image = node.image(of: sid), let why = node.verify(image) {
                invariant(false, "the node holds an image of \(sid) it would refuse: \(why)")
            }
        }
    }

    mutating func command(_ command: SessionCommand) {
        settle(node.command(command, id: CommandID(rawValue: nextCommand), now: now))
        nextCommand += 1
    }

    /// Carries out effects as a perfect host would (every write and every effect succeeds), and
    /// the outcomes' own effects, until none is left.
    mutating func settle(_ first: [ProtocolEffect<Sessions>]) {
        var queue = first
        var carried = 0
        while !queue.isEmpty {
            let effect = queue.removeFirst()
            trace("  effect \(effect)")
            carried += 1
            invariant(carried <= 100_000, "a step did not settle within 100,000 effects")
            switch effect {
            case .send(let message, _), .respond(let message, _):
                check(message)
            case .request(let message, _, let id, _):
                check(message)
                invariant(!pending.contains(id), "request id \(id.rawValue) reused while pending")
                pending.append(id)
                if pending.count > 4_096 { settle(node.response(nil, to: pending.removeFirst(), now: now)) }
            case .reply:
                break
            case .perform(.persist(_, let tag)):
                queue += node.performed(.persisted(tag), now: now)
            case .perform(.runEffect(let session, let key, _, _, _)):
                if running.count < 64 { running.append((session, key)) }
            }
        }
    }

    func check(_ message: SessionMessage) {
        let encoded = Sessions.encode(message)
        invariant(encoded.count <= Sessions.maxMessageBytes, "the node sent a session message over the channel's bound")
        invariant((try? Sessions.decode(encoded)) == message, "a message the node sent does not decode to itself")
    }
}

/// A session `agent-1` of three records held by node-a (owner, epoch 1, replicas a, b, c), and
/// scripts that walk it through takeover, appends, handoff and chunked checkpoints.
enum SessionNodeSeeds {
    static let session = "agent-1"
    static let crypto = SessionCrypto(publicKey: SessionNodeDriver.key, hash: { blake2b($0) },
                                      sign: { _ in Array(repeating: 0, count: 64) }, verify: { _, _, _ in true })

    static func chain(epoch: UInt64 = 1, signer: PeerName = "node-a", count: Int = 3) -> [SessionRecord] {
        var records: [SessionRecord] = []
        var previous = Array(repeating: UInt8(0), count: 32)
        for seq in 1...UInt64(count) {
            let kind: SessionRecord.Kind = seq == 1 ? .create : .checkpoint
            let content = seq == 1 ? Array("{}".utf8) : Array("{\"step\":\(seq)}".utf8)
            let record = crypto.seal(session: session, seq: seq, previousHash: previous, epoch: epoch, kind: kind, key: "",
                                     content: content, signer: signer)
            previous = crypto.hash(of: record)
            records.append(record)
        }
        return records
    }

    static var image: SessionImage {
        SessionImage(id: session, epoch: 1, owner: "node-a", replicas: ["node-a", "node-b", "node-c"], records: chain())
    }

    static func step(_ operation: Step.Operation, _ argument: UInt8 = 0, _ message: SessionMessage? = nil) -> [UInt8] {
        Step(operation: operation, argument: argument, payload: message.map(Sessions.encode) ?? []).encoded()
    }

    /// A checkpoint record as `appendChunks` carries it: no content, its state's manifest and chunks.
    static func chunked(_ record: SessionRecord) -> SessionMessage {
        let (manifest, chunks) = StateManifest.of(record.content ?? [], hash: crypto.hash)
        var bare = record
        bare.content = nil
        return .appendChunks(bare, manifest: manifest.encoded, chunks: chunks)
    }

    static var all: [String: [UInt8]] {
        let four = chain(count: 4)
        let longer = SessionImage(id: session, epoch: 2, owner: "node-b", replicas: ["node-b", "node-a", "node-c"],
                                  records: chain(epoch: 2, signer: "node-b", count: 4))
        let takeover = step(.tick, 20) + step(.response, 0, .promised(session: session, image: image))
            + step(.response, 0, .stored(session: session, seq: 3))
        return [
            "takeover": takeover,
            "takeover-then-checkpoint": takeover + step(.checkpoint, 0, nil) + step(.response, 0, .stored(session: session, seq: 4)),
            "takeover-then-act": takeover + step(.act, 1) + step(.response, 0, .stored(session: session, seq: 4)) + step(.finish, 0)
                + step(.response, 0, .stored(session: session, seq: 5)),
            "act-delete-finish": takeover + step(.act, 2) + step(.response, 0, .stored(session: session, seq: 4))
                + step(.delete) + step(.response, 0, .stored(session: session, seq: 5)) + step(.finish, 0x80) + step(.finish, 0)
                + step(.tick, 20),
            "append-from-peer": step(.request, 0, .append(four[3])),
            "install-from-peer": step(.request, 0, .install(longer)),
            "prepare-from-peer": step(.request, 1, .prepare(session: session, epoch: 2)),
            "prepare-max-epoch": step(.request, 1, .prepare(session: session, epoch: .max)),
            "handoff-to-me": step(.request, 0, .handoff(longer, epoch: 3, replicas: ["node-a", "node-b", "node-c"])),
            "transfer-commit-release": step(.request, 0, .transfer(session: session, epoch: 2, to: "node-d"))
                + step(.request, 0, .commit(session: session, epoch: 2, replicas: ["node-d", "node-a", "node-b"]))
                + step(.request, 0, .release(session: session, epoch: 2)),
            "append-chunks": step(.request, 0, chunked(four[3])),
            "owner-dies": step(.membership, 3 * 2) + step(.tick, 30) + step(.response, 1, .promised(session: session, image: nil)),
            "create-and-show": step(.create, 1) + step(.show, 0) + step(.tick, 50),
            "lead-check": step(.request, 1, .leads(sessions: [session, "s2"])) + step(.tick, 255)
                + step(.response, 0, .notLeading(sessions: [LeadAnswer(session: session, epoch: 1, owner: "node-b", replicas: ["node-a", "node-b", "node-c"]),
                                                            LeadAnswer(session: "s3")])) + step(.tick, 20),
            "joint-install": step(.request, 0, .install(SessionImage(id: session, epoch: 2, owner: "node-b", replicas: ["node-b", "node-a", "node-d"],
                                                                        configEpoch: 2, jointOld: ["node-a", "node-b", "node-c"],
                                                                        records: chain(epoch: 2, signer: "node-b", count: 4))))
                + step(.request, 0, .established(session: session, epoch: 2)) + step(.request, 0, .append(four[3])),
            "takeover-learns-config": step(.tick, 20)
                + step(.response, 0, .promised(session: session, image: SessionImage(id: session, epoch: 2, owner: "node-b",
                                                                                     replicas: ["node-b", "node-a", "node-d"], configEpoch: 1,
                                                                                     jointOld: ["node-a", "node-b", "node-c"], records: chain())))
                + step(.tick, 5) + step(.response, 1, .promised(session: session, image: nil)) + step(.response, 2, .stored(session: session, seq: 3)),
            "lead-check-raise": step(.tick, 255)
                + step(.response, 0, .notLeading(sessions: [LeadAnswer(session: session, epoch: 9, owner: "node-d")])) + step(.tick, 20),
        ]
    }
}
