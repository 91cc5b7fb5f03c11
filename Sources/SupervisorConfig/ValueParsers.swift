import Foundation

/// Parsers for option values. Each throws a message that says what was expected.
public enum ValueParsers {
    /// `4G` = 4294967296: suffixes K, M, G, T are powers of 1024, as systemd reads them. `infinity` is Int.max.
    public static func size(_ s: String) throws(ConfigError) -> Int {
        let t = s.trimmingCharacters(in: .whitespaces)
        if t == "infinity" { return Int.max }
        guard let last = t.last else { throw ConfigError("expected a size such as 512M or 4G") }
        var digits = t
        var mult = 1
        switch last {
        case "K", "k": mult = 1 << 10
        case "M", "m": mult = 1 << 20
        case "G", "g": mult = 1 << 30
        case "T", "t": mult = 1 << 40
        case "B", "b": mult = 1
        default: mult = 0
        }
        if mult != 0 { digits = String(t.dropLast()) } else { mult = 1 }
        guard !digits.isEmpty, digits.allSatisfy(\.isASCII), digits.allSatisfy(\.isNumber), let n = Int(digits) else {
            throw ConfigError("expected a size such as 512M or 4G (K, M, G, T are powers of 1024)")
        }
        let (r, overflow) = n.multipliedReportingOverflow(by: mult)
        if overflow { throw ConfigError("size too large") }
        return r
    }

    /// Whole seconds, at least `minimum`.
    public static func seconds(_ s: String, minimum: Int = 1) throws(ConfigError) -> Int {
        var t = s.trimmingCharacters(in: .whitespaces)
        if t.hasSuffix("s") { t.removeLast() }
        guard !t.isEmpty, t.allSatisfy(\.isASCII), t.allSatisfy(\.isNumber), let n = Int(t), n >= minimum, n <= 315_360_000 else {
            throw ConfigError("expected a whole number of seconds, at least \(minimum)")
        }
        return n
    }

    public static func count(_ s: String, minimum: Int = 0, maximum: Int = 1_000_000) throws(ConfigError) -> Int {
        let t = s.trimmingCharacters(in: .whitespaces)
        guard !t.isEmpty, t.allSatisfy(\.isASCII), t.allSatisfy(\.isNumber), let n = Int(t), n >= minimum, n <= maximum else {
            throw ConfigError("expected a whole number from \(minimum) to \(maximum)")
        }
        return n
    }

    public static func percent(_ s: String) throws(ConfigError) -> Int {
        var t = s.trimmingCharacters(in: .whitespaces)
        if t.hasSuffix("%") { t.removeLast() }
        do {
            return try count(t, minimum: 1, maximum: 100_000)
        } catch {
            throw ConfigError("expected a percentage of one CPU, such as 200 or 200%")
        }
    }

    public static func flag(_ s: String) throws(ConfigError) -> Bool {
        switch s.trimmingCharacters(in: .whitespaces).lowercased() {
        case "1", "true", "yes", "on": return true
        case "0", "false", "no", "off": return false
        default: throw ConfigError("expected true or false")
        }
    }

    /// Octal permission bits, at most 0777.
    public static func mode(_ s: String) throws(ConfigError) -> UInt32 {
        let t = s.trimmingCharacters(in: .whitespaces)
        guard !t.isEmpty, t.count <= 4, t.allSatisfy({ ("0"..."7").contains($0) }), let m = UInt32(t, radix: 8), m <= 0o777 else {
            throw ConfigError("expected octal permissions such as 0660")
        }
        return m
    }

    /// `HOST:PORT`, `[V6]:PORT`, or `none` (nil).
    public static func listen(_ s: String) throws(ConfigError) -> ListenAddress? {
        let t = s.trimmingCharacters(in: .whitespaces)
        if t == "none" { return nil }
        let expected = "expected HOST:PORT (IPv6 as [ADDR]:PORT) or none"
        guard let colon = t.lastIndex(of: ":") else { throw ConfigError(expected) }
        var host = String(t[..<colon])
        let portText = String(t[t.index(after: colon)...])
        guard !portText.isEmpty, portText.allSatisfy(\.isASCII), portText.allSatisfy(\.isNumber), let port = Int(portText), port <= 65535 else {
            throw ConfigError(expected + ": bad port")
        }
        if host.hasPrefix("[") {
            guard host.hasSuffix("]") else { throw ConfigError(expected) }
            host = String(host.dropFirst().dropLast())
            guard isIPv6(host) else { throw ConfigError(expected + ": not an IPv6 address") }
        } else if host == "localhost" {
            host = "127.0.0.1"
        } else {
            guard isIPv4(host) else { throw ConfigError(expected + ": HOST must be a numeric address or localhost") }
        }
        return ListenAddress(host: host, port: UInt16(port))
    }

    /// A browser origin: `scheme://host[:port]`, nothing after.
    public static func origin(_ s: String) throws(ConfigError) -> String {
        let t = s.trimmingCharacters(in: .whitespaces)
        let expected = "expected an origin such as https://app.example.org (scheme, host, optional port; no path)"
        guard let r = t.range(of: "://") else { throw ConfigError(expected) }
        let scheme = t[..<r.lowerBound].lowercased()
        let rest = t[r.upperBound...]
        guard scheme == "http" || scheme == "https", !rest.isEmpty, !rest.contains("/"), !rest.contains("?"), !rest.contains("#"),
            !rest.contains("@"), rest.allSatisfy({ $0.isASCII && !$0.isWhitespace })
        else { throw ConfigError(expected) }
        return scheme + "://" + rest.lowercased()
    }

    static func isIPv4(_ s: String) -> Bool {
        let parts = s.split(separator: ".", omittingEmptySubsequences: false)
        return parts.count == 4 && parts.allSatisfy { p in
            !p.isEmpty && p.count <= 3 && p.allSatisfy(\.isNumber) && (Int(p) ?? 256) <= 255
        }
    }

    static func isIPv6(_ s: String) -> Bool {
        !s.isEmpty && s.contains(":") && s.allSatisfy { $0.isHexDigit || $0 == ":" || $0 == "." }
    }
}

/// A TCP listen address.
public struct ListenAddress: Sendable, Equatable, CustomStringConvertible {
    public let host: String
    public let port: UInt16
    public var isLoopback: Bool { host.hasPrefix("127.") || host == "::1" }
    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}
