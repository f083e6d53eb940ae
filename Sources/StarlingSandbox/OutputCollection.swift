import Foundation
import Glibc

/// What a task left under its `out` directory, read back within bounds.
struct CollectedOutputs {
    /// Relative path (secret values redacted) → content (redacted, cut at the per-file cap).
    var files: [String: String] = [:]
    /// Something was left out: a file cut, a file past the count, an entry past the depth or
    /// the visit budget.
    var truncated = false
}

/// Bounds on the walk over a task's outputs. A task controls the tree, so every dimension is
/// bounded: the files kept, the bytes read, and the entries *visited* (a million empty
/// directories hold no file, yet would cost the node a million `lstat`s).
struct OutputBounds {
    var perFile: Int
    var total: Int
    var maxFiles = 256
    var maxEntries = 10_000
    var maxDepth = 16
}

/// Reads regular files under `dir` without following links (a task could plant a symlink to a
/// host path). Secret values are redacted from names and contents, before each file's cap so
/// that a value straddling the cut leaks no prefix.
func collectOutputs(_ dir: String, bounds: OutputBounds, secrets: SecretStore = SecretStore()) -> CollectedOutputs {
    var result = CollectedOutputs()
    var used = 0
    var visited = 0
    var exhausted = false
    let overlap = secrets.overlap
    func walk(_ path: String, _ prefix: String, depth: Int) {
        // O_NOFOLLOW: a directory swapped for a link after its lstat is not followed either.
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else {
            if errno != ENOENT { result.truncated = true }  // there, but unreadable: left out
            return
        }
        guard let d = fdopendir(fd) else {
            close(fd)
            return
        }
        defer { closedir(d) }
        while !exhausted, let e = readdir(d) {
            let name = withUnsafeBytes(of: e.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
            if name == "." || name == ".." { continue }
            visited += 1
            guard visited <= bounds.maxEntries else {
                result.truncated = true
                exhausted = true
                return
            }
            let full = path + "/" + name, rel = prefix.isEmpty ? name : prefix + "/" + name
            var st = stat()
            guard lstat(full, &st) == 0 else { continue }
            if (st.st_mode & S_IFMT) == S_IFDIR {
                guard depth + 1 < bounds.maxDepth else {
                    result.truncated = true
                    continue
                }
                walk(full, rel, depth: depth + 1)
            } else if (st.st_mode & S_IFMT) == S_IFREG {
                guard result.files.count < bounds.maxFiles else {
                    result.truncated = true
                    continue
                }
                // O_NONBLOCK: should the file have become a FIFO since its lstat, the open
                // cannot hang the node.
                let fd = open(full, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK)
                guard fd >= 0 else {
                    result.truncated = true
                    continue
                }
                defer { close(fd) }
                let want = max(0, min(bounds.perFile, bounds.total - used))
                // Read past the cap by the longest secret less one, redact, then cut.
                let bytes = readUpTo(fd, want + overlap)
                let (text, cut) = secrets.redact(bytes, cap: want)
                if cut || Int(st.st_size) > bytes.count { result.truncated = true }
                used += text.utf8.count
                result.files[secrets.redact(rel)] = text
            }
        }
    }
    walk(dir, "", depth: 0)
    return result
}

/// Reads at most `limit` bytes from `fd` (until EOF or an error).
private func readUpTo(_ fd: Int32, _ limit: Int) -> [UInt8] {
    var bytes = [UInt8](repeating: 0, count: max(0, limit))
    var got = 0
    while got < limit {
        let n = bytes.withUnsafeMutableBytes { read(fd, $0.baseAddress! + got, limit - got) }
        if n < 0 && errno == EINTR { continue }
        if n <= 0 { break }
        got += n
    }
    return Array(bytes[0..<got])
}
