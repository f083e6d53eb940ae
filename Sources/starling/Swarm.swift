import ArgumentParser
import Foundation
import StarlingRuntime
import StarlingSandbox

struct SwarmCommands: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "swarm",
        abstract: "Run, read, cancel and list swarms of sandboxed tasks on the mesh.",
        subcommands: [SwarmRun.self, SwarmShow.self, SwarmCancel.self, SwarmList.self])
}

struct SwarmRun: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Submit a swarm (a SwarmSpec JSON file, - for stdin), follow it, and print its results.",
        discussion: """
            Progress is one live line on a terminal (done, failed, running, rate, ETA) and plain \
            lines otherwise. The exit status is 0 when every task succeeded, 1 when a task failed \
            or the swarm was cancelled. Ctrl-C stops following; the swarm keeps running.
            """)

    @OptionGroup var api: APIOptions

    @Argument(help: "The SwarmSpec JSON file, or - for stdin.")
    var file: String

    @Flag(help: "Print the final SwarmStatus (every task) as JSON, and no progress on stdout.")
    var json = false

    @Flag(help: "No progress; only the results.")
    var quiet = false

    func run() async throws {
        let body = try SwarmClient.readSpec(file)
        let created = try JSONDecoder().decode(SwarmCreatedJSON.self, from: Data(
            try await HTTPClient.request("POST", api.address, path: "/v1/swarms", body: body)))
        let progress = ProgressReporter(enabled: !quiet, toStdout: !json)
        progress.note("swarm \(created.id) submitted\(created.owner.map { " (owner \($0))" } ?? "")")
        let counts = try await SwarmClient.follow(created.id, api: api.address, progress: progress)
        let status = try await SwarmClient.fullStatus(created.id, api: api.address, counts: counts)
        if json {
            print(try SwarmClient.prettyJSON(status))
        } else {
            SwarmClient.printResults(status)
        }
        if status.failed > 0 || status.cancelled > 0 || status.state == "cancelled" { throw ExitCode(1) }
    }
}

struct SwarmShow: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "show", abstract: "A swarm's state and every task's result.")

    @OptionGroup var api: APIOptions

    @Argument(help: "The swarm's id.")
    var id: String

    @Flag(help: "Print the SwarmStatus (every task) as JSON.")
    var json = false

    func run() async throws {
        let status = try await SwarmClient.fullStatus(id, api: api.address, counts: nil)
        if json { print(try SwarmClient.prettyJSON(status)) } else { SwarmClient.printResults(status) }
    }
}

struct SwarmCancel: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cancel", abstract: "Cancel a swarm: running tasks are killed, pending ones never start.")

    @OptionGroup var api: APIOptions

    @Argument(help: "The swarm's id.")
    var id: String

    func run() async throws {
        _ = try await HTTPClient.request("DELETE", api.address, path: "/v1/swarms/\(try SwarmClient.checkedID(id))", body: nil)
        print("cancelled \(id)")
    }
}

struct SwarmList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "Swarms of the mesh (every live node's, merged), newest first.")

    @OptionGroup var api: APIOptions

    @Flag(help: "Print the JSON answer.")
    var json = false

    @Option(help: "At most this many swarms (1 to 1000).")
    var limit = 100

    func validate() throws {
        guard (1...1000).contains(limit) else { throw ValidationError("--limit must be 1 to 1000") }
    }

    func run() async throws {
        let body = try await HTTPClient.get(api.address, path: "/v1/swarms?limit=\(limit)")
        if json {
            print(String(decoding: body, as: UTF8.self))
            return
        }
        let list = try JSONDecoder().decode(SwarmListJSON.self, from: Data(body))
        let formatter = ISO8601DateFormatter()
        SwarmClient.printTable([["ID", "STATE", "TOTAL", "SUCCEEDED", "FAILED", "CREATED"]] + list.swarms.map {
            [$0.id, $0.state, String($0.total), String($0.succeeded), String($0.failed),
             formatter.string(from: Date(timeIntervalSince1970: Double($0.createdAtMs) / 1000))]
        })
        if list.partial == true {
            // On stderr: the table stays the list, and a script still sees what was found.
            FileHandle.standardError.write(Data("partial list: no answer from \((list.unanswered ?? []).joined(separator: ", "))\n".utf8))
        }
    }
}

/// What the swarm commands share: following, paging, printing.
enum SwarmClient {
    /// A SwarmSpec file larger than this is refused before it is sent (the server's own bound
    /// is 96 MiB).
    static let maxSpecBytes = 96 << 20
    /// How often `follow` asks for the counts.
    static let pollInterval: Duration = .milliseconds(500)
    /// Consecutive failed polls tolerated (a node restarting, a busy machine) before giving up.
    static let maxPollFailures = 60

    static func readSpec(_ file: String) throws -> [UInt8] {
        let handle: FileHandle
        if file == "-" { handle = .standardInput } else {
            guard let h = FileHandle(forReadingAtPath: file) else { throw HTTPClient.Failure(description: "cannot read \(file)") }
            handle = h
        }
        let data = try handle.read(upToCount: maxSpecBytes + 1) ?? Data()
        guard data.count <= maxSpecBytes else { throw HTTPClient.Failure(description: "\(file) is larger than \(maxSpecBytes) bytes") }
        // Refuse what is not JSON here, with a clear message; the server checks the rest.
        guard (try? JSONSerialization.jsonObject(with: data)) is [String: Any] else {
            throw HTTPClient.Failure(description: "\(file) is not a JSON object (a SwarmSpec: {\"tasks\": [{\"argv\": [...]}]})")
        }
        return Array(data)
    }

    /// A swarm id as the server makes them, checked before it goes into a URL.
    static func checkedID(_ id: String) throws -> String {
        guard id.utf8.count == 16, id.allSatisfy({ $0.isHexDigit && !$0.isUppercase }) else {
            throw HTTPClient.Failure(description: "\(id.debugDescription) is not a swarm id (16 lowercase hex digits)")
        }
        return id
    }

    /// Polls the counts (`?tasks=false`: a small body however many tasks the swarm has) until
    /// the swarm is no longer running, reporting progress.
    static func follow(_ id: String, api: String, progress: ProgressReporter) async throws -> SwarmStatusJSON {
        var failures = 0
        while true {
            let status: SwarmStatusJSON
            do {
                status = try JSONDecoder().decode(SwarmStatusJSON.self, from: Data(
                    try await HTTPClient.get(api, path: "/v1/swarms/\(try checkedID(id))?tasks=false")))
                failures = 0
            } catch {
                failures += 1
                if failures >= maxPollFailures { throw error }
                try await Task.sleep(for: pollInterval)
                continue
            }
            progress.update(status)
            if status.state != "running" {
                progress.finish()
                return status
            }
            try await Task.sleep(for: pollInterval)
        }
    }

    /// The status with every task, read page by page.
    static func fullStatus(_ id: String, api: String, counts: SwarmStatusJSON?) async throws -> SwarmStatusJSON {
        var offset = 0
        var tasks: [SwarmTaskJSON] = []
        var last: SwarmStatusJSON? = counts
        while true {
            let page = try JSONDecoder().decode(SwarmStatusJSON.self, from: Data(
                try await HTTPClient.get(api, path: "/v1/swarms/\(try checkedID(id))?offset=\(offset)&limit=1000")))
            tasks += page.tasks ?? []
            last = page
            guard let next = page.nextOffset, next > offset else { break }
            offset = next
        }
        guard var status = last else { throw HTTPClient.Failure(description: "no answer for swarm \(id)") }
        status.tasks = tasks
        status.offset = nil
        status.nextOffset = nil
        return status
    }

    static func prettyJSON(_ status: SwarmStatusJSON) throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return String(decoding: try encoder.encode(status), as: UTF8.self)
    }

    /// One line per task (id, state, node, exit code, first line of stdout, or of stderr when
    /// stdout is empty), then the totals.
    static func printResults(_ status: SwarmStatusJSON) {
        let rows = (status.tasks ?? []).map { task -> [String] in
            let result = task.result
            let exit = result.map { r in r.exitCode.map(String.init) ?? r.signal.map { "sig\($0)" } ?? r.reason.rawValue } ?? "-"
            let first = result.map { r in firstLine(r.stdout.isEmpty ? r.stderr : r.stdout) } ?? ""
            return [task.id, task.state, result?.node ?? task.node ?? "-", exit, first]
        }
        printTable([["TASK", "STATE", "NODE", "EXIT", "OUTPUT"]] + rows)
        print("swarm \(status.id) \(status.state): \(status.succeeded) succeeded, \(status.failed) failed"
              + (status.cancelled > 0 ? ", \(status.cancelled) cancelled" : "") + " of \(status.total)")
    }

    /// The first line, at most 80 characters, with control characters shown as '?' (task output
    /// must not drive the terminal).
    static func firstLine(_ s: String) -> String {
        let line = s.split(separator: "\n", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init) ?? ""
        let clean = String(line.unicodeScalars.map { $0.properties.generalCategory == .control ? "?" : Character($0) })
        return clean.count > 80 ? String(clean.prefix(79)) + "…" : clean
    }

    static func printTable(_ rows: [[String]]) {
        guard let columns = rows.first?.count else { return }
        let widths = (0..<columns).map { c in rows.map { $0[c].count }.max() ?? 0 }
        for row in rows {
            let cells = row.enumerated().map { i, cell in i == columns - 1 ? cell : cell.padding(toLength: widths[i], withPad: " ", startingAt: 0) }
            print(cells.joined(separator: "  "))
        }
    }
}

/// Progress of a followed swarm: a live line redrawn in place on a terminal, plain lines (at
/// most one every few seconds, and only on change) otherwise.
final class ProgressReporter {
    private let enabled: Bool
    private let stream: FileHandle
    private let live: Bool
    private let started = ContinuousClock.now
    /// (time, finished) samples over the last few seconds, for the rate.
    private var samples: [(ContinuousClock.Instant, Int)] = []
    private var lastPlain: ContinuousClock.Instant? = nil
    private var lastLine = ""
    private var drewLive = false

    init(enabled: Bool, toStdout: Bool) {
        // With --json, stdout is the JSON's alone: progress goes to stderr, and only live.
        stream = toStdout ? FileHandle.standardOutput : FileHandle.standardError
        live = isatty(toStdout ? 1 : 2) == 1
        self.enabled = enabled && (toStdout || live)
    }

    func note(_ line: String) {
        guard enabled else { return }
        write(line + "\n")
    }

    func update(_ s: SwarmStatusJSON) {
        guard enabled else { return }
        let now = ContinuousClock.now
        let finished = s.succeeded + s.failed + s.cancelled
        samples.append((now, finished))
        samples.removeAll { now - $0.0 > .seconds(10) }
        var rate = 0.0
        if let first = samples.first, now - first.0 > .milliseconds(900) {
            rate = Double(finished - first.1) / Self.seconds(now - first.0)
        } else if now - started > .seconds(1) {
            rate = Double(finished) / Self.seconds(now - started)
        }
        let remaining = s.total - finished
        let eta = rate > 0 && remaining > 0 ? Self.duration(Double(remaining) / rate) : "-"
        let counts = "\(finished)/\(s.total) done, \(s.failed) failed, \(s.running) running, \(String(format: "%.1f", rate))/s, ETA \(eta)"
        if live {
            write("\r\u{1B}[2K" + Self.liveLine(finished: finished, total: s.total, counts: counts, columns: terminalColumns()))
            drewLive = true
        } else if counts != lastLine, lastPlain.map({ now - $0 >= .seconds(2) }) ?? true || s.state != "running" {
            write(counts + "\n")
            lastPlain = now
            lastLine = counts
        }
    }

    /// The live line, kept narrower than the terminal: a line that wraps leaves a copy of itself
    /// on every redraw (`\r` and erase-line reach back only to the start of the last row). The
    /// bar shrinks first (down to 10), then goes; the counts are cut last. `columns` 0 (unknown):
    /// an 80-column terminal.
    static func liveLine(finished: Int, total: Int, counts: String, columns: Int) -> String {
        let room = (columns > 0 ? columns : 80) - 1
        let width = min(24, room - counts.count - 3)
        guard width >= 10 else { return String(counts.prefix(max(0, room))) }
        let filled = total > 0 ? width * min(finished, total) / total : width
        return "[" + String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled) + "] " + counts
    }

    /// The width of the terminal progress is drawn on, read at every redraw (it may be resized).
    private func terminalColumns() -> Int {
        var size = winsize()
        let fd = stream.fileDescriptor
        guard withUnsafeMutablePointer(to: &size, { ioctl(fd, UInt(TIOCGWINSZ), $0) }) == 0 else { return 0 }
        return Int(size.ws_col)
    }

    func finish() {
        guard enabled, live, drewLive else { return }
        write("\n")
    }

    private func write(_ text: String) {
        stream.write(Data(text.utf8))
    }

    static func seconds(_ d: Duration) -> Double {
        Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
    }

    static func duration(_ seconds: Double) -> String {
        guard seconds.isFinite, seconds < 86_400 * 365 else { return "-" }
        let s = Int(seconds.rounded(.up))
        return s < 60 ? "\(s)s" : s < 3600 ? "\(s / 60)m\(s % 60)s" : "\(s / 3600)h\(s % 3600 / 60)m"
    }
}
