import CUV
import StarlingCore
import StarlingCrypto

/// The node's peer links and the requests travelling on them. Loop thread only.
///
/// One link per peer pair: a node sends to a peer on the link it has with it, whichever end
/// dialled, and dials only when it has none. When both ends dial at once, each ends up with two
/// connections; the one dialled by the node whose name sorts first wins at both ends (a rule
/// both can apply without talking), and the other *drains*: no new requests go out on it, and
/// the end that dialled it closes it once its requests are answered. So a race costs one
/// short-lived extra connection, never a lost request, and settles on one link.
final class LinkTable {
    struct Outstanding {
        var channel: Channel
        var id: RequestID
        /// nil: a request to this node itself (loopback).
        var link: ObjectIdentifier?
        var deadline: Instant
    }

    struct Owed {
        var channel: Channel
        /// nil: a request from this node itself; `requestId` is then our own outstanding request.
        var link: ObjectIdentifier?
        var requestId: UInt64
    }

    struct Timeout: Comparable {
        var deadline: Instant
        var requestId: UInt64
        static func < (a: Timeout, b: Timeout) -> Bool { (a.deadline, a.requestId) < (b.deadline, b.requestId) }
    }

    var all: [ObjectIdentifier: PeerLink] = [:]
    /// The link each peer's messages go out on (never a draining one).
    var byPeer: [PeerName: PeerLink] = [:]
    /// Peers whose last dial failed: until when sends fail at once, and the next delay.
    var backoff: [PeerName: (until: Instant, delay: Duration)] = [:]
    var outstanding: [UInt64: Outstanding] = [:]
    var timeouts = MinHeap<Timeout>()
    var owed: [UInt64: Owed] = [:]
    var nextRequestId: UInt64 = 1
    var nextToken: UInt64 = 1
    var dirty: [PeerLink] = []
    var lastSweep = Instant.zero
}

extension MeshNode {
    // MARK: Sending

    /// The link to `peer`, dialling one if there is none. Nil, counted on `channel`, when the
    /// peer is not a live member we know, is backing off after a failed dial, or the link limit
    /// is reached.
    func link(to peer: PeerName, channel: Channel) -> PeerLink? {
        if let link = links.byPeer[peer] { return link }
        guard let member = membership.members[peer], member.status.isActive, peer != configuration.name else {
            linkMetrics.drop(channel, "unreachable")
            return nil
        }
        if let b = links.backoff[peer], now < b.until {
            linkMetrics.drop(channel, "backoff")
            return nil
        }
        guard links.all.count < configuration.maxLinks, var dest = socketAddress(for: member.address) else {
            linkMetrics.drop(channel, "link_limit")
            return nil
        }
        let link = PeerLink(node: self, dialling: peer, at: member.address, now: now)
        links.all[link.id] = link
        links.byPeer[peer] = link
        let connect = UnsafeMutablePointer<uv_connect_t>.allocate(capacity: 1)
        connect.pointee.data = Unmanaged.passUnretained(link).toOpaque()
        let rc = withUnsafePointer(to: &dest) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
                uv_tcp_connect(connect, link.handle, sa) { req, status in
                    let link = PeerLink.from(req!.pointee.data)
                    req!.deallocate()
                    link.connected(status: status)
                    link.node.afterEvent()
                }
            }
        }
        if rc != 0 {
            connect.deallocate()
            link.close(reason: "dial_failed", uvError(rc))
            return nil
        }
        return link
    }

    /// A one-way message. Dropped and counted when it cannot go.
    func linkSend(_ payload: [UInt8], channel: Channel, to peer: PeerName) {
        if peer == configuration.name {
            linkMetrics.sent(channel, bytes: payload.count)
            linkMetrics.received(channel, bytes: payload.count)
            runner(for: channel)?.deliverMessage(payload, from: peer)
            return
        }
        guard let link = link(to: peer, channel: channel) else { return }
        guard link.enqueue(channel: channel, kind: .oneway, requestId: 0, payload: payload) else {
            return linkMetrics.drop(channel, "queue_full")
        }
        linkMetrics.sent(channel, bytes: payload.count)
    }

    /// A request; false when it could not go (the caller answers it with nil at once).
    func linkRequest(_ payload: [UInt8], channel: Channel, to peer: PeerName, id: RequestID, timeout: Duration) -> Bool {
        let requestId = links.nextRequestId
        // Clamped: `Instant + Duration` wraps, and a protocol's timeout is any Duration.
        let deadline = now + min(max(timeout, .zero), .seconds(86_400))
        if peer == configuration.name {
            links.nextRequestId &+= 1
            links.outstanding[requestId] = .init(channel: channel, id: id, link: nil, deadline: deadline)
            links.timeouts.push(.init(deadline: deadline, requestId: requestId))
            let token = links.nextToken
            links.nextToken &+= 1
            links.owed[token] = .init(channel: channel, link: nil, requestId: requestId)
            linkMetrics.sent(channel, bytes: payload.count)
            linkMetrics.received(channel, bytes: payload.count)
            if runner(for: channel)?.deliverRequest(payload, from: peer, token: RequestToken(rawValue: token)) != true {
                links.owed[token] = nil
            }
            return true
        }
        guard let link = link(to: peer, channel: channel) else { return false }
        guard link.enqueue(channel: channel, kind: .request, requestId: requestId, payload: payload) else {
            linkMetrics.drop(channel, "queue_full")
            return false
        }
        links.nextRequestId &+= 1
        link.requestsInFlight += 1
        links.outstanding[requestId] = .init(channel: channel, id: id, link: link.id, deadline: deadline)
        links.timeouts.push(.init(deadline: deadline, requestId: requestId))
        linkMetrics.sent(channel, bytes: payload.count)
        return true
    }

    /// The answer to a peer's request, on the link it came by.
    func linkRespond(_ payload: [UInt8], channel: Channel, to token: RequestToken) {
        guard let owed = links.owed.removeValue(forKey: token.rawValue), owed.channel == channel else {
            return linkMetrics.drop(channel, "unknown_token")
        }
        guard let linkId = owed.link else {
            // Loopback: our own request, answered by ourselves.
            linkMetrics.sent(channel, bytes: payload.count)
            linkMetrics.received(channel, bytes: payload.count)
            guard let request = links.outstanding.removeValue(forKey: owed.requestId) else {
                return linkMetrics.drop(channel, "late_response")
            }
            runner(for: channel)?.deliverResponse(payload, to: request.id)
            return
        }
        guard let link = links.all[linkId] else { return linkMetrics.drop(channel, "broken") }
        link.requestsOwed -= 1
        guard link.enqueue(channel: channel, kind: .response, requestId: owed.requestId, payload: payload) else {
            return linkMetrics.drop(channel, "queue_full")
        }
        linkMetrics.sent(channel, bytes: payload.count)
        closeIfDrained(link)
    }

    func markDirty(_ link: PeerLink) {
        guard !link.isDirty else { return }
        link.isDirty = true
        links.dirty.append(link)
    }

    /// Writes what each link queued during this event, one write per link.
    func flushLinks() {
        guard !links.dirty.isEmpty else { return }
        let dirty = links.dirty
        links.dirty.removeAll(keepingCapacity: true)
        for link in dirty { link.flush() }
    }

    // MARK: Receiving

    func linkReceived(_ frame: LinkFrame, on link: PeerLink) {
        let channel = frame.channel
        guard let runner = runner(for: channel) else { return linkMetrics.drop(channel, "unknown_channel") }
        guard frame.payload.count <= runner.maxMessageBytes else {
            linkMetrics.drop(channel, "oversize")
            if frame.kind == .response { failRequest(frame.requestId, on: link, reason: nil) }
            return
        }
        linkMetrics.received(channel, bytes: frame.payload.count)
        switch frame.kind {
        case .oneway:
            runner.deliverMessage(frame.payload, from: link.peer)
        case .request:
            guard link.requestsOwed < configuration.maxOwedRequestsPerLink else {
                return linkMetrics.drop(channel, "too_many_requests")
            }
            let token = links.nextToken
            links.nextToken &+= 1
            links.owed[token] = .init(channel: channel, link: link.id, requestId: frame.requestId)
            link.requestsOwed += 1
            if !runner.deliverRequest(frame.payload, from: link.peer, token: RequestToken(rawValue: token)),
               links.owed.removeValue(forKey: token) != nil {
                link.requestsOwed -= 1
            }
        case .response:
            guard let request = links.outstanding[frame.requestId], request.link == link.id, request.channel == channel else {
                return linkMetrics.drop(channel, "unexpected_response")
            }
            links.outstanding[frame.requestId] = nil
            link.requestsInFlight -= 1
            runner.deliverResponse(frame.payload, to: request.id)
            closeIfDrained(link)
        }
    }

    /// Answers one of our requests with nil (a bad response frame counts as none).
    private func failRequest(_ requestId: UInt64, on link: PeerLink, reason: String?) {
        guard let request = links.outstanding[requestId], request.link == link.id else { return }
        links.outstanding[requestId] = nil
        link.requestsInFlight -= 1
        if let reason { linkMetrics.drop(request.channel, reason) }
        runner(for: request.channel)?.deliverResponse(nil, to: request.id)
    }

    // MARK: Accepting

    /// An inbound stream's link hello opened: the connection becomes a link to `peer`.
    func adoptLink(handle: UnsafeMutablePointer<uv_tcp_t>, from peer: PeerName, connection: UInt64, leftover: [UInt8]) {
        let link = PeerLink(node: self, accepted: handle, from: peer, connection: connection, now: now)
        links.all[link.id] = link
        guard links.all.count <= configuration.maxLinks else {
            linkMetrics.link("refused")
            return link.close(reason: "link_limit")
        }
        linkMetrics.link("accepted")
        if let existing = links.byPeer[peer] {
            // Two connections to one peer: both dialled at once, or the peer reconnected. The
            // one dialled by the smaller name wins a race; a newer inbound link replaces an
            // older one (the peer dials only when it has none, so it gave the old one up).
            let keepExisting = existing.dialled && configuration.name < peer
            if keepExisting {
                link.draining = true
            } else {
                existing.draining = true
                links.byPeer[peer] = link
                closeIfDrained(existing)
            }
        } else {
            links.byPeer[peer] = link
        }
        links.backoff[peer] = nil
        link.configureSocket()
        link.startReading()
        if !leftover.isEmpty { leftover.withUnsafeBytes { link.consume($0) } }
    }

    // MARK: Closing

    /// A draining link goes once neither end waits on it, closed by the end that dialled it:
    /// only that end sends requests on it (the other never had it as its preferred link), so
    /// when its own requests are answered nothing more can come. Its last bytes are written
    /// first. A draining link we accepted closes when the peer closes it, or when idle.
    func closeIfDrained(_ link: PeerLink) {
        if link.draining, link.dialled, link.requestsInFlight == 0, link.requestsOwed == 0 { link.closeWhenWritten(reason: "drained") }
    }

    /// Called by `PeerLink.close`: fails the requests in flight on it, forgets what we owed on it.
    func linkClosed(_ link: PeerLink, failedToConnect: Bool) {
        linkMetrics.link(failedToConnect ? "dial_failed" : "closed")
        if links.byPeer[link.peer] === link { links.byPeer[link.peer] = nil }
        if failedToConnect {
            let delay = min((links.backoff[link.peer]?.delay ?? configuration.linkBackoff / 2) * 2, configuration.maxLinkBackoff)
            links.backoff[link.peer] = (now + delay, delay)
        } else {
            links.backoff[link.peer] = nil
        }
        let failed = links.outstanding.filter { $0.value.link == link.id }
        for (requestId, request) in failed.sorted(by: { $0.key < $1.key }) {
            links.outstanding[requestId] = nil
            linkMetrics.drop(request.channel, "broken")
            runner(for: request.channel)?.deliverResponse(nil, to: request.id)
        }
        link.requestsInFlight = 0
        if link.requestsOwed > 0 {
            links.owed = links.owed.filter { $0.value.link != link.id }
            link.requestsOwed = 0
        }
    }

    /// A member that is dead, has left or was reaped gets no link.
    func closeLinks(to peer: PeerName, reason: String) {
        links.backoff[peer] = nil
        for link in links.all.values where link.peer == peer && link.state != .closed {
            linkMetrics.link(reason)
            link.close(reason: reason)
        }
    }

    func closeAllLinks() {
        for link in Array(links.all.values) { link.close(reason: "node_stopped") }
    }

    // MARK: Timers

    /// Request timeouts (each a nil response), idle links, stalled dials.
    func sweepLinks(now t: Instant) {
        while let due = links.timeouts.min, due.deadline <= t {
            links.timeouts.pop()
            guard let request = links.outstanding[due.requestId], request.deadline == due.deadline else { continue }
            links.outstanding[due.requestId] = nil
            if let linkId = request.link, let link = links.all[linkId] {
                link.requestsInFlight -= 1
                closeIfDrained(link)
            }
            linkMetrics.drop(request.channel, "timeout")
            runner(for: request.channel)?.deliverResponse(nil, to: request.id)
        }
        guard !links.all.isEmpty, t - links.lastSweep >= .milliseconds(100) else { return }
        links.lastSweep = t
        var queued = 0
        for link in Array(links.all.values) {
            queued += link.queuedBytes
            if link.state == .connecting, t - link.openedAt >= configuration.linkConnectTimeout {
                link.close(reason: "dial_failed", "connect timed out")
            } else if link.requestsInFlight == 0, link.requestsOwed == 0, t - link.lastActivity >= configuration.linkIdleTimeout {
                link.close(reason: "idle")
            }
        }
        linkMetrics.gauges(open: links.all.values.count { $0.state != .closed }, queuedBytes: queued)
    }

    /// When the links next need the loop: the earliest request deadline, and a sweep while any
    /// link is open.
    func linksDeadline(after t: Instant) -> Instant {
        var d = links.timeouts.min?.deadline ?? .distantFuture
        if !links.all.isEmpty { d = min(d, links.lastSweep + .milliseconds(100)) }
        return max(d, t)
    }
}
