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

    /// Whether `name` is among the first R + 2 of the session's preference list over `present`.
    static func prefers(_ id: String, _ name: String) -> Bool {
        SessionLivePlacement.ring(for: present.map(\.placement)).preferenceList(id, count: span).contains(name)
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
        let present = (0..<20).map { Self.member("n\($0)", alive: $0 % 4 != 1) }
        let limit = SessionForwarder(logger: .init(label: "test")).maxHolders
        for i in 0..<50 {
            let list = Self.holders("s\(i)", recordedOwner: "n5", present: present)
            #expect(list.first == Self.member("n5").api)
            #expect(list.count <= limit, "\(list.count) holders, \(limit) asked")
            #expect(!list.contains(Self.member("n0").api), "the node asked itself")
            #expect(Set(list).count == list.count)
            let suspects = present.filter { !$0.alive }.map(\.api)
            #expect(list.filter(suspects.contains).count <= Self.span + 1)
        }
    }
}
