import Foundation

/// What every fuzz target shares: its seed corpus is written by the target itself, from real
/// encoded values, so the seeds follow the wire format when it changes.
///
/// `Scripts/fuzz --write-seeds` runs each target with `STARLING_FUZZ_WRITE_SEEDS=DIR`: the
/// target's `LLVMFuzzerInitialize` calls `writeSeedsIfAsked`, which writes the files and exits
/// before libFuzzer starts fuzzing.
public func writeSeedsIfAsked(_ seeds: @autoclosure () -> [String: [UInt8]]) {
    guard let dir = ProcessInfo.processInfo.environment["STARLING_FUZZ_WRITE_SEEDS"] else { return }
    do {
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        for (name, bytes) in seeds().sorted(by: { $0.key < $1.key }) {
            try Data(bytes).write(to: URL(fileURLWithPath: dir).appendingPathComponent(name))
        }
    } catch {
        fatalError("could not write seeds to \(dir): \(error)")
    }
    exit(0)
}

/// An invariant of the code under test. A violation is a finding: libFuzzer reports the trap
/// as a crash and keeps the input.
public func invariant(_ condition: Bool, _ message: @autoclosure () -> String) {
    if !condition { fatalError("invariant violated: \(message())") }
}

/// Whether to print what a target does, step by step (`STARLING_FUZZ_TRACE=1`), to read a
/// finding: run the target on the one input with it set.
public let tracing = ProcessInfo.processInfo.environment["STARLING_FUZZ_TRACE"] == "1"

/// Prints one line of a trace when tracing.
public func trace(_ line: @autoclosure () -> String) {
    if tracing { print(line()) }
}

/// The fuzzer's input as a byte array.
public func bytes(_ data: UnsafePointer<UInt8>?, _ size: Int) -> [UInt8] {
    guard let data, size > 0 else { return [] }
    return Array(UnsafeBufferPointer(start: data, count: size))
}
