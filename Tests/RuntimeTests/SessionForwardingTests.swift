import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import Synchronization
import StarlingCore
import Testing
@testable import StarlingRuntime

/// A suspect holder is probed before a session request is sent to it (`HolderForwarding.Probe`):
/// a hung node (its kernel accepts the connection, nobody reads it) costs the request one short
/// probe deadline, not a forwarding deadline each. Real HTTP servers and a real listening socket
/// on 127.0.0.1.
@Suite("Session forwarding past hung suspects (real sockets)")
struct SessionForwardingTests {
    /// A port whose kernel completes TCP handshakes (into the listen backlog) and which nobody
    /// ever reads: what a stopped or wedged node looks like to a client. Close the descriptor.
    static func hungListener() throws -> (fd: Int32, address: String) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw POSIXError(.EMFILE) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
        }
        guard bound, listen(fd, 64) == 0 else { close(fd); throw POSIXError(.EADDRINUSE) }
        return (fd, "127.0.0.1:\(UInt16(bigEndian: address.sin_port))")
    }

    /// What a holder was asked.
    final class Asked: Sendable {
        let reads = Mutex(0)
        let acts = Mutex(0)
    }

    /// A node that serves session `s1`: reads answer 200 for it and "not here" (a marked 404) for
    /// any other, actions on it are done. `deleted`: every read answers the 404 of a tombstone
    /// instead (unmarked: the holder's answer); `copy`: every read answers the 503 of a copy not
    /// served here; `nothing`: every read answers "not here".
    static func holderRouter(_ asked: Asked, deleted: Bool = false, copy: Bool = false, nothing: Bool = false) -> Router<BasicRequestContext> {
        let router = Router()
        router.get("/v1/sessions/{id}") { _, context -> Response in
            asked.reads.withLock { $0 += 1 }
            if deleted { return Response(status: .notFound, body: .init(byteBuffer: ByteBuffer(string: "deleted here"))) }
            if copy { return Response(status: .serviceUnavailable, headers: [.retryAfter: "1"]) }
            return context.parameters.get("id") == "s1" && !nothing ? Response(status: .ok) : notHere
        }
        router.post("/v1/sessions") { _, _ -> Response in
            asked.acts.withLock { $0 += 1 }
            return Response(status: .created)
        }
        router.post("/v1/sessions/{id}/checkpoint") { _, context -> Response in
            asked.acts.withLock { $0 += 1 }
            return context.parameters.get("id") == "s1" ? Response(status: .ok) : notHere
        }
        router.post("/v1/sessions/{id}/actions") { _, context -> Response in
            asked.acts.withLock { $0 += 1 }
            guard context.parameters.get("id") == "s1" else { return notHere }
            return Response(status: .ok, body: .init(byteBuffer: ByteBuffer(string: "acted")))
        }
        return router
    }

    /// A live HTTP server on 127.0.0.1 serving `router`.
    static func local(_ router: Router<BasicRequestContext>) -> Application<RouterResponder<BasicRequestContext>> {
        Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)))
    }

    /// What a node that holds nothing of a session answers a forwarded request.
    static var notHere: Response { Response(status: .notFound, headers: [HolderForwarding.notHereHeader: "1"]) }

    static func request(_ method: HTTPRequest.Method, _ path: String) -> Request {
        Request(head: HTTPRequest(method: method, scheme: "http", authority: "front", path: path), body: .init(buffer: ByteBuffer()))
    }

    /// The forwarder as a node runs it, with a forwarding deadline long enough that waiting it
    /// out could not pass for a probe's: the bound the tests check is half of one deadline
    /// (`quick`), and asking the hung suspects in turn takes three.
    static let forwarder = SessionForwarder(timeout: .seconds(60), probeTimeout: .seconds(5), logger: Logger(label: "test"))
    static let quick = Duration.seconds(30)

    static func forward(_ method: HTTPRequest.Method, _ path: String, id: String, to holders: [String],
                        suspects: Set<String>) async -> (status: HTTPResponse.Status, body: String, took: Duration) {
        let started = ContinuousClock.now
        do {
            let response = try await forwarder.forward(request(method, path), body: method == .post ? ByteBuffer(string: "{}") : nil, id: id,
                                                       to: holders, suspects: suspects, from: "front", notFound: "no session \(id)")
            let sink = CollectedBody(limit: 1 << 16, keep: true, stop: { _ in false })
            try await response.body.write(CollectingWriter(sink: sink))
            return (response.status, String(buffer: sink.buffer), ContinuousClock.now - started)
        } catch let error as HTTPError {
            return (error.status, error.body ?? "", ContinuousClock.now - started)
        } catch {
            return (.internalServerError, "\(error)", ContinuousClock.now - started)
        }
    }

    @Test func hungSuspectsCostOneProbeDeadlineTogetherAndALiveSuspectIsStillServed() async throws {
        let hung = try (0..<3).map { _ in try Self.hungListener() }
        defer { for h in hung { close(h.fd) } }
        let asked = Asked()
        let app = Application(router: Self.holderRouter(asked), configuration: .init(address: .hostname("127.0.0.1", port: 0)))
        try await withTaskExecutorPreference(otherNodeThreads) { try await app.test(.live) { client in
            let live = "127.0.0.1:\(try #require(client.port))"
            let hungAddresses = hung.map(\.address)
            // Three hung suspects before the live one (a suspect too, its owner): asked in turn,
            // each held the action for the whole forwarding deadline. Probed, they cost 5 s together,
            // and the live suspect that answered its probe gets the action, once.
            let served = await Self.forward(.post, "/v1/sessions/s1/actions", id: "s1", to: hungAddresses + [live],
                                            suspects: Set(hungAddresses + [live]))
            #expect(served.status == .ok && served.body == "acted", "\(served)")
            #expect(served.took < Self.quick, "the hung suspects held the request \(served.took)")
            #expect(asked.acts.withLock { $0 } == 1 && asked.reads.withLock { $0 } == 1)

            // Nobody serves it: the hung suspects make the answer 503 (they may hold it), soon.
            let missing = await Self.forward(.get, "/v1/sessions/s2", id: "s2", to: hungAddresses, suspects: Set(hungAddresses))
            #expect(missing.status == .serviceUnavailable, "\(missing)")
            #expect(missing.took < Self.quick, "the hung suspects held the request \(missing.took)")
            #expect(missing.body.contains("probed as a suspect"), "\(missing.body)")

            // A suspect that answers its probe "not here" is not sent the action, and with nobody
            // unreachable, 404 is the answer.
            let before = asked.acts.withLock { $0 }
            let notHere = await Self.forward(.post, "/v1/sessions/s3/actions", id: "s3", to: [live], suspects: [live])
            #expect(notHere.status == .notFound, "\(notHere)")
            #expect(asked.acts.withLock { $0 } == before, "a suspect that said \"not here\" was sent the action")

            // A holder that is not suspected is asked directly, with no probe.
            let reads = asked.reads.withLock { $0 }
            let direct = await Self.forward(.post, "/v1/sessions/s1/actions", id: "s1", to: [live], suspects: Set(hungAddresses))
            #expect(direct.status == .ok)
            #expect(asked.reads.withLock { $0 } == reads, "an alive holder was probed")
        } }
    }
}

/// A node whose protocol answers every command with one reply, and whose holders are given.
struct CannedSessionGateway: SessionGateway {
    let reply: SessionReply
    let holderAddresses: [String]
    var copyOwner: String?
    var nodeName: String { "front" }
    func command(_ command: SessionCommand) async throws -> SessionReply { reply }
    func holders(of id: String, recordedOwner: String?) -> [String] { holderAddresses }
    func recordedOwner(of id: String) -> String? { copyOwner }
}

extension SessionForwardingTests {
    /// A write that waited on the old owner through a handoff hears `moved` (SessionHandoff). A
    /// client's request goes on to the new owner; one another node forwarded is answered 503:
    /// that node may have asked the new owner before the commit, so a 404 here made every
    /// holder's answer "not here" and the client heard that a live session was missing (seen
    /// in SessionMigrationTests under load: "round 3, mig-8 through n1: 404").
    @Test func aWriteThatWaitedThroughAHandoffIsNeverAnswered404() async throws {
        let asked = Asked()
        let app = Application(router: Self.holderRouter(asked), configuration: .init(address: .hostname("127.0.0.1", port: 0)))
        try await withTaskExecutorPreference(otherNodeThreads) { try await app.test(.live) { client in
            let newOwner = "127.0.0.1:\(try #require(client.port))"
            let router = Router()
            SessionRoutes(gateway: CannedSessionGateway(reply: .moved(to: "n5"), holderAddresses: [newOwner], copyOwner: nil), logger: Logger(label: "test"))
                .register(on: router)
            try await Application(router: router).test(.router) { front in
                let body = ByteBuffer(string: #"{"state": 1}"#)
                try await front.execute(uri: "/v1/sessions/s1/checkpoint", method: .post, headers: [SwarmForwarder.hopHeader: "n3"],
                                        body: body) { r in
                    #expect(r.status == .serviceUnavailable, "a forwarded write that waited through a handoff: \(r.status)")
                    #expect(String(buffer: r.body).contains("moved to n5"))
                    #expect(r.headers[.retryAfter] != nil)
                }
                #expect(asked.acts.withLock { $0 } == 0, "a forwarded request was forwarded again")
                try await front.execute(uri: "/v1/sessions/s1/checkpoint", method: .post, body: body) { r in
                    #expect(r.status == .ok, "a client's write that waited through a handoff is not sent to the new owner: \(r.status)")
                }
                #expect(asked.acts.withLock { $0 } == 1)
            }
        } }
    }
}

extension SessionForwardingTests {
    /// A node that holds a copy of a session never calls it missing: views differ for a moment
    /// (the node that forwarded a request may not reach the owner this copy names, or count it
    /// present when this node does not), and 404s from every copy told a client that a live
    /// session was gone. 404 stays the answer of a node that holds nothing.
    @Test func aNodeHoldingACopyAnswers503Not404() async throws {
        for (copyOwner, expected) in [("n2", HTTPResponse.Status.serviceUnavailable), (nil, .notFound)] as [(String?, HTTPResponse.Status)] {
            let router = Router()
            SessionRoutes(gateway: CannedSessionGateway(reply: .notHere, holderAddresses: [], copyOwner: copyOwner), logger: Logger(label: "test"))
                .register(on: router)
            try await Application(router: router).test(.router) { front in
                // Forwarded here by another node, and a client's own request that no other node serves.
                for headers in [[SwarmForwarder.hopHeader: "n3"], [:]] as [HTTPFields] {
                    try await front.execute(uri: "/v1/sessions/s1", method: .get, headers: headers) { r in
                        #expect(r.status == expected, "copy owned by \(copyOwner ?? "none"), \(headers): \(r.status) \(String(buffer: r.body))")
                        if expected == .serviceUnavailable { #expect(r.headers[.retryAfter] != nil) }
                    }
                }
            }
        }
    }
}

extension SessionForwardingTests {
    /// An action's body is a Task: its id follows the Task schema's rule as a swarm's task's does
    /// (schemathesis: an id with control characters ran and answered 200).
    @Test func anActionWhoseTaskIdBreaksTheSchemaIs400() async throws {
        let router = Router()
        SessionRoutes(gateway: CannedSessionGateway(reply: .notHere, holderAddresses: [], copyOwner: nil), logger: Logger(label: "test"))
            .register(on: router)
        try await Application(router: router).test(.router) { front in
            for id in [#"V\u0013I"#, "a b", ".."] {
                let body = ByteBuffer(string: #"{"key": "k1", "argv": ["true"], "id": "\#(id)"}"#)
                try await front.execute(uri: "/v1/sessions/s1/actions", method: .post, body: body) { r in
                    #expect(r.status == .badRequest, "id \(id): \(r.status)")
                    #expect(String(buffer: r.body).contains("id must be"), "\(String(buffer: r.body))")
                }
            }
        }
    }
}

extension SessionForwardingTests {
    /// Review15 F1: a copy that never heard of a delete answers 503 (it holds the session); the
    /// tombstone's 404 is the answer all the same, asked after it or probed as a suspect. And a
    /// create is sent to a suspect without a probe (a session being created is nowhere yet).
    @Test func aTombstoneOutranksAStaleCopyAndACreateIsNotProbed() async throws {
        let copy = Asked()
        let tombstone = Asked()
        let copyApp = Application(router: Self.holderRouter(copy, copy: true), configuration: .init(address: .hostname("127.0.0.1", port: 0)))
        let tombstoneApp = Application(router: Self.holderRouter(tombstone, deleted: true),
                                       configuration: .init(address: .hostname("127.0.0.1", port: 0)))
        try await withTaskExecutorPreference(otherNodeThreads) { try await copyApp.test(.live) { copyClient in
            try await tombstoneApp.test(.live) { tombstoneClient in
                let stale = "127.0.0.1:\(try #require(copyClient.port))"
                let deleted = "127.0.0.1:\(try #require(tombstoneClient.port))"
                for suspects in [[], [deleted]] as [Set<String>] {
                    let read = await Self.forward(.get, "/v1/sessions/s1", id: "s1", to: [stale, deleted], suspects: suspects)
                    #expect(read.status == .notFound && read.body == "deleted here", "suspects \(suspects): \(read)")
                }
                // A node that holds a stale copy itself: still 404 once a tombstone answered.
                let router = Router()
                SessionRoutes(gateway: CannedSessionGateway(reply: .notHere, holderAddresses: [stale, deleted], copyOwner: "n2"),
                              logger: Logger(label: "test")).register(on: router)
                try await Application(router: router).test(.router) { front in
                    try await front.execute(uri: "/v1/sessions/s1", method: .get) { r in
                        #expect(r.status == .notFound, "\(r.status) \(String(buffer: r.body))")
                    }
                }
                // The create goes to the suspect as it is, unprobed.
                let creates = tombstone.acts.withLock { $0 }
                let reads = tombstone.reads.withLock { $0 }
                let createRouter = Router()
                SessionRoutes(gateway: SuspectingGateway(holderAddresses: [deleted]), logger: Logger(label: "test")).register(on: createRouter)
                try await Application(router: createRouter).test(.router) { front in
                    try await front.execute(uri: "/v1/sessions", method: .post, body: ByteBuffer(string: #"{"id": "s9"}"#)) { r in
                        #expect(r.status == .created, "\(r.status) \(String(buffer: r.body))")
                    }
                }
                #expect(tombstone.acts.withLock { $0 } == creates + 1)
                #expect(tombstone.reads.withLock { $0 } == reads, "a create probed a suspect")
            }
        } }
    }
}

/// A node whose protocol places every session elsewhere and that suspects all its holders.
struct SuspectingGateway: SessionGateway {
    let holderAddresses: [String]
    var nodeName: String { "front" }
    func command(_ command: SessionCommand) async throws -> SessionReply { .notHere }
    func holders(of id: String, recordedOwner: String?) -> [String] { holderAddresses }
    func suspectAddresses() -> Set<String> { Set(holderAddresses) }
}

extension SessionForwardingTests {
    /// Only a marked 404 means "not here": such a holder is passed over for the next, and when
    /// every holder said it the walk's own 404 is the answer, or 503 from a node holding a copy.
    /// Any other 404 is the holder's answer, returned as it is, even by a node holding a copy (on
    /// an agent route the owner of a session that carries no agent answered 404, and a copy on
    /// the entry node turned that into 503 for good: schemathesis, before the mark).
    @Test func onlyAMarked404MeansNotHere() async throws {
        let empty = Asked()
        let owner = Asked()
        let answering = Asked()
        try await withTaskExecutorPreference(otherNodeThreads) { try await Self.local(Self.holderRouter(empty, nothing: true)).test(.live) { emptyClient in
            try await Self.local(Self.holderRouter(owner)).test(.live) { ownerClient in
                try await Self.local(Self.holderRouter(answering, deleted: true)).test(.live) { answeringClient in
                    let nothing = "127.0.0.1:\(try #require(emptyClient.port))"
                    let live = "127.0.0.1:\(try #require(ownerClient.port))"
                    let own404 = "127.0.0.1:\(try #require(answeringClient.port))"
                    let served = await Self.forward(.get, "/v1/sessions/s1", id: "s1", to: [nothing, live], suspects: [])
                    #expect(served.status == .ok, "\(served)")
                    #expect(empty.reads.withLock { $0 } == 1 && owner.reads.withLock { $0 } == 1)
                    let missing = await Self.forward(.get, "/v1/sessions/s1", id: "s1", to: [nothing], suspects: [])
                    #expect(missing.status == .notFound && missing.body.contains("no session s1"), "\(missing)")
                    // A holder's own 404 is the answer, before a holder that would serve, and over a
                    // copy held on the entry node; "not here" from everyone is the copy's 503.
                    let first = await Self.forward(.get, "/v1/sessions/s1", id: "s1", to: [own404, live], suspects: [])
                    #expect(first.status == .notFound && first.body == "deleted here", "\(first)")
                    for (holders, status) in [([nothing], HTTPResponse.Status.serviceUnavailable), ([nothing, own404], .notFound)] {
                        let router = Router()
                        SessionRoutes(gateway: CannedSessionGateway(reply: .notHere, holderAddresses: holders, copyOwner: "n2"),
                                      logger: Logger(label: "test")).register(on: router)
                        try await Application(router: router).test(.router) { front in
                            try await front.execute(uri: "/v1/sessions/s1", method: .get) { r in
                                #expect(r.status == status, "\(holders): \(r.status) \(String(buffer: r.body))")
                            }
                            // Forwarded here: the copy's 503; with no copy, a marked "not here".
                            try await front.execute(uri: "/v1/sessions/s1", method: .get, headers: [SwarmForwarder.hopHeader: "n3"]) { r in
                                #expect(r.status == .serviceUnavailable)
                            }
                        }
                    }
                    let router = Router()
                    SessionRoutes(gateway: CannedSessionGateway(reply: .notHere, holderAddresses: [live], copyOwner: nil),
                                  logger: Logger(label: "test")).register(on: router)
                    try await Application(router: router).test(.router) { front in
                        try await front.execute(uri: "/v1/sessions/s1", method: .get, headers: [SwarmForwarder.hopHeader: "n3"]) { r in
                            #expect(r.status == .notFound && r.headers[HolderForwarding.notHereHeader] == "1", "\(r.status) \(r.headers)")
                        }
                    }
                }
            }
        } }
    }
}
