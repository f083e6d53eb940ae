import ArgumentParser
import Foundation
import StarlingRuntime

/// Options every client command shares: where to find a node.
struct APIOptions: ParsableArguments {
    @Option(help: "A node's API address HOST:PORT (default: $STARLING_API, else 127.0.0.1:8400).")
    var api: String?

    var address: String { api ?? ProcessInfo.processInfo.environment["STARLING_API"] ?? "127.0.0.1:8400" }
}

struct Members: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List the members as one node sees them.")

    @OptionGroup var api: APIOptions

    @Flag(help: "Print the JSON answer.")
    var json = false

    func run() async throws {
        let body = try await HTTPClient.get(api.address, path: "/v1/members")
        if json {
            print(String(decoding: body, as: UTF8.self))
            return
        }
        let list = try JSONDecoder().decode(MembersJSON.self, from: Data(body))
        let rows = [["NAME", "STATUS", "GOSSIP", "API", "INC", "SLOTS"]] + list.members.map {
            [$0.name, $0.status, $0.gossip, $0.api, String($0.incarnation), "\($0.capacity.free)/\($0.capacity.slots)"]
        }
        let widths = (0..<6).map { c in rows.map { $0[c].count }.max()! }
        for r in rows {
            print(r.enumerated().map { $1.padding(toLength: widths[$0], withPad: " ", startingAt: 0) }.joined(separator: "  "))
        }
    }
}
