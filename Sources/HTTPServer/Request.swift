/// A complete request as handlers see it.
public struct Request: Sendable {
    public let head: RequestHead
    public let body: RequestBody
    public let peer: Peer
    /// Which listener it arrived on (`"tcp"` or `"unix"`), for policies that differ by transport.
    public let listener: String
    /// Path parameters from the route pattern (`{id}` → `params["id"]`), percent-decoded.
    public var params: PathParameters = [:]
    /// The route pattern that matched (`/api/sessions/{id}`), or nil.
    public var route: String?
    /// The request id: the client's `X-Request-ID` when sane, else one generated here.
    public let requestID: String

    public var method: HTTPMethod { head.method }
    public var path: String { head.path }
    public var headers: HTTPHeaders { head.headers }

    public init(head: RequestHead, body: RequestBody, peer: Peer, listener: String, requestID: String) {
        self.head = head
        self.body = body
        self.peer = peer
        self.listener = listener
        self.requestID = requestID
    }

    /// Query parameters, percent-decoded, in order.
    public var queryItems: [(name: String, value: String)] { QueryString.parse(head.query) }

    /// The first value of a query parameter.
    public func query(_ name: String) -> String? {
        queryItems.first { $0.name == name }?.value
    }
}

/// Path parameters by name. Routes have one or two, kept inline: a dictionary cost an allocation and two
/// hashes per request.
public struct PathParameters: Sendable, ExpressibleByDictionaryLiteral {
    private var first: (name: String, value: String)?
    private var second: (name: String, value: String)?
    private var more: [(name: String, value: String)] = []

    public init(dictionaryLiteral elements: (String, String)...) {
        for (n, v) in elements { self[n] = v }
    }

    public subscript(name: String) -> String? {
        get {
            if let f = first, f.name == name { return f.value }
            if let s = second, s.name == name { return s.value }
            return more.first { $0.name == name }?.value
        }
        set {
            more.removeAll { $0.name == name }
            if first?.name == name { first = nil }
            if second?.name == name { second = nil }
            guard let newValue else { return }
            if first == nil {
                first = (name, newValue)
            } else if second == nil {
                second = (name, newValue)
            } else {
                more.append((name, newValue))
            }
        }
    }
}

/// `application/x-www-form-urlencoded`-style query parsing (`+` is a space in queries).
public enum QueryString {
    public static func parse(_ query: String) -> [(name: String, value: String)] {
        if query.isEmpty { return [] }
        return query.split(separator: "&", omittingEmptySubsequences: true).map { pair in
            if let eq = pair.firstIndex(of: "=") {
                return (decode(pair[..<eq], plusIsSpace: true), decode(pair[pair.index(after: eq)...], plusIsSpace: true))
            }
            return (decode(pair, plusIsSpace: true), "")
        }
    }

    /// Percent-decodes; invalid escapes are kept literally; invalid UTF-8 becomes U+FFFD.
    public static func decode(_ s: Substring, plusIsSpace: Bool) -> String {
        if !s.utf8.contains(UInt8(ascii: "%")) && !(plusIsSpace && s.utf8.contains(UInt8(ascii: "+"))) {
            return String(s)
        }
        var out: [UInt8] = []
        out.reserveCapacity(s.utf8.count)
        let bytes = Array(s.utf8)
        var i = 0
        while i < bytes.count {
            let b = bytes[i]
            if b == UInt8(ascii: "%"), i + 2 < bytes.count, let h = hex(bytes[i + 1]), let l = hex(bytes[i + 2]) {
                out.append(h << 4 | l)
                i += 3
            } else if b == UInt8(ascii: "+") && plusIsSpace {
                out.append(0x20)
                i += 1
            } else {
                out.append(b)
                i += 1
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    private static func hex(_ b: UInt8) -> UInt8? {
        switch b {
        case 0x30...0x39: return b - 0x30
        case 0x41...0x46: return b - 0x41 + 10
        case 0x61...0x66: return b - 0x61 + 10
        default: return nil
        }
    }
}
