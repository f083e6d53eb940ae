import Testing
@testable import StarlingCore

/// A peer that holds the cluster key but sends numbers and swarms no honest node would.
@Suite("Swarm hostile peer")
struct SwarmHostilePeerTests {
    static let id = "0badc0de0badc0de"

    /// A node `n0` that sees `n1` alive.
    static func node() -> Swarm {
        var swarm = Swarm(settings: SwarmSettings(slots: 2, memoryMB: 1000, requestTimeout: .milliseconds(200),
                                                  retryInterval: .milliseconds(100)),
                          myName: "n0", seed: 1, now: .zero)
        let meta = MemberMetadata(version: 1, api: "", slots: 2, free: 2, memoryMB: 1000, freeMemoryMB: 1000)
        _ = swarm.membershipChanged(.updated(PeerView(name: "n1", address: NodeAddress(host: "127.0.0.1", port: 1),
                                                      status: .alive, metadata: meta)), now: .zero)
        return swarm
    }

    /// A whole-swarm replicate whose replica set is `replicas`, at `version`, through the codec.
    static func replicate(_ id: SwarmID = id, version: UInt64, replicas: [PeerName]) throws -> SwarmMessage {
        let definition = SwarmDefinition(id: id, draft: draft(2), replicas: replicas)
        let message = SwarmMessage.replicate(ReplicaUpdate(id: id, epoch: 1, baseVersion: 0, version: version,
                                                           state: .running, definition: definition, records: [],
                                                           children: [], last: true))
        return try Swarm.decode(Swarm.encode(message))
    }

    @Test func aVersionNoNodeCanReachIsRefusedByTheDecoder() {
        for version in [UInt64.max, UInt64.max - 1, SwarmLimits.maxVersion + 1] {
            #expect(throws: WireError.self) { try Self.replicate(version: version, replicas: ["n0"]) }
            let replicated = SwarmMessage.replicated(Self.id, version: version, status: .applied)
            #expect(throws: WireError.self) { try Swarm.decode(Swarm.encode(replicated)) }
            let page = SwarmMessage.syncPage(SyncPage(id: Self.id, known: true, epoch: 1, version: version, state: .running,
                                                      children: [], from: 0, records: [], next: nil))
            #expect(throws: WireError.self) { try Swarm.decode(Swarm.encode(page)) }
        }
    }

    /// Before the bound, a replicate at version UInt64.max made the node trap (`version += 1`)
    /// as soon as it took the swarm over. At the highest version the decoder lets through, it
    /// takes the swarm over and keeps counting.
    @Test func theHighestLegalVersionSurvivesATakeover() throws {
        var swarm = Self.node()
        let message = try Self.replicate(version: SwarmLimits.maxVersion, replicas: ["n0"])
        _ = swarm.request(message, from: "n1", token: RequestToken(rawValue: 1), now: .zero)
        var now = Instant.zero
        while now < .zero + .seconds(10) {
            now = now + .milliseconds(100)
            _ = swarm.tick(now: now)
        }
        let snapshot = try #require(swarm.snapshot(of: Self.id))
        #expect(snapshot.isOwner)
        #expect(swarm.swarms[Self.id]!.version > SwarmLimits.maxVersion)
    }
}

extension SwarmHostilePeerTests {
    /// Copies of a swarm are kept in memory and in the store: a peer must not plant swarms on a
    /// node that is not in their replica set, nor more than the node's bound of active swarms.
    @Test func aCopyOfASwarmThisNodeDoesNotReplicateIsRefused() throws {
        var swarm = Self.node()
        let effects = swarm.request(try Self.replicate(version: 1, replicas: ["n1", "n2"]), from: "n1",
                                    token: RequestToken(rawValue: 1), now: .zero)
        #expect(swarm.snapshot(of: Self.id) == nil)
        #expect(effects.contains { if case .respond(.refused, _) = $0 { true } else { false } })
        #expect(!effects.contains { if case .perform(.store) = $0 { true } else { false } })
    }

    @Test func copiesOfSwarmsStopAtTheActiveSwarmBound() throws {
        var swarm = Self.node()
        let limit = Swarm.Bounds.maxActiveSwarms
        for i in 0...limit {
            let id = String(String(i, radix: 16).reversed()).padding(toLength: 16, withPad: "0", startingAt: 0)
            _ = swarm.request(try Self.replicate(id, version: 1, replicas: ["n1", "n0"]), from: "n1",
                              token: RequestToken(rawValue: UInt64(i + 1)), now: .zero)
        }
        #expect(swarm.heldSwarms.count == limit)
    }
}

extension SwarmHostilePeerTests {
    /// Placement compares loads as (used + reserved) × the other's slots. Before it compared
    /// them exactly in 128 bits, a member advertising 4 billion slots with one free made that
    /// product overflow `Int` (and trap the owner) whenever both draws picked it.
    @Test func aMemberAdvertisingBillionsOfSlotsDoesNotTrapPlacement() throws {
        var swarm = Self.node()
        let huge = MemberMetadata(version: 2, api: "", slots: .max, free: 1, memoryMB: 1000, freeMemoryMB: 1000)
        _ = swarm.membershipChanged(.updated(PeerView(name: "n1", address: NodeAddress(host: "127.0.0.1", port: 1),
                                                      status: .alive, metadata: huge)), now: .zero)
        let definition = SwarmDefinition(id: Self.id, draft: draft(200), replicas: ["n0"])
        let effects = swarm.request(.create(definition), from: "n1", token: RequestToken(rawValue: 1), now: .zero)
        let reserved = effects.reduce(0) { n, effect in
            if case .send(.reserve(_, _, _, let needs), to: _) = effect { n + needs.count } else { n }
        }
        #expect(reserved > 0)
        #expect(swarm.snapshot(of: Self.id)?.isOwner == true)
    }
}

extension SwarmHostilePeerTests {
    /// A replica merged a delta's child links with a scan of the links it held per link: one
    /// message of 100,000 links held the loop for minutes (SWIM then declares the node dead).
    @Test func aDeltaWithManyChildLinksMergesInLinearTime() throws {
        var swarm = Self.node()
        let n = 20_000
        func links(_ range: Range<Int>) -> [ChildLink] {
            range.map { ChildLink(child: String(format: "%016llx", UInt64($0)), replicas: ["n1"]) }
        }
        let definition = SwarmDefinition(id: Self.id, draft: draft(2), replicas: ["n1", "n0"])
        let whole = SwarmMessage.replicate(ReplicaUpdate(id: Self.id, epoch: 1, baseVersion: 0, version: 1, state: .running,
                                                         definition: definition, records: [], children: links(0..<n), last: true))
        let delta = SwarmMessage.replicate(ReplicaUpdate(id: Self.id, epoch: 1, baseVersion: 1, version: 2, state: .running,
                                                         definition: nil, records: [], children: links(n / 2..<n + n), last: true))
        _ = swarm.request(try Swarm.decode(Swarm.encode(whole)), from: "n1", token: RequestToken(rawValue: 1), now: .zero)
        let clock = ContinuousClock()
        let started = clock.now
        _ = swarm.request(try Swarm.decode(Swarm.encode(delta)), from: "n1", token: RequestToken(rawValue: 2), now: .zero)
        let elapsed = clock.now - started
        #expect(swarm.swarms[Self.id]!.children.count == 2 * n)
        #expect(Set(swarm.swarms[Self.id]!.children).count == 2 * n)
        // Linear: well under a second even in a debug build; the scan took minutes.
        #expect(elapsed < .seconds(5), "merging \(n + n / 2) links took \(elapsed)")
    }
}

extension SwarmHostilePeerTests {
    /// A worker no longer scans its whole reservation queue after every input for owners that
    /// went down (a 1,000-task swarm queues thousands; the scan hashed each owner's name): none
    /// is queued from an owner down in its view, and an owner's are dropped when it goes down.
    /// Either way no fetch goes to an owner that is down, and no slot is held for one.
    @Test func reservationsOfAnOwnerThatIsDownAreNeitherQueuedNorFetched() throws {
        let needs = [TaskNeeds(memoryMB: 10, milliCPUs: 100)]
        func fetches(_ effects: [ProtocolEffect<Swarm>]) -> Int {
            effects.reduce(0) { n, e in if case .request(.fetch, to: "n1", _, _) = e { n + 1 } else { n } }
        }
        func view(_ status: MemberStatus, version: UInt64) -> MembershipEvent {
            .updated(PeerView(name: "n1", address: NodeAddress(host: "127.0.0.1", port: 1), status: status,
                              metadata: MemberMetadata(version: version, api: "", slots: 2, free: 2, memoryMB: 1000, freeMemoryMB: 1000)))
        }
        // Down first, then a reservation from it: not queued, no fetch.
        var swarm = Self.node()
        _ = swarm.membershipChanged(view(.dead, version: 2), now: .zero)
        #expect(fetches(swarm.receive(.reserve(Self.id, epoch: 1, replicas: ["n1"], needs: needs), from: "n1", now: .zero)) == 0)
        #expect(swarm.worker.reservations.isEmpty)
        #expect(swarm.workerFreeSlots == 2)

        // Queued while up (both slots busy fetching), then it goes down: dropped at once.
        swarm = Self.node()
        let sent = swarm.receive(.reserve(Self.id, epoch: 1, replicas: ["n1"], needs: needs + needs + needs), from: "n1", now: .zero)
        #expect(fetches(sent) == 2)
        #expect(swarm.worker.reservations.count == 1)
        _ = swarm.membershipChanged(view(.dead, version: 2), now: .zero)
        #expect(swarm.worker.reservations.isEmpty)
    }
}

extension SwarmHostilePeerTests {
    /// Review13 F8: a create whose replica set names one member several times, or more members
    /// than the mesh keeps copies on. Either made "start once the replica set stores it" count
    /// the owner's own copy as a majority. The decoder refuses a name given twice in any
    /// replica set; the owner refuses a set larger than its replication factor.
    @Test func aCreateWhoseReplicaSetCountsOneCopyAsSeveralIsRefused() throws {
        #expect(throws: WireError.self) { try Self.replicate(version: 1, replicas: ["n0", "n0", "n0"]) }
        #expect(throws: WireError.self) {
            try Swarm.decode(Swarm.encode(.create(SwarmDefinition(id: Self.id, draft: draft(2), replicas: ["n0", "n1", "n0"]))))
        }
        // Every message that carries a replica set: an adoption too.
        #expect(throws: WireError.self) { try Swarm.decode(Swarm.encode(.adopt(Self.id, epoch: 1, replicas: ["n1", "n1"], runs: []))) }
        #expect(throws: Never.self) { try Swarm.decode(Swarm.encode(.adopt(Self.id, epoch: 1, replicas: ["n1", "n2"], runs: []))) }
        var swarm = Self.node()
        let tooMany = try Swarm.decode(Swarm.encode(.create(SwarmDefinition(id: Self.id, draft: draft(2),
                                                                            replicas: ["n0", "n1", "n2", "n3"]))))
        let effects = swarm.request(tooMany, from: "n1", token: RequestToken(rawValue: 1), now: .zero)
        #expect(effects.contains { if case .respond(.refused, _) = $0 { true } else { false } })
        #expect(!effects.contains { if case .perform(.store) = $0 { true } else { false } })
        #expect(swarm.snapshot(of: Self.id) == nil)
        // The honest sets still go through: R members, and fewer (a view that lags).
        for (i, replicas) in [["n0", "n1", "n2"], ["n0"]].enumerated() {
            let id = "0badc0de0badc0d\(i)"
            let honest = try Swarm.decode(Swarm.encode(.create(SwarmDefinition(id: id, draft: draft(2), replicas: replicas))))
            _ = swarm.request(honest, from: "n1", token: RequestToken(rawValue: UInt64(2 + i)), now: .zero)
            #expect(swarm.snapshot(of: id)?.isOwner == true, "\(replicas)")
        }
    }
}
