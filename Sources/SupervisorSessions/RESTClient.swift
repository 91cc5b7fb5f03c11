import CShim
import Foundation
import Glibc

/// A blocking HTTP/1.0 client for ChimeraX's REST server on 127.0.0.1: one request per connection (the
/// server closes after each reply), bounded in time and size; and the reply parser `RESTExchange` shares.
/// The daemon itself uses `RESTExchange` on its reactor; this one serves benchmarks and tools (it blocks
/// the calling thread: never call it on the reactor or an event loop).
public enum RESTClient {
    public struct Reply: Sendable {
        public let status: Int
        public let body: [UInt8]
    }

    /// `GET path` on 127.0.0.1:`port` (of `namespace` when given: the session's own loopback); nil on any
    /// failure or after `timeout` seconds.
    public static func get(port: UInt16, path: String, timeout: Double, namespace: NetworkNamespace? = nil, maxBytes: Int = 16 << 20) -> Reply? {
        let fd: Int32
        if let namespace { fd = namespace.tcpSocket() } else { fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0) }
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var tv = timeval(tv_sec: Int(timeout), tv_usec: Int((timeout - floor(timeout)) * 1e6))
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var sa = sockaddr_in()
        sa.sin_family = sa_family_t(AF_INET)
        sa.sin_port = port.bigEndian
        sa.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
        let ok = withUnsafePointer(to: &sa) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard ok == 0 else { return nil }
        let req = Array("GET \(path) HTTP/1.0\r\nHost: 127.0.0.1:\(port)\r\n\r\n".utf8)
        guard req.withUnsafeBytes({ send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }) == req.count else { return nil }
        let deadline = Date().addingTimeInterval(timeout)
        var data: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 65536)
        while Date() < deadline {
            let n = recv(fd, &buf, buf.count, 0)
            if n > 0 {
                data.append(contentsOf: buf[0..<n])
                if data.count > maxBytes { return nil }
                continue
            }
            if n < 0 && errno == EINTR { continue }
            if n < 0 { return nil }
            break
        }
        return parse(data)
    }

    /// A whole HTTP/1.x reply (the connection has closed): status and body.
    public static func parse(_ data: [UInt8]) -> Reply? {
        guard let end = headEnd(data) else { return nil }
        let statusLine = String(decoding: data[..<end].prefix { $0 != 13 }, as: UTF8.self)
        let parts = statusLine.split(separator: " ")
        guard parts.count >= 2, parts[0].hasPrefix("HTTP/1."), let status = Int(parts[1]) else { return nil }
        return Reply(status: status, body: Array(data[(end + 4)...]))
    }

    static func headEnd(_ d: [UInt8]) -> Int? {
        guard d.count >= 4 else { return nil }
        for i in 0...(d.count - 4) where d[i] == 13 && d[i + 1] == 10 && d[i + 2] == 13 && d[i + 3] == 10 { return i }
        return nil
    }
}
