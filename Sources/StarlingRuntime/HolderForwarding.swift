import AsyncHTTPClient
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import NIOHTTP1

/// The one forwarding loop behind every route that serves what another node holds (swarms,
/// sessions): the request goes, at most one hop, to each holder in turn until one answers.
///
/// - A holder that holds nothing of what a forwarded request asks for (or, for swarms, whose
///   protocol does not know it) answers 404 marked "not here" (`notHereHeader`, `notHere(_:)`;
///   a session copy that does not serve answers 503 instead): the next holder is tried; 404 in
///   the end when every holder that answered said so (or there was none). Any other 404 is the
///   holder's answer and is returned as it is, as any other answer is: a session's tombstone
///   ("deleted"), or on an agent route the owner of a session that carries no agent. (Before the
///   mark, every 404 meant "not here": a tombstone's 404 lost to the 503s of stale copies, and
///   the agent owner's 404 became a copy's 503 for good; each had its own patch.)
///   The price: a 404 from anything that is not this version's routes (an older node, another
///   server at a member's address) ends the walk as an answer; the routes that answer "not
///   here" are listed in NOTES, and a route that forgets the mark would do the same.
/// - 503 from a holder is an answer for swarms; for sessions (`passOverUnavailable`) it is kept
///   and the next holder tried, so a replica that does not serve the session (or is resuming it)
///   does not hide the owner behind it. The kept 503 is returned if nobody did better.
/// - No holder reachable: 503 with `Retry-After`. With `unreachableHolderMeansUnavailable`
///   (sessions) also when only some were: a node that holds nothing of the session answers "not
///   here", so while its owner is unreachable (killed, not yet suspected) the others' "not
///   here" does not prove the session missing, and a client that got 404 there would give it up.
///
/// - Suspect holders (`suspects`, sessions) are probed before they are sent the request: when
///   the walk first reaches one, every suspect in the list gets a cheap read (`Probe.path`) at
///   once, each within `Probe.deadline`, and the walk goes on when all have answered. A suspect
///   whose probe got no answer counts as unreachable and is not sent the request; one that
///   answered "not here" is skipped; one that answered anything else is sent the request with
///   the full `deadline`. A suspect is
///   often a hung process whose kernel still accepts connections: asked in turn, each such
///   holder held the request for a whole forwarding deadline (15 s; with the R + 3 = 6
///   suspects a session's list may hold, 90 s). Now all of them together cost one probe
///   deadline. The price: the walk waits for every probe, so a suspect that is alive waits for
///   the slowest of the others (at most the probe deadline), and one slower than the deadline
///   counts as unreachable (503; the client tries again).
///
/// Bounded: at most `maxHolders` holders, each within `deadline`, their probes within
/// `Probe.deadline`, and an answer that is not a stream read up to `maxBodyBytes`.
struct HolderForwarding: Sendable {
    var maxHolders: Int
    var maxBodyBytes: Int
    var passOverUnavailable: Bool
    /// 404 only when every holder answered "not here"; an unreachable one makes it 503 (sessions).
    var unreachableHolderMeansUnavailable = false
    /// The start of the 503's message when no holder could be reached.
    var unreachable: String
    var logger: Logger

    /// On a 404 that a node answers a forwarded request with because it does not hold or serve
    /// the resource; a 404 without it is the holder's answer.
    static let notHereHeader = HTTPField.Name("X-Starling-Not-Here")!

    /// The 404 a node answers a forwarded request with when it does not hold or serve what it
    /// asks for (harmless on a client's own request: clients ignore the header).
    static func notHere(_ message: String) -> HTTPError {
        HTTPError(.notFound, headers: [notHereHeader: "1"], message: message)
    }

    /// Whether a holder's answer is a marked "not here".
    static func isNotHere(_ response: HTTPClientResponse) -> Bool {
        response.status == .notFound && response.headers.contains(name: notHereHeader.rawName)
    }

    /// How a suspect holder is asked whether it may serve the request before it is sent it.
    struct Probe: Sendable {
        /// The holders (their API addresses) that are suspected.
        var suspects: Set<String>
        /// A read of the resource the request is about, with the hop header: a holder that
        /// does not serve it answers "not here", as it would to the request.
        var path: String
        var deadline: Duration
    }
    var probe: Probe?

    enum ProbeOutcome: Sendable {
        case unreachable(String)
        case notHere
        /// Any answer but "not here" (a tombstone's 404 too): the holder is sent the request,
        /// and its answer to that is returned.
        case mayServe
    }

    /// What a probe reads of an answer: enough for an error's message. The answer is not used;
    /// a session's read carries its state (up to 1 MiB), which is dropped unread past this.
    static let probeBodyBytes = 16 << 10

    /// Probes every suspect among `holders` at once, and waits for every answer (each within
    /// `Probe.deadline`). Child tasks of this one: cancelled with it, and they keep its
    /// executor preference.
    func probeAll(_ probe: Probe, of holders: [String], from node: String) async -> [String: ProbeOutcome] {
        let suspects = Set(holders.filter { probe.suspects.contains($0) })
        return await withTaskGroup(of: (String, ProbeOutcome).self) { group in
            for holder in suspects {
                group.addTask {
                    var out = HTTPClientRequest(url: "http://\(holder)\(probe.path)")
                    out.method = .GET
                    out.headers.add(name: SwarmForwarder.hopHeader.rawName, value: node)
                    do {
                        let response = try await SwarmForwarder.client.execute(out, timeout: .nanoseconds(SwarmForwarder.nanoseconds(probe.deadline)),
                                                                                logger: nil)
                        _ = try? await response.body.collect(upTo: Self.probeBodyBytes)
                        return (holder, Self.isNotHere(response) ? .notHere : .mayServe)
                    } catch {
                        return (holder, .unreachable("\(holder): \(error) (probed as a suspect)"))
                    }
                }
            }
            var outcomes: [String: ProbeOutcome] = [:]
            for await (holder, outcome) in group { outcomes[holder] = outcome }
            return outcomes
        }
    }

    func forward(_ request: Request, body: ByteBuffer?, to holders: [String], from node: String, notFound: String,
                 deadline: Duration, streams: Bool) async throws -> Response {
        var reached = false
        var unreachableHolder = false
        var lastFailure = ""
        var unavailable: Response?
        let asked = holders.prefix(maxHolders).filter { SocketAddressText.isHostPort($0) }
        var probed: [String: ProbeOutcome]?
        for holder in asked {
            if let probe, probe.suspects.contains(holder) {
                if probed == nil { probed = await probeAll(probe, of: asked, from: node) }
                switch probed?[holder] ?? .mayServe {
                case .unreachable(let failure):
                    lastFailure = failure
                    unreachableHolder = true
                    logger.debug("suspect not asked", metadata: ["to": "\(holder)", "path": "\(request.uri.path)", "error": "\(failure)"])
                    continue
                case .notHere:
                    reached = true
                    continue
                case .mayServe:
                    break
                }
            }
            var out = HTTPClientRequest(url: "http://\(holder)\(request.uri.path)\(request.uri.query.map { "?\($0)" } ?? "")")
            out.method = HTTPMethod(rawValue: request.method.rawValue)
            out.headers.add(name: SwarmForwarder.hopHeader.rawName, value: node)
            if let lastEventID = HTTPField.Name("Last-Event-ID"), let value = request.headers[lastEventID] {
                out.headers.add(name: "Last-Event-ID", value: value)
            }
            if let body {
                out.headers.add(name: "Content-Type", value: "application/json")
                out.body = .bytes(body)
            }
            let response: HTTPClientResponse
            do {
                response = try await SwarmForwarder.client.execute(out, timeout: .nanoseconds(SwarmForwarder.nanoseconds(deadline)), logger: nil)
            } catch {
                lastFailure = "\(holder): \(error)"
                unreachableHolder = true
                logger.debug("request not forwarded", metadata: ["to": "\(holder)", "path": "\(request.uri.path)", "error": "\(error)"])
                continue
            }
            reached = true
            if Self.isNotHere(response) {
                _ = try? await response.body.collect(upTo: Self.probeBodyBytes)
                continue
            }
            var headers = HTTPFields()
            if let type = response.headers.first(name: "Content-Type") { headers[.contentType] = type }
            if let retry = response.headers.first(name: "Retry-After") { headers[.retryAfter] = retry }
            if let allow = response.headers.first(name: "Allow") { headers[.allow] = allow }
            let status = HTTPResponse.Status(code: Int(response.status.code))
            if streams && response.status == .ok {
                headers[.cacheControl] = "no-store"
                return Response(status: status, headers: headers, body: ResponseBody(asyncSequence: response.body))
            }
            let bytes: ByteBuffer
            do { bytes = try await response.body.collect(upTo: maxBodyBytes) } catch {
                lastFailure = "\(holder): \(error)"
                continue
            }
            let answer = Response(status: status, headers: headers, body: .init(byteBuffer: bytes))
            if passOverUnavailable && response.status == .serviceUnavailable {
                if unavailable == nil { unavailable = answer }
                continue
            }
            return answer
        }
        if let unavailable { return unavailable }
        if holders.isEmpty || (reached && !(unreachableHolder && unreachableHolderMeansUnavailable)) {
            throw HTTPError(.notFound, message: notFound)
        }
        throw HTTPError(.serviceUnavailable, headers: [.retryAfter: "1"], message: "\(unreachable) (\(lastFailure))")
    }
}
