import ArgumentParser

@main
struct Starling: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "starling",
        abstract: "A masterless peer-to-peer mesh for AI agents and their swarms of sub-agents.",
        subcommands: [Keygen.self, Node.self, Members.self, SwarmCommands.self, SessionCommands.self, AgentCommands.self, SandboxCommand.self, AuditCommands.self, MCPCommand.self])
}
