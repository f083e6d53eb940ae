import Foundation
import Testing
@testable import StarlingSandbox

extension SandboxTests {
    @Suite("personality(2) in a sandbox")
    struct PersonalityTests {
        /// The query and PER_LINUX (0, the persona a task already has) work, as under Docker's
        /// profile; ADDR_NO_RANDOMIZE (0x0040000) stays refused.
        @Test func perLinuxAndTheQueryWorkAndAddressRandomisationStays() throws {
            let (runner, _) = try makeRunner()
            let r = try runner.run(TaskSpec(argv: ["python3", "-c", """
                import ctypes
                libc = ctypes.CDLL(None, use_errno=True)
                persona = lambda p: libc.personality(ctypes.c_ulong(p))
                query = persona(0xffffffff)
                linux = persona(0)
                norandom = persona(0x0040000)
                print(query, linux, norandom, ctypes.get_errno() != 0, persona(0xffffffff))
                """]), preferWarm: false)
            #expect(r.exitCode == 0, "\(r.stderr)")
            #expect(r.stdout == "0 0 -1 True 0\n", "\(r.stdout) \(r.stderr)")
        }
    }
}
