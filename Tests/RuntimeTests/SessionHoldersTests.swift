import Testing
@testable import StarlingCore
@testable import StarlingRuntime

/// Which nodes a session request is forwarded to (`SessionService.holders`), above all which
/// suspect members are asked (review13 F2).
@Suite("Session holders: whom a forwarded request asks")
struct SessionHoldersTests {
    static let span = SessionLimits.replicas + 2

    static func member(_ name: String, alive: Bool = true) -> SessionService.HolderCandidate {
        .init(name: name, alive: alive, api: "127.0.0.1:\(7000 + Int(name.dropFirst())!)", slots: 2, sessions: 0)
    }

    /// Nine members, `n8` suspect, seen from n0.
    static let present = (0..<8).map { member("n\($0)") } + [member("n8", alive: false)]

    static func holders(_ id: String, recordedOwner: String? = nil, present: [SessionService.HolderCandidate] = present) -> [String] {
        SessionService.holders(of: id, present: present, recordedOwner: recordedOwner, nodeName: "n0", epsilon: 0.25,
                               ring: { SessionLivePlacement.ring(for: $0) })
    }

    /// Whether `name` is among the first R + 2 of the session's room-first order or preference
    /// list over `present`: where placement may have put it.
    static func prefers(_ id: String, _ name: String) -> Bool {
        let candidates = present.map(\.placement)
        let ring = SessionLivePlacement.ring(for: candidates)
        let roomFirst = SessionLivePlacement(ring: ring, candidates: candidates, epsilon: 0.25).owners(for: id).prefix(span)
        return roomFirst.contains(name) || ring.preferenceList(id, count: span).contains(name)
    }

    @Test func aSuspectThatCannotHoldAnUnknownSessionIsNotAsked() throws {
        let suspect = Self.member("n8", alive: false).api
        let far = try #require((0..<200).map { "s\($0)" }.first { !Self.prefers($0, "n8") }, "every id prefers n8")
        // A session nobody recorded here: only where it may be. A suspect that hangs would
        // otherwise hold the request for a forwarding deadline and turn its 404 into 503.
        #expect(!Self.holders(far).contains(suspect), "n8 is asked about \(far), which it cannot hold")
        // A session recorded here (its owner alive): every suspect is asked too, last.
        let known = Self.holders(far, recordedOwner: "n3")
        #expect(known.first == Self.member("n3").api)
        #expect(known.last == suspect, "\(known)")
        let near = try #require((0..<200).map { "s\($0)" }.first { Self.prefers($0, "n8") })
        #expect(Self.holders(near).last == suspect, "n8 may hold \(near), yet is not asked")
    }

    @Test func aSuspectRecordedOwnerComesFirstAndNoHolderIsCutOff() throws {
        // Many members, several suspect: the list stays within what the forwarder asks, and the
        // suspect owner recorded here is asked first.
        // Loads differ, so that the room-first order and the plain preference list differ and
        // the list is as long as it gets.
        let present = (0..<20).map { i in
            var m = Self.member("n\(i)", alive: i % 4 != 1)
            m.sessions = (i % 3) * 40
            return m
        }
        let limit = SessionForwarder(logger: .init(label: "test")).maxHolders
        let presentRing = SessionLivePlacement.ring(for: present.map(\.placement))
        var longest = 0
        for i in 0..<50 {
            let id = "s\(i)"
            let list = Self.holders(id, recordedOwner: "n5", present: present)
            longest = max(longest, list.count)
            #expect(list.first == Self.member("n5").api)
            #expect(list.count <= limit, "\(list.count) holders, \(limit) asked")
            #expect(!list.contains(Self.member("n0").api), "the node asked itself")
            #expect(Set(list).count == list.count)
            let suspects = present.filter { !$0.alive }.map(\.api)
            #expect(list.filter(suspects.contains).count <= Self.span + 1)
            // Every suspect that may hold the session is asked, whatever else is.
            for name in presentRing.preferenceList(id, count: Self.span) {
                guard let m = present.first(where: { $0.name == name }), !m.alive else { continue }
                #expect(list.contains(m.api), "\(name), suspect and in \(id)'s preference list, is not asked")
            }
        }
        #expect(longest > 2 * Self.span, "the lists were never long: \(longest)")
    }
}
