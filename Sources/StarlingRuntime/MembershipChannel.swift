import StarlingCore

/// Membership's periodic push-pull over the peer links, on `Channel.membership`: a push-pull
/// to a live member is a request on the link to it, answered with the server's state after the
/// merge, as the stream exchange does. Joins and reconnects (to seeds and dead members, known by
/// address only), states over `maxLinkFrameBytes`, and push-pulls whose request cannot go on a
/// link (backoff, full queue) still use a `StreamExchange`. Off with `pushPullOverLinks = false`.
///
/// Membership is not a `HostedProtocol` (it emits `MembershipDirective`s), so this adapter
/// plugs it into the link machinery directly; it hears no membership events and has no timer.
final class MembershipChannel: HostedRunner {
    unowned let node: MeshNode

    init(node: MeshNode) { self.node = node }

    var maxMessageBytes: Int { node.configuration.maxLinkFrameBytes }
    var nextDeadline: Instant { .distantFuture }
    func tick() {}
    func membershipChanged(_ event: MembershipEvent) {}
    func stop() {}

    func deliverMessage(_ bytes: [UInt8], from peer: PeerName) {
        node.linkMetrics.drop(.membership, "unexpected_oneway")
    }

    func deliverRequest(_ bytes: [UInt8], from peer: PeerName, token: RequestToken) -> Bool {
        guard let state = decode(bytes) else { return false }
        let (reply, directives) = node.membership.servePushPull(state, now: node.now)
        node.execute(directives)
        node.linkRespond(reply.encoded(), channel: .membership, to: token)
        return true
    }

    func deliverResponse(_ bytes: [UInt8]?, to id: RequestID) {
        node.execute(node.membership.completePushPull(bytes.flatMap { decode($0) }, now: node.now))
    }

    private func decode(_ bytes: [UInt8]) -> PushPullState? {
        do { return try PushPullState.decode(bytes) } catch {
            node.linkMetrics.drop(.membership, "malformed")
            node.metrics.drop(reason: error.reason)
            return nil
        }
    }
}

extension MeshNode {
    /// The runner for a channel: membership's adapter, or a registered protocol.
    func runner(for channel: Channel) -> (any HostedRunner)? {
        channel == .membership ? (configuration.pushPullOverLinks ? membershipChannel : nil) : protocols[channel.rawValue]
    }

    /// Sends a push-pull as a request on the link to the live member at `address`; false when
    /// it should go by a stream exchange instead (see `MembershipChannel`).
    func pushPullOverLink(_ state: PushPullState, to address: NodeAddress) -> Bool {
        guard configuration.pushPullOverLinks,
              let member = membership.members.first(where: { $0.address == address && $0.status.isActive }),
              member.name != configuration.name else { return false }
        let bytes = state.encoded()
        guard bytes.count <= configuration.maxLinkFrameBytes else { return false }
        return linkRequest(bytes, channel: .membership, to: member.name, id: RequestID(rawValue: 0),
                           timeout: configuration.streamTimeout)
    }
}
