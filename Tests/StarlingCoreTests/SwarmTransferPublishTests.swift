import Testing
@testable import StarlingCore

/// A whole-swarm transfer in several chunks: a replica shows the finishes (its events stream's
/// visible mark) only once the last chunk is in. After chunk 0 it published the highest number
/// in that chunk while lower-numbered finishes were still on their way, and a stream that moved
/// past them never showed them (review of the event-id merge).
@Suite struct SwarmTransferPublishTests {
    @Test func aReplicaPublishesAChunkedTransferOnlyAtItsLastChunk() {
        var replica = Swarm(settings: SwarmSettings(slots: 2, memoryMB: 1000), myName: "n1", seed: 1, now: .zero)
        for name in ["n0", "n1", "n2"] {
            let view = PeerView(name: name, address: NodeAddress(host: "127.0.0.1", port: 1), status: .alive,
                                metadata: MemberMetadata(version: 1, api: "", slots: 2, free: 2, memoryMB: 1000, freeMemoryMB: 1000))
            _ = replica.membershipChanged(.updated(view), now: .zero)
        }
        let definition = SwarmDefinition(id: "00000000000000cc", draft: draft(10), replicas: ["n0", "n1", "n2"])
        func done(_ seq: UInt32) -> TaskRecord { TaskRecord(state: .succeeded, attempt: 1, node: "n2", result: Array("ok".utf8), finishSeq: seq) }
        // Chunk 0 carries the finishes numbered 6...10; chunk 1 those numbered 1...5.
        let first = ReplicaUpdate(id: definition.id, epoch: 1, baseVersion: 7, version: 7, state: .running, definition: definition,
                                  records: (5..<10).map { IndexedRecord(index: UInt32($0), record: done(UInt32($0) + 1)) }, children: [], last: false)
        let second = ReplicaUpdate(id: definition.id, epoch: 1, baseVersion: 7, version: 7, state: .running, definition: nil,
                                   records: (0..<5).map { IndexedRecord(index: UInt32($0), record: done(UInt32($0) + 1)) }, children: [], last: true)
        func marks(_ effects: [ProtocolEffect<Swarm>]) -> [UInt32] {
            effects.compactMap { if case .perform(.store(.visible(_, let upTo))) = $0 { upTo } else { nil } }
        }
        #expect(marks(replica.request(.replicate(first), from: "n0", token: RequestToken(rawValue: 1), now: .zero)) == [])
        // Review10 M1: a change the owner made after the transfer, arriving before the last
        // chunk (a link refused the chunks that fit no more): applied, it made the copy look
        // whole and showed everything up to its number, past the numbers chunk 1 brings. It is
        // refused (the owner sends the whole again) and shows nothing.
        let delta = ReplicaUpdate(id: definition.id, epoch: 1, baseVersion: 7, version: 8, state: .running, definition: nil,
                                  records: [], children: [], last: true)
        let refused = replica.request(.replicate(delta), from: "n0", token: RequestToken(rawValue: 3), now: .zero)
        #expect(marks(refused) == [])
        #expect(refused.contains { if case .respond(.replicated(_, 7, .needFull), _) = $0 { true } else { false } }, "\(refused)")
        #expect(marks(replica.request(.replicate(second), from: "n0", token: RequestToken(rawValue: 2), now: .zero)) == [10])
        // Once whole, the next change applies.
        let after = replica.request(.replicate(delta), from: "n0", token: RequestToken(rawValue: 4), now: .zero)
        #expect(after.contains { if case .respond(.replicated(_, 8, .applied), _) = $0 { true } else { false } }, "\(after)")
    }
}
