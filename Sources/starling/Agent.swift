import ArgumentParser
import Foundation

struct AgentCommands: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "agent",
        abstract: "Run, read, stop and read the logs of hosted agents on the mesh.",
        subcommands: [AgentRun.self, AgentShow.self, AgentStop.self, AgentLogs.self])
}

struct AgentRun: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run", abstract: "Start an agent from an AgentSpec file; prints its id, then follows its state until it ends.",
        discussion: "Exit status: 0 when the agent ends done, 1 when it fails or is stopped.")
    @OptionGroup var api: APIOptions
    @Argument(help: "An AgentSpec (JSON): {\"id\"?, \"brain\": Task, \"policy\"?, \"model\"?: {\"baseURL\", \"secret\"}}.")
    var file: String
    @Flag(help: "Print the answers as JSON.")
    var json = false
    @Flag(help: "Print the id and return without following the agent.")
    var detach = false

    func run() async throws {
        let spec: Data
        do { spec = try Data(contentsOf: URL(fileURLWithPath: file)) } catch { throw ValidationError("cannot read \(file): \(error)") }
        guard (try? JSONSerialization.jsonObject(with: spec)) is [String: Any] else { throw ValidationError("\(file) is not a JSON object") }
        let created = try await HTTPClient.request("POST", api.address, path: "/v1/agents", body: [UInt8](spec))
        let id = SessionClient.object(created)["id"] as? String ?? ""
        if json { print(SessionClient.pretty(created)) } else { print(id) }
        guard !detach else { return }
        var last = ""
        while true {
            let answer = try await HTTPClient.request("GET", api.address, path: "/v1/agents/\(try SessionClient.checkedID(id))", body: nil)
            let agent = SessionClient.object(answer)
            let state = agent["state"] as? String ?? "?"
            let line = "\(state) on \(agent["owner"] ?? "?") (restarts \(agent["restarts"] ?? 0), model calls \(agent["modelCalls"] ?? 0))"
            if line != last {
                if json { print(SessionClient.pretty(answer)) } else { FileHandle.standardError.write(Data((line + "\n").utf8)) }
                last = line
            }
            switch state {
            case "done":
                // The brain's answer: the tail of its stdout.
                if !json, let output = agent["output"] as? String, !output.isEmpty {
                    print(output, terminator: output.hasSuffix("\n") ? "" : "\n")
                }
                return
            case "failed", "stopped": throw ExitCode(1)
            default: try await Task.sleep(for: .milliseconds(500))
            }
        }
    }
}

struct AgentShow: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "show", abstract: "An agent's state, owner, restarts and model calls.")
    @OptionGroup var api: APIOptions
    @Argument(help: "The agent's id.")
    var id: String
    @Flag(help: "Print the answer as JSON.")
    var json = false

    func run() async throws {
        let answer = try await HTTPClient.request("GET", api.address, path: "/v1/agents/\(try SessionClient.checkedID(id))", body: nil)
        if json { print(SessionClient.pretty(answer)); return }
        let a = SessionClient.object(answer)
        print("\(a["id"] ?? id): \(a["state"] ?? "?") on \(a["owner"] ?? "?"), restarts \(a["restarts"] ?? 0), model calls \(a["modelCalls"] ?? 0) (\(a["modelCallsReplayed"] ?? 0) replayed), exit code \(a["exitCode"].flatMap { $0 is NSNull ? nil : "\($0)" } ?? "none")")
    }
}

struct AgentStop: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "stop", abstract: "Stop an agent's brain; its session is kept.")
    @OptionGroup var api: APIOptions
    @Argument(help: "The agent's id.")
    var id: String

    func run() async throws {
        let answer = try await HTTPClient.request("DELETE", api.address, path: "/v1/agents/\(try SessionClient.checkedID(id))", body: nil)
        print(SessionClient.object(answer)["state"] as? String ?? "stopped")
    }
}

struct AgentLogs: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "logs", abstract: "The brain's stderr so far.")
    @OptionGroup var api: APIOptions
    @Argument(help: "The agent's id.")
    var id: String
    @Flag(help: "Keep printing what the brain writes until the agent ends.")
    var follow = false

    func run() async throws {
        let id = try SessionClient.checkedID(id)
        var printed = 0
        while true {
            let text = try await HTTPClient.request("GET", api.address, path: "/v1/agents/\(id)/logs", body: nil)
            if text.count > printed {
                FileHandle.standardOutput.write(Data(text[printed...]))
                printed = text.count
            } else if text.count < printed {
                printed = 0  // another owner: its log starts over
            }
            guard follow else { return }
            let state = SessionClient.object(try await HTTPClient.request("GET", api.address, path: "/v1/agents/\(id)", body: nil))["state"] as? String
            if state == "done" || state == "failed" || state == "stopped" { return }
            try await Task.sleep(for: .seconds(1))
        }
    }
}
