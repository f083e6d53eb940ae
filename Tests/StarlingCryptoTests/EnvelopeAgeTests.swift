import Testing
@testable import StarlingCrypto

/// The sender's timestamp is peer data: any 64-bit value must give a defined answer, not a trap
/// (`abs(Int64.min)` trapped when the two clocks were 2⁶³ ms apart).
@Suite("Envelope: replay window on extreme timestamps")
struct EnvelopeAgeTests {
    let key = ClusterKey.generate()

    func open(sentAt: UInt64, now: UInt64) throws(Envelope.OpenError) -> [UInt8] {
        let ring = try! Keyring(keys: [key])
        return try Envelope.open(Envelope.seal([1, 2, 3], kind: .gossip, key: key, sentAtMs: sentAt),
                                 kind: .gossip, keyring: ring, nowMs: now, maxAgeMs: 30_000)
    }

    @Test(arguments: [
        (UInt64(0), UInt64(1) << 63),             // the old trap: a difference of exactly 2⁶³
        (UInt64(1) << 63, UInt64(0)),
        (UInt64.max, UInt64(0)),                  // wrapped to an age of 1 ms before: accepted
        (UInt64(0), UInt64.max),
        (UInt64.max, UInt64(1_700_000_000_000)),
        (UInt64(0), UInt64(1_700_000_000_000)),
    ])
    func extremeTimestampsAreStaleNotATrap(_ times: (sentAt: UInt64, now: UInt64)) {
        #expect(throws: Envelope.OpenError.self) { try open(sentAt: times.sentAt, now: times.now) }
        #expect(!Envelope.isFresh(sentAtMs: times.sentAt, nowMs: times.now, maxAgeMs: 30_000))
    }

    @Test func theWindowHoldsBothWaysAtItsEdges() throws {
        let now: UInt64 = 1_700_000_000_000
        #expect(try open(sentAt: now - 30_000, now: now) == [1, 2, 3])
        #expect(try open(sentAt: now + 30_000, now: now) == [1, 2, 3])
        #expect(throws: Envelope.OpenError.stale(ageMs: 30_001)) { try open(sentAt: now - 30_001, now: now) }
        #expect(throws: Envelope.OpenError.stale(ageMs: -30_001)) { try open(sentAt: now + 30_001, now: now) }
        #expect(Envelope.isFresh(sentAtMs: .max, nowMs: .max, maxAgeMs: 0))
        #expect(!Envelope.isFresh(sentAtMs: 5, nowMs: 5, maxAgeMs: -1))
    }
}
