/// A task's own API socket (`$STARLING_SOCKET`): how a sandboxed task reaches the node that runs
/// it, for what that task alone may do (its child swarms). The sandbox module only places the
/// socket; what answers on it is the runtime's (StarlingRuntime's TaskSocketServer).
///
/// Identity is the socket itself: the node listens on one socket per running task, in a
/// directory that only that task's sandbox sees (read-only, at `/run/starling`), so whatever
/// connects to it is that task. No credential enters the sandbox.
public protocol TaskSocketListener: AnyObject, Sendable {
    /// Listens on a Unix socket at `path` (a host path in the sandbox's run directory) and returns
    /// once it accepts connections, before the task's program starts. A throw refuses the task
    /// (fail closed: a spawning task without its socket is not run).
    func listen(at path: String) throws
    /// Stops listening, closes its connections and removes the socket file. Called exactly once
    /// per run, after the task ended or when it never started; must be safe without `listen`.
    func close()
}

/// Who a run is, as its environment tells it: `STARLING_TASK` always, `STARLING_SOCKET` when it
/// gets a socket.
public struct TaskContext: Sendable {
    /// `STARLING_TASK`: the task's id (a swarm task's is `SWARM/INDEX`, or the task's own id).
    public var taskID: String
    public var socket: (any TaskSocketListener)?
    /// Sees the task's stderr as it is written (raw: not redacted, not capped), for a hosted
    /// agent's `logs`. The result's `stderr` is unchanged.
    public var onStderr: (@Sendable ([UInt8]) -> Void)?

    public init(taskID: String, socket: (any TaskSocketListener)? = nil, onStderr: (@Sendable ([UInt8]) -> Void)? = nil) {
        self.taskID = taskID
        self.socket = socket
        self.onStderr = onStderr
    }

    /// The socket's path inside the sandbox.
    public static let socketPath = Bubblewrap.runMount + "/" + socketName
    static let socketName = "api.sock"
    /// Names the node sets in a task's environment; a task's own `env` cannot set them.
    public static let reservedNames: Set<String> = ["STARLING_TASK", "STARLING_SOCKET"]
}

/// The task's socket could not be opened: the task is refused with this reason.
public struct TaskSocketUnavailable: Error, CustomStringConvertible {
    public var description: String
    public init(_ d: String) { description = d }
}
