import Foundation
import Logging
import StarlingCore
import StarlingSandbox

/// Makes the socket of each task run that may spawn: what the node's task executor calls before
/// it hands a `TaskRun` to the sandbox runner.
///
///     let context = sockets.context(for: run)   // STARLING_TASK, and the socket if the swarm allows it
///     let result = try runner.run(task, requestPolicy: options.policy, context: context)
///
/// One ledger per node, shared by every socket, so that two tasks of one swarm on this node
/// cannot spend the same budget at once.
public struct TaskSockets: Sendable {
    let gateway: any SpawnGateway
    let ledger = SpawnLedger()
    let nodeName: String
    let logger: Logger

    /// Over the node's swarm gateway and the public swarm routes' settings.
    public init(swarms: any SwarmGateway, events: SwarmEventSettings = SwarmEventSettings(), logger: Logger) {
        let routes = SwarmRoutes(gateway: swarms, forwarder: SwarmForwarder(logger: logger), events: events, logger: logger)
        self.init(gateway: MeshSpawnGateway(swarms: swarms, routes: routes), nodeName: swarms.nodeName, logger: logger)
    }

    public init(gateway: any SpawnGateway, nodeName: String, logger: Logger) {
        self.gateway = gateway
        self.nodeName = nodeName
        self.logger = logger
    }

    /// `STARLING_TASK` is `SWARM/TASK-ID`. The socket comes only when the swarm's options allow
    /// spawning; options that do not decode give none (the task runs, and cannot spawn).
    public func context(for run: TaskRun) -> TaskContext {
        let id = "\(run.swarm)/\(run.task.id)"
        guard let options = try? JSONDecoder().decode(SwarmOptions.self, from: Data(run.options)), options.allowsSpawning else {
            return TaskContext(taskID: id)
        }
        let routes = SpawnRoutes(task: TaskRef(swarm: run.swarm, task: run.index), options: options, nodeName: nodeName, gateway: gateway,
                                 ledger: ledger, rate: RequestRate(burst: TaskSocketServer.Limits.burst, perSecond: TaskSocketServer.Limits.perSecond,
                                                                   total: TaskSocketServer.Limits.total))
        return TaskContext(taskID: id, socket: TaskSocketServer(routes: routes, logger: logger))
    }
}
