import Foundation
import Glibc

/// A parsed HTTP response as read off a raw socket.
public struct RawResponse: Sendable {
    public let status: Int
    public let headers: [(String, String)]
    public let body: [UInt8]

    public func header(_ name: String) -> String? {
        headers.first { $0.0.lowercased() == name.lowercased() }?.1
    }

    public var text: String { String(decoding: body, as: UTF8.self) }
}

/// A connected IPv4 TCP socket, or -1 with errno set (the socket closed).
public func tcpConnect(port: UInt16, host: String = "127.0.0.1") -> Int32 {
    var sa = sockaddr_in()
    sa.sin_family = sa_family_t(AF_INET)
    sa.sin_port = port.bigEndian
    inet_pton(AF_INET, host, &sa.sin_addr)
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    let r = withUnsafePointer(to: &sa) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
    if r != 0 {
        let e = errno
        Glibc.close(fd)
        errno = e
        return -1
    }
    return fd
}

/// A blocking client socket for protocol edge cases: send exact bytes, read exact responses.
public final class RawClient {
    public let fd: Int32
    private var buffer: [UInt8] = []
    public private(set) var closedByPeer = false

    public init(port: UInt16, host: String = "127.0.0.1") throws {
        fd = tcpConnect(port: port, host: host)
        if fd < 0 { throw TestFailure("connect to \(host):\(port) failed: errno \(errno)") }
    }

    public init(unixPath: String) throws {
        var sa = sockaddr_un()
        sa.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &sa.sun_path) { raw in for (i, b) in unixPath.utf8.enumerated() { raw[i] = b } }
        fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        let r = withUnsafePointer(to: &sa) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }
        if r != 0 {
            let e = errno
            Glibc.close(fd)
            throw TestFailure("connect to \(unixPath) failed: errno \(e)")
        }
    }

    deinit { Glibc.close(fd) }

    public func send(_ text: String) throws { try send(Array(text.utf8)) }

    public func send(_ bytes: [UInt8]) throws {
        var off = 0
        while off < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress! + off, bytes.count - off, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { throw TestFailure("send failed: errno \(errno)") }
            off += n
        }
    }

    /// Reads more bytes, waiting at most `timeout` seconds; false on timeout or when the peer closed.
    @discardableResult
    public func fill(timeout: Double) -> Bool {
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        guard poll(&p, 1, Int32(timeout * 1000)) > 0 else { return false }
        var tmp = [UInt8](repeating: 0, count: 65536)
        let n = tmp.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        if n <= 0 {
            closedByPeer = true
            return false
        }
        buffer += tmp[..<n]
        return true
    }

    /// Reads one response (Content-Length framed, or up to close); nil if none arrives within `timeout`.
    public func readResponse(timeout: Double = 10, isHead: Bool = false) -> RawResponse? {
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            if let (resp, used) = RawClient.parse(buffer, isHead: isHead, complete: closedByPeer) {
                buffer.removeFirst(used)
                if resp.status == 100 { continue }
                return resp
            }
            if closedByPeer { return nil }
            let left = deadline.timeIntervalSinceNow
            if left <= 0 { return nil }
            fill(timeout: left)
        }
    }

    /// True if the server closes the connection within `timeout` (reading and dropping anything it sends).
    public func waitForClose(timeout: Double = 10) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while !closedByPeer {
            let left = deadline.timeIntervalSinceNow
            if left <= 0 { return false }
            fill(timeout: left)
        }
        return true
    }

    public var pendingBytes: [UInt8] { buffer }

    static func parse(_ b: [UInt8], isHead: Bool, complete: Bool) -> (RawResponse, Int)? {
        guard let end = find(b, Array("\r\n\r\n".utf8)) else { return nil }
        let head = String(decoding: b[..<end], as: UTF8.self)
        var lines = head.components(separatedBy: "\r\n")
        let statusLine = lines.removeFirst().split(separator: " ")
        guard statusLine.count >= 2, let status = Int(statusLine[1]) else { return nil }
        let headers = lines.compactMap { l -> (String, String)? in
            guard let c = l.firstIndex(of: ":") else { return nil }
            return (String(l[..<c]), l[l.index(after: c)...].trimmingCharacters(in: .whitespaces))
        }
        let bodyStart = end + 4
        if status == 100 { return (RawResponse(status: 100, headers: headers, body: []), bodyStart) }
        if isHead || status == 204 || status == 304 { return (RawResponse(status: status, headers: headers, body: []), bodyStart) }
        if let cl = headers.first(where: { $0.0.lowercased() == "content-length" }).flatMap({ Int($0.1) }) {
            guard b.count >= bodyStart + cl else { return nil }
            return (RawResponse(status: status, headers: headers, body: Array(b[bodyStart..<bodyStart + cl])), bodyStart + cl)
        }
        guard complete else { return nil }
        return (RawResponse(status: status, headers: headers, body: Array(b[bodyStart...])), b.count)
    }

    static func find(_ hay: [UInt8], _ needle: [UInt8]) -> Int? {
        guard hay.count >= needle.count else { return nil }
        for i in 0...(hay.count - needle.count) where hay[i] == needle[0] && Array(hay[i..<i + needle.count]) == needle { return i }
        return nil
    }
}

/// A test precondition that failed, with a message.
public struct TestFailure: Error, CustomStringConvertible {
    public let description: String
    public init(_ d: String) { description = d }
}

/// One request on a fresh connection (`Connection: close`): method, path, extra headers, optional body.
public func httpRequest(port: UInt16, _ method: String, _ path: String, headers: [(String, String)] = [], body: String? = nil) throws -> RawResponse {
    let c = try RawClient(port: port)
    var req = "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nConnection: close\r\n"
    for (n, v) in headers { req += "\(n): \(v)\r\n" }
    if let body {
        if !headers.contains(where: { $0.0.lowercased() == "content-type" }) { req += "Content-Type: application/json\r\n" }
        req += "Content-Length: \(body.utf8.count)\r\n"
    }
    try c.send(req + "\r\n" + (body ?? ""))
    guard let r = c.readResponse(timeout: 20, isHead: method == "HEAD") else { throw TestFailure("no response to \(method) \(path)") }
    return r
}

extension RawResponse {
    /// Every value of a header (Set-Cookie can repeat).
    public func headers(_ name: String) -> [String] { headers.filter { $0.0.lowercased() == name.lowercased() }.map(\.1) }

    /// The body parsed as JSON (Foundation's parser: an independent check of ours).
    public var json: [String: Any] { (try? JSONSerialization.jsonObject(with: Data(body))) as? [String: Any] ?? [:] }
}
