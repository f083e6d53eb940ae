import ArgumentParser
import Foundation

struct SessionCommands: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "session",
        abstract: "Create, checkpoint, act in, read and delete agent sessions on the mesh.",
        subcommands: [SessionCreate.self, SessionCheckpoint.self, SessionAct.self, SessionShow.self, SessionDelete.self, SessionBench.self])
}

enum SessionClient {
    static func checkedID(_ id: String) throws -> String {
        let ok = !id.isEmpty && id.utf8.count <= 64 && id.utf8.allSatisfy {
            ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x41 && $0 <= 0x5A) || ($0 >= 0x61 && $0 <= 0x7A) || $0 == 0x2E || $0 == 0x5F || $0 == 0x2D
        }
        guard ok else { throw ValidationError("a session id is 1 to 64 of [A-Za-z0-9._-]") }
        return id
    }

    static func pretty(_ bytes: [UInt8]) -> String {
        guard let object = try? JSONSerialization.jsonObject(with: Data(bytes), options: [.fragmentsAllowed]),
              let data = try? JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes, .fragmentsAllowed])
        else { return String(decoding: bytes, as: UTF8.self) }
        return String(decoding: data, as: UTF8.self)
    }

    static func object(_ bytes: [UInt8]) -> [String: Any] {
        (try? JSONSerialization.jsonObject(with: Data(bytes))) as? [String: Any] ?? [:]
    }
}

struct SessionCreate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "create", abstract: "Create a session; prints its id.")
    @OptionGroup var api: APIOptions
    @Option(help: "The session's id (default: 16 random hex digits).")
    var id: String?
    @Flag(help: "Print the answer as JSON.")
    var json = false

    func run() async throws {
        var body: [String: Any] = [:]
        if let id { body["id"] = try SessionClient.checkedID(id) }
        let answer = try await HTTPClient.request("POST", api.address, path: "/v1/sessions", body: [UInt8](try JSONSerialization.data(withJSONObject: body)))
        if json { print(SessionClient.pretty(answer)) } else { print(SessionClient.object(answer)["id"] as? String ?? "") }
    }
}

struct SessionCheckpoint: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "checkpoint", abstract: "Record a state (any JSON) once a majority of the session's replicas stored it.")
    @OptionGroup var api: APIOptions
    @Argument(help: "The session's id.")
    var id: String
    @Option(help: "The state: JSON, or @FILE to read it from a file.")
    var state: String
    @Flag(help: "Print the answer as JSON.")
    var json = false

    func run() async throws {
        let text = state.hasPrefix("@") ? try String(contentsOfFile: String(state.dropFirst()), encoding: .utf8) : state
        guard let value = try? JSONSerialization.jsonObject(with: Data(text.utf8), options: [.fragmentsAllowed]) else {
            throw ValidationError("--state is not JSON")
        }
        let body = try JSONSerialization.data(withJSONObject: ["state": value], options: [.fragmentsAllowed])
        let answer = try await HTTPClient.request("POST", api.address, path: "/v1/sessions/\(try SessionClient.checkedID(id))/checkpoint", body: [UInt8](body))
        if json { print(SessionClient.pretty(answer)) } else {
            let o = SessionClient.object(answer)
            print("seq \(o["seq"] ?? "?") hash \(o["hash"] ?? "?")")
        }
    }
}

struct SessionAct: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "act",
        abstract: "Run an effect (a sandboxed task) once per key; the same key again returns its recorded result.",
        discussion: "The task sees STARLING_EFFECT_KEY (SESSION/KEY) in its environment. Exit status: the task's, or 1 when its outcome is unknown.")
    @OptionGroup var api: APIOptions
    @Argument(help: "The session's id.")
    var id: String
    @Option(help: "The effect's idempotency key.")
    var key: String
    @Option(help: "none (default) or host.")
    var net: String?
    @Flag(help: "Print the answer as JSON.")
    var json = false
    @Argument(parsing: .postTerminator, help: "The task's argv.")
    var argv: [String]

    func run() async throws {
        guard !argv.isEmpty else { throw ValidationError("give the task's argv after --") }
        var body: [String: Any] = ["key": key, "argv": argv]
        if let net { body["net"] = net }
        let answer = try await HTTPClient.request("POST", api.address, path: "/v1/sessions/\(try SessionClient.checkedID(id))/actions",
                                                  body: [UInt8](try JSONSerialization.data(withJSONObject: body)))
        if json { print(SessionClient.pretty(answer)); return }
        let o = SessionClient.object(answer)
        let result = o["result"] as? [String: Any] ?? [:]
        if let out = result["stdout"] as? String { FileHandle.standardOutput.write(Data(out.utf8)) }
        if let err = result["stderr"] as? String { FileHandle.standardError.write(Data(err.utf8)) }
        if (o["replayed"] as? Bool) == true { FileHandle.standardError.write(Data("(replayed: recorded earlier, not run again)\n".utf8)) }
        let code = result["exitCode"] as? Int ?? 1
        if code != 0 { throw ExitCode(Int32(clamping: code)) }
    }
}

struct SessionShow: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "show", abstract: "A session's latest state, seq, hash, signer and journal.")
    @OptionGroup var api: APIOptions
    @Argument(help: "The session's id.")
    var id: String
    @Option(help: "Only journal entries after this seq.")
    var since: UInt64?
    @Flag(help: "Print the Session as JSON.")
    var json = false

    func run() async throws {
        let query = since.map { "?since=\($0)" } ?? ""
        let answer = try await HTTPClient.get(api.address, path: "/v1/sessions/\(try SessionClient.checkedID(id))\(query)")
        if json { print(SessionClient.pretty(answer)); return }
        let o = SessionClient.object(answer)
        print("session \(o["id"] ?? id): owner \(o["owner"] ?? "?"), seq \(o["seq"] ?? "?"), epoch \(o["epoch"] ?? "?"), signer \(o["signer"] ?? "?")")
        print("hash \(o["hash"] ?? "?")")
        if let state = o["state"], let data = try? JSONSerialization.data(withJSONObject: state, options: [.fragmentsAllowed, .sortedKeys]) {
            print("state \(String(decoding: data, as: UTF8.self))")
        }
        for entry in o["journal"] as? [[String: Any]] ?? [] {
            let result = entry["result"] as? [String: Any]
            print("  \(entry["seq"] ?? "?") \(entry["key"] ?? "?") \(entry["outcome"] ?? "?")\(result.map { " exit \($0["exitCode"] ?? "null")" } ?? "")")
        }
    }
}

struct SessionDelete: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "delete", abstract: "Delete a session.")
    @OptionGroup var api: APIOptions
    @Argument(help: "The session's id.")
    var id: String

    func run() async throws {
        _ = try await HTTPClient.request("DELETE", api.address, path: "/v1/sessions/\(try SessionClient.checkedID(id))", body: nil)
        print("deleted \(id)")
    }
}
