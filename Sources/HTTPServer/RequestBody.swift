import CShim
import Glibc

/// A request body: small ones in memory, larger ones in an unlinked temporary file, so a 256 MiB upload
/// never sits in memory. The file is closed when the last reference goes.
public enum RequestBody: Sendable {
    case empty
    case bytes([UInt8])
    case file(SpooledFile)

    public var count: Int {
        switch self {
        case .empty: return 0
        case .bytes(let b): return b.count
        case .file(let f): return f.length
        }
    }

    /// The whole body in memory, when it is at most `limit` bytes (JSON bodies); nil if larger.
    public func readAll(limit: Int) -> [UInt8]? {
        switch self {
        case .empty: return []
        case .bytes(let b): return b.count <= limit ? b : nil
        case .file(let f): return f.length <= limit ? f.readAll() : nil
        }
    }
}

/// An anonymous temporary file holding a spooled body (O_TMPFILE: it has no name and vanishes on close).
public final class SpooledFile: Sendable {
    public let fd: Int32
    public let length: Int

    init(fd: Int32, length: Int) {
        self.fd = fd
        self.length = length
    }

    deinit { closeDescriptor(fd) }

    /// Reads the whole file (callers check `length` first).
    public func readAll() -> [UInt8] {
        var out = [UInt8](repeating: 0, count: length)
        var off = 0
        while off < length {
            let n = out.withUnsafeMutableBytes { pread(fd, $0.baseAddress! + off, length - off, off_t(off)) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            off += n
        }
        return out
    }
}

/// Accumulates body bytes, moving to a temporary file past `memoryThreshold`.
struct BodyAccumulator {
    let memoryThreshold: Int
    let spoolDirectory: String
    private(set) var count = 0
    private var memory: [UInt8] = []
    private var fd: Int32 = -1

    init(memoryThreshold: Int, spoolDirectory: String) {
        self.memoryThreshold = memoryThreshold
        self.spoolDirectory = spoolDirectory
    }

    mutating func append(_ bytes: [UInt8]) throws(SystemCallError) {
        count += bytes.count
        if fd < 0 && memory.count + bytes.count <= memoryThreshold {
            memory.append(contentsOf: bytes)
            return
        }
        if fd < 0 {
            let created = cshim_open_tmpfile(spoolDirectory)
            if created < 0 { throw SystemCallError(call: "open(O_TMPFILE, \(spoolDirectory))", errno: errno) }
            fd = created
            let pending = memory
            memory = []
            try writeAll(pending)
        }
        try writeAll(bytes)
    }

    private func writeAll(_ bytes: [UInt8]) throws(SystemCallError) {
        var off = 0
        while off < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + off, bytes.count - off) }
            if n < 0 {
                if errno == EINTR { continue }
                throw SystemCallError(call: "write(spool)", errno: errno)
            }
            off += n
        }
    }

    /// Hands over the body; the accumulator is empty afterwards.
    mutating func finish() -> RequestBody {
        defer {
            fd = -1
            memory = []
            count = 0
        }
        if fd >= 0 { return .file(SpooledFile(fd: fd, length: count)) }
        return memory.isEmpty ? .empty : .bytes(memory)
    }

    /// Drops what was accumulated (request rejected).
    mutating func discard() {
        if fd >= 0 { closeDescriptor(fd) }
        fd = -1
        memory = []
        count = 0
    }
}
