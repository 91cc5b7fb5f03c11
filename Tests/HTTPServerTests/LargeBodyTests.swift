import Foundation
import Glibc
import Testing
import TestSupport
@testable import HTTPServer

/// The pattern `i % 251` for 1 MiB + 251 bytes: the piece starting at offset `o` is `pattern[o % 251 ..< …]`.
private let pattern: [UInt8] = (0..<((1 << 20) + 251)).map { UInt8($0 % 251) }

/// Whether `bytes` is the pattern from stream offset `offset` (memcmp: debug builds are slow byte by byte).
private func matchesPattern(_ bytes: UnsafeRawBufferPointer, at offset: Int) -> Bool {
    var done = 0
    while done < bytes.count {
        let n = min(1 << 20, bytes.count - done)
        let same = pattern.withUnsafeBytes { p in memcmp(bytes.baseAddress! + done, p.baseAddress! + (offset + done) % 251, n) == 0 }
        if !same { return false }
        done += n
    }
    return true
}

/// An HTTP server in this process with one upload route, to look at what the handler receives.
private final class UploadServer: @unchecked Sendable {
    // @unchecked Sendable: set up once in init, then read-only; the server and its loop are thread-safe.
    let server: HTTPServer
    let port: UInt16
    let spoolDirectory: String

    struct Observer: HTTPServerObserver {
        func requestCompleted(route: String?, method: HTTPMethod, status: Int, nanos: UInt64) {}
        func log(_ level: LogLevel, _ message: String, _ fields: [String: String]) {}
    }

    init() throws {
        spoolDirectory = DaemonProcess.makeTempDirectory()
        var config = ServerConfiguration()
        config.spoolDirectory = spoolDirectory
        var router = Router()
        router.add(.POST, "/upload", bodyLimit: 300 << 20, doc: RouteDoc("upload")) { req in
            // Whether the body went to a file, its length, and whether every byte is the sender's pattern.
            var spooled = false
            var intact = true
            switch req.body {
            case .empty: break
            case .bytes(let b): intact = b.withUnsafeBytes { matchesPattern($0, at: 0) }
            case .file(let f):
                spooled = true
                var chunk = [UInt8](repeating: 0, count: 1 << 20)
                var off = 0
                while off < f.length && intact {
                    let n = chunk.withUnsafeMutableBytes { pread(f.fd, $0.baseAddress!, $0.count, off_t(off)) }
                    if n <= 0 { intact = false; break }
                    intact = chunk.withUnsafeBytes { matchesPattern(UnsafeRawBufferPointer(rebasing: $0[..<n]), at: off) }
                    off += n
                }
                if off != f.length { intact = false }
            }
            return .json(.object([("count", .number(Double(req.body.count))), ("intact", .bool(intact)), ("spooled", .bool(spooled))]))
        }
        let listener = try Listener.open(.tcp(host: "127.0.0.1", port: 0))
        port = listener.port
        server = try HTTPServer(configuration: config, router: router, listeners: [listener], observer: Observer())
        let s = server
        let thread = Thread {
            s.start()
            s.loops[0].run()
        }
        thread.start()
    }

    func stop() {
        server.drain(timeout: 1) { [server] in server.stopLoops() }
        try? FileManager.default.removeItem(atPath: spoolDirectory)
    }
}

/// `count` bytes of the pattern `i % 251`, sent in 1 MiB pieces, as a plain or chunked body.
private func sendPattern(_ client: RawClient, count: Int, chunked: Bool) throws {
    var off = 0
    while off < count {
        let n = min(1 << 20, count - off)
        let piece = Array(pattern[(off % 251)..<(off % 251 + n)])
        if chunked { try client.send(String(n, radix: 16) + "\r\n") }
        try client.send(piece)
        if chunked { try client.send("\r\n") }
        off += n
    }
    if chunked { try client.send("0\r\n\r\n") }
}

private func peakRSSKiB() -> Int {
    guard let s = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return 0 }
    for line in s.split(separator: "\n") where line.hasPrefix("VmHWM:") {
        return line.split(separator: " ").dropFirst().first.flatMap { Int($0) } ?? 0
    }
    return 0
}

@Suite("Large bodies")
struct LargeBodyTests {
    @Test func aLargeUploadIsSpooledToAFileAndArrivesIntact() throws {
        let s = try UploadServer()
        defer { s.stop() }
        let size = 256 << 20
        let before = peakRSSKiB()
        let c = try RawClient(port: s.port)
        try c.send("POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: \(size)\r\n\r\n")
        try sendPattern(c, count: size, chunked: false)
        let r = try #require(c.readResponse(timeout: 60))
        #expect(r.status == 200)
        #expect(r.text == #"{"count":\#(size),"intact":true,"spooled":true}"#)
        // The body went through a file: this process (client and server) grew by far less than the body.
        let grown = peakRSSKiB() - before
        #expect(grown < 128 * 1024, "peak RSS grew by \(grown) KiB for a \(size >> 10) KiB body")
        // Nothing is left in the spool directory (O_TMPFILE files have no name).
        #expect(try FileManager.default.contentsOfDirectory(atPath: s.spoolDirectory).isEmpty)
    }

    @Test func chunkedUploadsAreSpooledTooAndSmallBodiesStayInMemory() throws {
        let s = try UploadServer()
        defer { s.stop() }
        let c = try RawClient(port: s.port)
        let size = 8 << 20
        try c.send("POST /upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
        try sendPattern(c, count: size, chunked: true)
        let r = try #require(c.readResponse(timeout: 60))
        #expect(r.text == #"{"count":\#(size),"intact":true,"spooled":true}"#)
        // Same connection: a body under the threshold is handed over in memory.
        try c.send("POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n")
        try sendPattern(c, count: 1000, chunked: false)
        let small = try #require(c.readResponse(timeout: 10))
        #expect(small.text == #"{"count":1000,"intact":true,"spooled":false}"#)
    }
}
