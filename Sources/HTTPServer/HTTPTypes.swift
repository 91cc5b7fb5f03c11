import Glibc

/// An HTTP method token. Any RFC 9110 token is accepted by the parser; the router decides what it serves.
public struct HTTPMethod: Hashable, Sendable, CustomStringConvertible {
    public let rawValue: String
    public init(_ rawValue: String) { self.rawValue = rawValue }
    public var description: String { rawValue }

    public static let GET = HTTPMethod("GET")
    public static let HEAD = HTTPMethod("HEAD")
    public static let POST = HTTPMethod("POST")
    public static let PUT = HTTPMethod("PUT")
    public static let PATCH = HTTPMethod("PATCH")
    public static let DELETE = HTTPMethod("DELETE")
    public static let OPTIONS = HTTPMethod("OPTIONS")
}

/// Header fields in arrival order, looked up case-insensitively.
public struct HTTPHeaders: Sendable, Sequence {
    public private(set) var fields: [(name: String, value: String)] = []

    public init() {}
    public init(_ fields: [(String, String)]) {
        self.fields = fields.map { (name: $0.0, value: $0.1) }
    }

    public mutating func add(_ name: String, _ value: String) { fields.append((name: name, value: value)) }

    public mutating func reserveCapacity(_ n: Int) { fields.reserveCapacity(n) }

    /// Replaces every field of that name with one.
    public mutating func set(_ name: String, _ value: String) {
        remove(name)
        fields.append((name: name, value: value))
    }

    public mutating func remove(_ name: String) {
        fields.removeAll { asciiCaseInsensitiveEquals($0.name, name) }
    }

    /// The first value of that name.
    public subscript(_ name: String) -> String? {
        for f in fields where asciiCaseInsensitiveEquals(f.name, name) { return f.value }
        return nil
    }

    public func values(_ name: String) -> [String] {
        fields.filter { asciiCaseInsensitiveEquals($0.name, name) }.map(\.value)
    }

    public func contains(_ name: String) -> Bool { self[name] != nil }
    public var count: Int { fields.count }

    public func makeIterator() -> IndexingIterator<[(name: String, value: String)]> { fields.makeIterator() }
}

@inline(__always)
func asciiCaseInsensitiveEquals(_ a: String, _ b: String) -> Bool {
    let ua = a.utf8
    let ub = b.utf8
    guard ua.count == ub.count else { return false }
    // Byte by byte over the contiguous storage (native strings always have it); iterators otherwise.
    if let r = ua.withContiguousStorageIfAvailable({ pa in
        ub.withContiguousStorageIfAvailable { pb in
            for i in 0..<pa.count where !asciiCaseInsensitiveEqual(pa[i], pb[i]) { return false }
            return true
        }
    }), let r { return r }
    for (x, y) in zip(ua, ub) where !asciiCaseInsensitiveEqual(x, y) { return false }
    return true
}

@inline(__always)
func asciiCaseInsensitiveEqual(_ x: UInt8, _ y: UInt8) -> Bool {
    if x == y { return true }
    let lx = (x >= 65 && x <= 90) ? x | 0x20 : x
    let ly = (y >= 65 && y <= 90) ? y | 0x20 : y
    return lx == ly
}

/// Who is on the other end of a connection.
public enum Peer: Sendable, Equatable, CustomStringConvertible {
    /// A TCP peer: numeric address (IPv4 or IPv6 text) and port.
    case tcp(address: String, port: UInt16)
    /// A Unix-socket peer with its kernel-reported credentials (`SO_PEERCRED`).
    case unix(pid: Int32, uid: UInt32, gid: UInt32)

    public var description: String {
        switch self {
        case .tcp(let a, let p): return a.contains(":") ? "[\(a)]:\(p)" : "\(a):\(p)"
        case .unix(let pid, let uid, let gid): return "unix(pid=\(pid),uid=\(uid),gid=\(gid))"
        }
    }
}

/// Standard reason phrases for the status codes this server sends.
public func reasonPhrase(_ status: Int) -> String {
    switch status {
    case 100: return "Continue"
    case 200: return "OK"
    case 201: return "Created"
    case 202: return "Accepted"
    case 204: return "No Content"
    case 206: return "Partial Content"
    case 301: return "Moved Permanently"
    case 302: return "Found"
    case 304: return "Not Modified"
    case 307: return "Temporary Redirect"
    case 308: return "Permanent Redirect"
    case 400: return "Bad Request"
    case 401: return "Unauthorized"
    case 403: return "Forbidden"
    case 404: return "Not Found"
    case 405: return "Method Not Allowed"
    case 406: return "Not Acceptable"
    case 408: return "Request Timeout"
    case 409: return "Conflict"
    case 410: return "Gone"
    case 411: return "Length Required"
    case 413: return "Content Too Large"
    case 414: return "URI Too Long"
    case 415: return "Unsupported Media Type"
    case 416: return "Range Not Satisfiable"
    case 417: return "Expectation Failed"
    case 422: return "Unprocessable Content"
    case 429: return "Too Many Requests"
    case 431: return "Request Header Fields Too Large"
    case 500: return "Internal Server Error"
    case 501: return "Not Implemented"
    case 502: return "Bad Gateway"
    case 503: return "Service Unavailable"
    case 504: return "Gateway Timeout"
    case 505: return "HTTP Version Not Supported"
    default: return "Status \(status)"
    }
}

/// Appends a header name or value; handlers must not be able to inject header lines, so CR and LF are dropped.
@inline(__always)
func appendFieldPart(_ o: inout [UInt8], _ s: String) {
    var s = s
    s.withUTF8 { b in
        guard let base = b.baseAddress else { return }
        if memchr(base, 0x0D, b.count) == nil && memchr(base, 0x0A, b.count) == nil {
            o.append(contentsOf: b)
        } else {
            for c in b where c != 0x0D && c != 0x0A { o.append(c) }
        }
    }
}

/// Appends a non-negative integer in decimal without going through a String.
@inline(__always)
func appendDecimal(_ o: inout [UInt8], _ value: Int) {
    var v = max(0, value)
    var digits: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8,
                 UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8) =
        (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
    var n = 0
    withUnsafeMutableBytes(of: &digits) { d in
        repeat {
            d[19 - n] = UInt8(ascii: "0") + UInt8(v % 10)
            v /= 10
            n += 1
        } while v > 0
        o.append(contentsOf: d[(20 - n)...])
    }
}

/// `HTTP/1.1 200 OK\r\n`, built once per status code.
private let statusLines: [[UInt8]] = (0..<600).map { Array("HTTP/1.1 \($0) \(reasonPhrase($0))\r\n".utf8) }

func statusLine(_ status: Int) -> [UInt8] {
    if status >= 100 && status < 600 { return statusLines[status] }
    return Array("HTTP/1.1 \(status) \(reasonPhrase(status))\r\n".utf8)
}
