import Foundation
import Glibc
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import StarlingCore
import StarlingSandbox
import Synchronization

/// The node's end of one task's `$STARLING_SOCKET`: an HTTP server on a Unix socket that only
/// that task's sandbox can see, serving `SpawnRoutes` for that task. Created before the task
/// starts (`listen`), closed and unlinked when it ends (`close`); the sandbox runner calls both.
///
/// The caller's identity is the socket: nothing else reaches it (its directory is mode 0700 under
/// the node's work root, bound read-only into that one sandbox; the socket itself is 0600), so
/// no credential is needed or accepted.
public final class TaskSocketServer: TaskSocketListener {
    /// Bounds per socket.
    public enum Limits {
        /// Connections open at once; more wait in the (small) backlog until one closes.
        public static let maxConnections = 8
        public static let backlog = 8
        /// A child swarm's spec, files included (the public API's SwarmSpec limit is larger; a
        /// task that needs more should write fewer, bigger tasks).
        public static let maxBodyBytes = 4 << 20
        /// Requests: a burst, then this many a second, and this many in the task's life.
        public static let burst = 64
        public static let perSecond = 32.0
        public static let total = 100_000
        /// An idle connection is closed after this long.
        public static let idleTimeout = TimeAmount.seconds(60)
        /// How long `listen` waits for the server to accept connections.
        public static let startTimeout = DispatchTimeInterval.seconds(10)
    }

    /// Serves HTTP on the socket at the path until cancelled; calls its third argument once
    /// the server accepts connections. Built from the routes the socket serves.
    typealias Serve = @Sendable (_ path: String, _ logger: Logger, _ running: @escaping @Sendable () -> Void) async throws -> Void
    let serve: Serve
    /// Around the server's life: a spawning task's ledger is held while its socket is open.
    let opened: @Sendable () async -> Void
    let closed: @Sendable () async -> Void
    let logger: Logger
    private struct State {
        var path: String?
        var server: Task<Void, Never>?
        var closed = false
    }
    private let state = Mutex(State())

    public convenience init(routes: SpawnRoutes, logger: Logger = Logger(label: "starling.task-socket")) {
        self.init(router: routes.makeRouter(), rate: routes.rate, logger: logger,
                  opened: { await routes.ledger.retain(routes.task.swarm) },
                  closed: { await routes.ledger.release(routes.task.swarm) })
    }

    /// A socket serving `router` (an agent's brain serves `AgentSocketRoutes`), every request
    /// counted against `rate`, with this type's bounds on connections, bodies and idle time.
    init(router: Router<TaskSocketContext>, rate: RequestRate, logger: Logger,
         opened: @escaping @Sendable () async -> Void = {}, closed: @escaping @Sendable () async -> Void = {}) {
        let responder = TaskSocketResponder(inner: router.buildResponder(), rate: rate)
        serve = { path, logger, running in
            let app = Application(
                responder: responder,
                server: .http1(configuration: .init(idleTimeout: Limits.idleTimeout)),
                configuration: .init(address: .unixDomainSocket(path: path), serverName: "starling", backlog: Limits.backlog,
                                     availableConnectionsDelegate: MaximumAvailableConnections(Limits.maxConnections)),
                onServerRunning: { _ in running() },
                logger: logger)
            try await app.run()
        }
        self.opened = opened
        self.closed = closed
        var quiet = logger
        // Hummingbird logs every start at info, and the cancellation that stops the server when
        // its task ends as an error: a line or two per task would bury the node's real errors.
        quiet.logLevel = .critical
        self.logger = quiet
    }

    public func listen(at path: String) throws {
        let started = StartSignal()
        let serve = self.serve
        let logger = self.logger
        let opened = self.opened
        let closed = self.closed
        try state.withLock { s in
            guard !s.closed, s.server == nil else { throw TaskSocketUnavailable("the socket was already used") }
            s.path = path
            // On the sockets' own threads: see ThreadExecutor for why not the global pool.
            s.server = Task(executorPreference: ThreadExecutor.taskSockets) {
                await opened()
                do {
                    try await serve(path, logger) {
                        // Only the node's user (the task's, through its user namespace) may connect.
                        started.finish(chmod(path, 0o600) == 0 ? nil : "chmod \(path): \(String(cString: strerror(errno)))")
                    }
                } catch {
                    started.finish("\(error)")
                }
                await closed()
            }
        }
        guard let outcome = started.wait(Limits.startTimeout) else {
            close()
            throw TaskSocketUnavailable("the socket did not start within \(Limits.startTimeout)")
        }
        if let reason = outcome {
            close()
            throw TaskSocketUnavailable(reason)
        }
    }

    /// Stops the server (its open connections are closed; a child swarm being submitted finishes
    /// in the gateway, which does not depend on the connection) and removes the socket file.
    public func close() {
        let (server, path) = state.withLock { s -> (Task<Void, Never>?, String?) in
            s.closed = true
            defer { s.server = nil; s.path = nil }
            return (s.server, s.path)
        }
        // The file goes first: from now on nobody can connect, whatever the server is doing.
        if let path { unlink(path) }
        server?.cancel()
    }
}

/// The server's start, reported once to the thread that waits in `listen`.
private final class StartSignal: Sendable {
    private let outcome = Mutex<String??>(nil)
    private let done = DispatchSemaphore(value: 0)

    /// nil: listening; else why not. Only the first report counts.
    func finish(_ failure: String?) {
        let first = outcome.withLock { o -> Bool in
            guard o == nil else { return false }
            o = .some(failure)
            return true
        }
        if first { done.signal() }
    }

    /// The outcome, or nil when nothing was reported in time.
    func wait(_ timeout: DispatchTimeInterval) -> String?? {
        guard done.wait(timeout: .now() + timeout) == .success else { return nil }
        return outcome.withLock { $0 }
    }
}
