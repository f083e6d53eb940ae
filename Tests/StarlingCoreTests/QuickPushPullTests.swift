import Testing
@testable import StarlingCore

/// The quick push-pulls after a revival (`Membership.memberCameBack`): soon after a member comes
/// back from dead, and bounded however often members come back.
@Suite("Quick push-pulls after a revival")
struct QuickPushPullTests {
    /// Runs `me` (300 peers, `lan`) for `seconds`, reviving one peer (dead, then alive one
    /// incarnation up) every `revivalEvery` seconds from second 1, and returns the times (ms) of
    /// the push-pulls it started towards live members.
    static func pushPullTimes(seconds: Int64, revivalEvery: Int64?) -> [Int64] {
        var m = nodeWithPeers(300)
        var times: [Int64] = []
        var incarnations: [Int: UInt64] = [:]
        var revived = 0
        for t in stride(from: Int64(0), through: seconds * 1000, by: 100) {
            if let every = revivalEvery, t >= 1000, (t - 1000) % (every * 1000) == 0 {
                let k = revived % 300 + 1
                revived += 1
                let inc = incarnations[k, default: 1]
                incarnations[k] = inc + 1
                _ = m.receive(Packet([.dead(name: "p\(k)", incarnation: inc, from: "p\(k % 300 + 1)")]), from: addr(1), now: at(ms: t))
                _ = m.receive(Packet([alive("p\(k)", UInt16(1000 + k), inc: inc + 1)]), from: addr(1), now: at(ms: t))
            }
            let out = m.tick(now: at(ms: t))
            for (_, to) in out.pushPulls where to.port > 1000 { times.append(t) }
        }
        return times
    }

    @Test func aRevivalBringsAPushPullWithinAReconnectInterval() {
        let quiet = Self.pushPullTimes(seconds: 60, revivalEvery: nil)
        let revived = Self.pushPullTimes(seconds: 60, revivalEvery: 1000)  // one revival, at 1 s
        // Scaled interval at 301 members: 150 s, first one staggered over it: few or none in 60 s.
        #expect(quiet.count <= 1, "\(quiet)")
        let reconnectMs = MembershipSettings.lan.reconnectInterval.nanoseconds / 1_000_000
        #expect(revived.contains { $0 >= 1000 && $0 <= 1000 + reconnectMs }, "\(revived)")
        #expect(revived.filter { $0 >= 1000 }.count >= Membership.quickPushPulls, "\(revived)")
    }

    /// A revival every second for ten minutes (a churning mesh, or a key holder forging deaths
    /// so that members refute) must not make the node push-pull every reconnect interval: before
    /// the bound every revival pulled the next push-pull forward (about 16 a minute here).
    @Test func revivalsEverySecondCostAtMostTheArmedPushPullsPerScaledInterval() {
        let seconds: Int64 = 600
        let times = Self.pushPullTimes(seconds: seconds, revivalEvery: 1)
        let scaledMs = MembershipSettings.lan.pushPullInterval(members: 301).nanoseconds / 1_000_000
        let intervals = Int(seconds * 1000 / scaledMs) + 1
        #expect(times.count <= (Membership.quickPushPulls + 1) * intervals, "\(times.count) push-pulls: \(times)")
        #expect(times.count >= Membership.quickPushPulls, "armed at least once")
    }
}
