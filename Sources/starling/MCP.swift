import ArgumentParser
import Foundation
import StarlingRuntime

/// `starling mcp`: for MCP clients that launch a command (desktop agents, agent SDKs), the MCP
/// stdio transport bridged to a node's `/mcp` (see `MCPStdioBridge`).
struct MCPCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mcp",
        abstract: "A stdio MCP server: newline-delimited JSON-RPC on stdin and stdout, forwarded to the node's /mcp.",
        discussion: """
        Point an MCP client at this command to give it the mesh's tools (run, spawn_swarm, swarm_status, cancel_swarm, \
        session_create, session_checkpoint, session_get, act, members). Exits 0 at the end of stdin, after ending its MCP session.
        """)

    @OptionGroup var api: APIOptions

    func run() async throws {
        try await MCPStdioBridge(api: api.address).run()
    }
}
