import Foundation
import StarlingCore
import StarlingSandbox

/// The rule a parent swarm's owner applies to a child swarm it is told of (`Swarm.childRule`):
/// the same `SpawnRules` a task's socket checks, but against every child the owner recorded,
/// so two tasks spawning at once on different nodes cannot together overspend the budget.
enum SpawnAdmission {
    static let rule: ChildRule = { request in
        let decoder = JSONDecoder()
        // Fail closed: options that do not decode leave the budget unknown.
        guard let parent = try? decoder.decode(SwarmOptions.self, from: Data(request.parentOptions)) else {
            return .refuse("the parent swarm's options cannot be read: its spawn budget is unknown")
        }
        guard let child = try? decoder.decode(SwarmOptions.self, from: Data(request.childOptions)) else {
            return .refuse("the child swarm's options cannot be read")
        }
        let used = Int(clamping: request.used)
        if let refusal = SpawnRules.refusal(child: child, tasks: request.childTasks, parent: parent, used: used) {
            return .refuse(refusal.message)
        }
        return .admit(cost: UInt64(SpawnRules.cost(of: child, tasks: request.childTasks)))
    }
}
