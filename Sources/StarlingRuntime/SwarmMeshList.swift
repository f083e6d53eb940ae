import AsyncHTTPClient
import Foundation
import NIOCore

/// `GET /v1/swarms` for the whole mesh: a swarm lives on its replica set (3 nodes of many), so
/// one node's store lists only a part. The answering node asks every other live node for its own
/// list (one hop, with `SwarmForwarder.hopHeader`, so they answer from their stores) and merges.
///
/// Bounded: at most `maxNodes` nodes asked, `concurrency` at a time, each with `timeout`, each
/// answer at most `maxBodyBytes`; the result holds at most `limit` swarms, newest first, each id
/// once. A node that does not answer in time makes the list `partial` and is named in
/// `unanswered` (its swarms also held by a node that answered are still listed).
struct SwarmMeshList: Sendable {
    var timeout: Duration = .seconds(2)
    var maxNodes = 256
    var concurrency = 16
    /// An honest answer is at most `limit` summaries of about 150 bytes.
    static func maxBodyBytes(limit: Int) -> Int { 4_096 + max(1, limit) * 512 }
    /// How far ahead of this node's clock a swarm's creation time may be (clock skew).
    static let maxClockSkewMs: UInt64 = 10 * 60 * 1_000

    func gather(local: [SwarmSummaryJSON], peers: [String], limit: Int, from node: String) async -> SwarmListJSON {
        let valid = peers.filter(SocketAddressText.isHostPort)
        let asked = Array(valid.prefix(maxNodes))
        var unanswered = Array(valid.dropFirst(maxNodes))
        var lists = [local]
        await withTaskGroup(of: (String, [SwarmSummaryJSON]?).self) { group in
            var next = 0
            func launch() {
                let peer = asked[next]
                next += 1
                group.addTask { (peer, await fetch(peer, limit: limit, from: node)) }
            }
            while next < asked.count && next < concurrency { launch() }
            while let (peer, list) = await group.next() {
                if let list { lists.append(list) } else { unanswered.append(peer) }
                if next < asked.count { launch() }
            }
        }
        let merged = Self.merge(lists, limit: limit)
        return unanswered.isEmpty ? SwarmListJSON(swarms: merged) : SwarmListJSON(swarms: merged, partial: true, unanswered: unanswered.sorted())
    }

    /// One node's own list, or nil if it did not answer 200 with a list in time.
    func fetch(_ peer: String, limit: Int, from node: String) async -> [SwarmSummaryJSON]? {
        var request = HTTPClientRequest(url: "http://\(peer)/v1/swarms?limit=\(limit)")
        request.headers.add(name: SwarmForwarder.hopHeader.rawName, value: node)
        guard let response = try? await SwarmForwarder.client.execute(request, timeout: .nanoseconds(SwarmForwarder.nanoseconds(timeout)), logger: nil),
              response.status == .ok,
              let body = try? await response.body.collect(upTo: Self.maxBodyBytes(limit: limit)),
              let list = try? JSONDecoder().decode(SwarmListJSON.self, from: Data(buffer: body)) else { return nil }
        let now = UInt64(max(0, Date().timeIntervalSince1970 * 1_000))
        return Array(list.swarms.prefix(limit).filter { Self.isPlausible($0, now: now) })
    }

    /// What another node says of a swarm is taken only when it could be true: a swarm id, a
    /// known state, counts within the total, created no later than a clock skew from now. A node
    /// with the cluster key could otherwise fill the list with swarms "created" in the far
    /// future, ahead of every real one (review of this session's diff).
    static func isPlausible(_ s: SwarmSummaryJSON, now: UInt64) -> Bool {
        SwarmRoutes.isSwarmID(Substring(s.id))
            && ["running", "done", "cancelled"].contains(s.state)
            && s.total >= 0 && s.succeeded >= 0 && s.failed >= 0
            && s.succeeded <= s.total && s.failed <= s.total - s.succeeded
            && s.createdAtMs <= now &+ maxClockSkewMs
    }

    /// Newest first (then by id), each id once, at most `limit`. Replicas of one swarm may lag
    /// its owner: the copy furthest along wins (finished over running, then more tasks final).
    static func merge(_ lists: [[SwarmSummaryJSON]], limit: Int) -> [SwarmSummaryJSON] {
        var best: [String: SwarmSummaryJSON] = [:]
        for list in lists {
            for s in list {
                guard let held = best[s.id] else { best[s.id] = s; continue }
                if progress(s) > progress(held) { best[s.id] = s }
            }
        }
        return best.values.sorted { ($0.createdAtMs, $1.id) > ($1.createdAtMs, $0.id) }.prefix(max(0, limit)).map { $0 }
    }

    private static func progress(_ s: SwarmSummaryJSON) -> (Int, Int) {
        (s.state == "running" ? 0 : 1, s.succeeded.addingReportingOverflow(s.failed).partialValue)
    }
}
