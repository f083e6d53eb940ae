import Foundation
import Testing

/// The warm sandbox's first program is started once per task. Linked with `-static-stdlib`
/// alone it was a dynamic executable that loaded libstdc++, libm and libgcc_s at every start:
/// about 1.9 ms of CPU per start against 0.6 ms static (`/tmp` timing in the perf notes), on
/// the 2 cores that also run the tasks. It must have no program interpreter (no dynamic loader).
@Suite("The sandbox init stub")
struct InitBinaryTests {
    /// Program header types of an ELF64 little-endian file.
    static func programHeaderTypes(_ path: String) throws -> [UInt32] {
        let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        func u16(_ at: Int) -> Int { Int(bytes[at]) | Int(bytes[at + 1]) << 8 }
        func u32(_ at: Int) -> UInt32 { (0..<4).reduce(0) { $0 | UInt32(bytes[at + $1]) << (8 * $1) } }
        func u64(_ at: Int) -> Int { (0..<8).reduce(0) { $0 | Int(bytes[at + $1]) << (8 * $1) } }
        try #require(bytes.count > 64 && bytes[0..<4] == [0x7f, 0x45, 0x4c, 0x46] && bytes[4] == 2 && bytes[5] == 1,
                     "\(path) is not an ELF64 little-endian file")
        let offset = u64(0x20), size = u16(0x36), count = u16(0x38)
        try #require(size >= 4 && offset + size * count <= bytes.count)
        return (0..<count).map { u32(offset + $0 * size) }
    }

    @Test func theInitStubIsStaticallyLinked() throws {
        let types = try Self.programHeaderTypes(initBinary())
        #expect(!types.isEmpty)
        let interpreter: UInt32 = 3  // PT_INTERP
        #expect(!types.contains(interpreter), "the init stub asks for a dynamic loader at every start")
    }
}
