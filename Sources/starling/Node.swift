import ArgumentParser
import Foundation
import Glibc
import Logging
import Metrics
import Prometheus
import StarlingCore
import StarlingCrypto
import StarlingRuntime
import StarlingSandbox
import StarlingStore

struct Node: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a node in the foreground. SIGTERM or SIGINT: leave gracefully, then exit 0. SIGHUP: reload the key file.")

    @Option(help: "This node's name, unique in the mesh (1-64 bytes).")
    var name: String

    @Option(help: "HOST:PORT for UDP gossip and TCP node-to-node streams.")
    var gossip: String

    @Option(help: "HOST:PORT that other nodes should use to reach --gossip (NAT, containers).")
    var advertise: String?

    @Option(help: "HOST:PORT for the HTTP JSON API.")
    var api: String

    @Option(help: "Directory for the node's identity key and database.")
    var data: String

    @Option(name: .customLong("key-file"), help: "Cluster key file: base64 keys, one per line; the first encrypts.")
    var keyFile: String

    @Option(help: "Seeds to join through: HOST:PORT[,HOST:PORT...].")
    var join: String?

    @Option(help: "Sub-agents this node runs at once (default: number of cores).")
    var slots: Int?

    @Option(help: "Membership timing preset: lan, loopback (ten times faster, one machine) or memberlist (lan before the failure-detection sweep).")
    var preset: String = "lan"

    @Option(name: .customLong("reap-after"), help: "Seconds after which dead and left members are forgotten (default: 3600 for lan, 120 for loopback; at least 61).")
    var reapAfter: Int?

    @Option(name: .customLong("memory-mb"), help: "Memory (MiB) this node offers its tasks in all (default: three quarters of the machine's).")
    var memoryMB: Int?

    @Option(name: .customLong("warm"), help: "Warm sandboxes kept ready for tasks (default: --slots, at most 64; 0 for none).")
    var warm: Int?

    @Option(help: "Policy file (sandbox policy; see the README).")
    var policy: String?

    @Option(name: .customLong("secrets-file"), help: "Secrets file, NAME=VALUE lines, mode 0600.")
    var secretsFile: String?

    @Option(name: .customLong("store-sync"), help: "full (default): each store commit is on disk before anything it records is acknowledged, so it survives a power loss; normal: it survives a crash of this process but not of the machine (faster; see the README).")
    var storeSync: String = "full"
    @Option(name: .customLong("audit-head-interval"), help: "Seconds between sends of this node's audit-log head to the peers that witness it (default 10).")
    var auditHeadInterval: Double = 10

    @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warning, error or critical.")
    var logLevel: String = "info"

    @Option(name: .customLong("api-idle-timeout"), help: "Seconds after which an idle HTTP API connection is closed (default 60).")
    var apiIdleTimeout: Int = 60

    @Option(name: .customLong("api-max-connections"), help: "HTTP API connections held at once; past it the server stops accepting until one closes (default 8192).")
    var apiMaxConnections: Int = 8192

    @Option(name: .customLong("api-max-connections-per-source"), help: "HTTP API connections one address (an IPv6 /64) may hold at once; more are closed at once (default 128).")
    var apiMaxConnectionsPerSource: Int = 128

    @Option(name: .customLong("swarm-request-timeout-ms"), help: "Milliseconds a swarm request to another node waits for its answer (default 5000); a swarm's create and whole-swarm transfers get 1 ms more per task.")
    var swarmRequestTimeoutMs: Int = 5000

    @Option(name: .customLong("session-epsilon"), help: "Session placement's load bound: a node owns at most (1 + ε) × its share by slots (default 0.25).")
    var sessionEpsilon: Double = 0.25

    @Option(name: .customLong("session-move-after"), help: "Seconds a session must be idle before it moves to a node ahead of its owner in its preference list, e.g. one that joined (default 2).")
    var sessionMoveAfter: Double = 2

    @Option(name: .customLong("session-rebalance-after"), help: "Seconds a session must be idle before it leaves an owner over the load bound (default 30).")
    var sessionRebalanceAfter: Double = 30

    @Option(name: .customLong("session-moves"), help: "Session handoffs this node leads at once, at most (default 4; 0: never move sessions).")
    var sessionMoves: Int = 4

    @Option(name: .customLong("swarm-retention-hours"),
            help: "Hours a finished swarm stays in this node's store before it is deleted (default 168, a week; 0 keeps every swarm; at least 0.1).")
    var swarmRetentionHours: Double = 168

    @Option(name: .customLong("agent-poll-ms"),
            help: ArgumentHelp("Milliseconds between the agents' ownership polls, beside the pushes of takeovers and handoffs (default 200; tests set it long to see the pushes alone).",
                               visibility: .hidden))
    var agentPollMs: Int = 200

    func validate() throws {
        guard !name.isEmpty, name.utf8.count <= WireLimits.maxNameBytes else { throw ValidationError("--name must be 1-64 bytes") }
        try Self.require(swarmRequestTimeoutMs, in: 50...600_000, "--swarm-request-timeout-ms")
        guard StoreDurability(rawValue: storeSync) != nil else { throw ValidationError("--store-sync must be full or normal") }
        guard Logger.Level(rawValue: logLevel) != nil else { throw ValidationError("unknown --log-level \(logLevel)") }
        guard MembershipSettings.preset(named: preset) != nil else {
            throw ValidationError("--preset must be one of \(MembershipSettings.presets.map(\.name).joined(separator: ", "))")
        }
        try Self.require(apiIdleTimeout, in: 1...86_400, "--api-idle-timeout", "seconds")
        try Self.require(apiMaxConnections, in: 1...65_536, "--api-max-connections")
        try Self.require(apiMaxConnectionsPerSource, in: 1...65_536, "--api-max-connections-per-source")
        if let slots { try Self.require(slots, in: 1...4_096, "--slots") }
        if let memoryMB { try Self.require(memoryMB, in: 8...(1 << 30), "--memory-mb") }
        if let warm { try Self.require(warm, in: 0...64, "--warm") }
        try Self.require(auditHeadInterval, in: 0.1...3_600, "--audit-head-interval", "seconds")
        guard sessionEpsilon > 0 && sessionEpsilon <= 10 else { throw ValidationError("--session-epsilon must be in (0, 10]") }
        try Self.require(sessionMoveAfter, in: 0...86_400, "--session-move-after", "seconds")
        try Self.require(sessionRebalanceAfter, in: 0...86_400, "--session-rebalance-after", "seconds")
        try Self.require(sessionMoves, in: 0...1_024, "--session-moves")
        try Self.require(agentPollMs, in: 10...3_600_000, "--agent-poll-ms")
        if swarmRetentionHours != 0 {
            let minimum = Double(SwarmPruning.minimumRetention.components.seconds) / 3_600
            try Self.require(swarmRetentionHours, in: minimum...87_600, "--swarm-retention-hours", "hours, or 0")
        }
        // Reaping must outlast the 30 s replay window twice over (see MeshConfiguration).
        if let reapAfter { try Self.require(reapAfter, in: 61...(30 * 86_400), "--reap-after", "seconds") }
    }

    /// Refuses a flag's value outside its range, naming the flag and the range.
    static func require<T: Comparable>(_ value: T, in range: ClosedRange<T>, _ flag: String, _ unit: String = "") throws {
        guard range.contains(value) else {
            throw ValidationError("\(flag) must be \(range.lowerBound) to \(range.upperBound)\(unit.isEmpty ? "" : " " + unit) (got \(value))")
        }
    }

    func run() async throws {
        let level = Logger.Level(rawValue: logLevel)!
        LoggingSystem.bootstrap { label in
            var h = StreamLogHandler.standardError(label: label)
            h.logLevel = level
            return h
        }
        var logger = Logger(label: "starling")
        logger[metadataKey: "node"] = "\(name)"
        let registry = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))

        guard let bind = SocketAddress.resolve(gossip) else { throw ValidationError("--gossip: not HOST:PORT: \(gossip)") }
        guard let apiAddress = SocketAddress.resolve(api) else { throw ValidationError("--api: not HOST:PORT: \(api)") }
        var advertised: NodeAddress? = nil
        if let advertise {
            guard let a = SocketAddress.resolve(advertise) else { throw ValidationError("--advertise: not HOST:PORT: \(advertise)") }
            advertised = a
        } else if bind.host == "0.0.0.0" || bind.host == "::" {
            throw ValidationError("--gossip binds a wildcard address; give --advertise HOST:PORT")
        }
        var seeds: [NodeAddress] = []
        for part in (join ?? "").split(separator: ",") where !part.isEmpty {
            guard let s = SocketAddress.resolve(String(part)) else { throw ValidationError("--join: not HOST:PORT: \(part)") }
            seeds.append(s)
        }
        // The hands' configuration is checked before anything starts: a secrets file that others
        // can read, or a policy that does not parse, stops the node.
        if let secretsFile {
            do { _ = try SecretStore.load(path: secretsFile) } catch { throw ValidationError("--secrets-file: \(error); refusing to start") }
        }
        var secrets = SecretStore()
        if let secretsFile { secrets = try SecretStore.load(path: secretsFile) }
        var nodePolicy = Policy()
        if let policy {
            do {
                nodePolicy = try JSONDecoder().decode(Policy.self, from: Data(contentsOf: URL(fileURLWithPath: policy)))
                try nodePolicy.validate()
            } catch {
                throw ValidationError("--policy \(policy): \(error); refusing to start")
            }
        }
        let keyring: Keyring
        do { keyring = try Keyring.load(path: keyFile) } catch { throw ValidationError("--key-file: \(error)") }
        let identity = try NodeIdentity.loadOrCreate(dataDir: data)
        logger.info("identity", metadata: ["publicKey": "\(identity.publicKeyHex)"])

        var settings = MembershipSettings.preset(named: preset) ?? .lan
        if let reapAfter { settings.reapAfter = .seconds(reapAfter) }
        let physicalMB = Int(ProcessInfo.processInfo.physicalMemory >> 20)
        let taskMemoryMB = memoryMB ?? max(64, physicalMB * 3 / 4)
        var config = MeshConfiguration(name: name, bind: bind, advertise: advertised, api: apiAddress.description,
                                       seeds: seeds, slots: slots ?? ProcessInfo.processInfo.activeProcessorCount,
                                       taskMemoryMB: taskMemoryMB, keyFile: keyFile, settings: settings)
        // Gossiped in the metadata: peers pin this name to the key (issue #11 item 1).
        config.identityKey = identity.publicKey
        config.identity = identity
        let node = try MeshNode(configuration: config, keyring: keyring, logger: logger)
        // The hands: every task of every swarm runs in a throw-away sandbox. No bubblewrap, user
        // namespaces or writable cgroups here: the node refuses to start (it would take work it
        // cannot run).
        let runner: SandboxRunner
        do {
            runner = try SandboxRunner(configuration: SandboxConfiguration(
                nodeName: name, initPath: SandboxConfiguration.initBesideExecutable(),
                warmPoolSize: warm ?? min(config.slots, 64), policy: nodePolicy, secrets: secrets))
        } catch {
            throw ValidationError("sandboxes are unavailable here: \(error); refusing to start")
        }
        let store: SwarmStore
        do { store = try SwarmStore(directory: data, durability: StoreDurability(rawValue: storeSync) ?? .full) } catch { throw ValidationError("--data \(data): \(error); refusing to start") }
        // Every task run here is recorded in the signed audit log before it starts and before its
        // result is handed over. A log that cannot be opened, or whose last entry does not verify
        // under this node's key, stops the node; one that fails to write later makes it leave.
        let audit: AuditLog
        do { audit = try AuditLog(store: store, identity: identity, nodeName: name) } catch {
            throw ValidationError("--data \(data): \(error); refusing to start")
        }
        audit.onFailure { [logger] error in
            logger.critical("the audit log stopped; leaving the mesh", metadata: ["error": "\(error)"])
            node.requestLeave()
        }
        do {
            try audit.append("node.start", ["name": .string(name), "publicKey": .string(identity.publicKeyHex),
                                            "slots": .integer(Int64(config.slots)), "gossip": .string(gossip), "api": .string(api)])
        } catch {
            throw ValidationError("--data \(data): \(error); refusing to start")
        }
        AuditWitnessService.register(on: node, audit: audit, interval: .milliseconds(Int64(auditHeadInterval * 1000)), logger: logger)
        let swarms = try SwarmService(node: node, store: store, runner: runner, memoryMB: taskMemoryMB,
                                      requestTimeout: .milliseconds(swarmRequestTimeoutMs), logger: logger, audit: audit)
        if swarmRetentionHours > 0 {
            SwarmPruning.start(store: store, retention: .milliseconds(Int64(swarmRetentionHours * 3_600_000)), logger: logger)
        }
        let sessions = try SessionService(node: node, store: store, identity: identity, runner: runner, audit: audit,
                                          placement: .init(epsilon: sessionEpsilon, moveAfterIdle: .milliseconds(Int64(sessionMoveAfter * 1000)),
                                                           rebalanceAfterIdle: .milliseconds(Int64(sessionRebalanceAfter * 1000)),
                                                           movesPerTick: sessionMoves),
                                          logger: logger)
        let agents = AgentService(sessions: sessions, runner: runner, swarms: swarms, interval: .milliseconds(agentPollMs), logger: logger)
        node.start(onExit: {
            fflush(nil)  // flushes every open stream
            Glibc.exit(0)
        })
        agents.start()
        try await APIServer(node: node, registry: registry, host: apiAddress.host, port: Int(apiAddress.port),
                            limits: .init(idleTimeout: .seconds(apiIdleTimeout), maxConnections: apiMaxConnections,
                                          maxConnectionsPerSource: apiMaxConnectionsPerSource),
                            swarms: swarms, sessions: sessions, agents: agents, logger: logger).run()
    }
}
