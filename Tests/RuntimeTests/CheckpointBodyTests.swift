import Foundation
import Testing
@testable import StarlingRuntime

/// A checkpoint body's state is taken as sent, never re-encoded (CheckpointBody).
@Suite struct CheckpointBodyTests {
    func state(_ text: String) -> String? { CheckpointBody.state(Array(text.utf8)).map { String(decoding: $0, as: UTF8.self) } }

    @Test func theStateIsTheValueAsSent() {
        #expect(state(#"{"state":{"b":1,"a":[1,2,"}"]}}"#) == #"{"b":1,"a":[1,2,"}"]}"#)
        #expect(state(" \n{ \"state\" :\t[1, 2] \r\n}\n ") == "[1, 2]")
        #expect(state(#"{"state":"x"}"#) == #""x""#)
        #expect(state(#"{"state":null}"#) == "null")
        #expect(state(#"{"state":1.5e3}"#) == "1.5e3")
    }

    @Test func aBodyItDoesNotCoverGoesTheOldWay() {
        #expect(state(#"{"state":1,"other":2}"#) == nil)
        // A repeated key: the slice after the first is no JSON value (review: it was stored
        // as `1,"state":2` and read back as null).
        #expect(state(#"{"state":1,"state":2}"#) == nil)
        #expect(state(#"{"state":{"a":1},"state":{"b":2}}"#) == nil)
        #expect(state(#"{"other":2,"state":1}"#) == nil)
        #expect(state(#"{"\u0073tate":1}"#) == nil)
        #expect(state(#"{"state":}"#) == nil)
        #expect(state(#"{"state":1"#) == nil)
        #expect(state(#"[{"state":1}]"#) == nil)
        #expect(state(#"{"stat":1}"#) == nil)
        #expect(state("") == nil)
    }
}
