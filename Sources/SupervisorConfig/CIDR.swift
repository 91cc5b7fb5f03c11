import Foundation
import Glibc

/// An IPv4 or IPv6 network (`10.0.0.0/8`, `::1/128`; a bare address is a /32 or /128).
public struct CIDR: Sendable, Equatable, CustomStringConvertible {
    public let address: [UInt8]
    public let prefix: Int
    private let text: String

    public init?(_ s: String) {
        let parts = s.trimmingCharacters(in: .whitespaces).split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 1 || parts.count == 2, let a = CIDR.parseAddress(String(parts[0])) else { return nil }
        let maxPrefix = a.count * 8
        let p: Int
        if parts.count == 2 {
            guard let v = Int(parts[1]), (0...maxPrefix).contains(v), parts[1].allSatisfy(\.isNumber) else { return nil }
            p = v
        } else {
            p = maxPrefix
        }
        address = a
        prefix = p
        text = String(parts[0]) + "/\(p)"
    }

    public var description: String { text }

    /// Whether the textual address `ip` is inside this network (IPv4-mapped IPv6 counts as IPv4).
    public func contains(_ ip: String) -> Bool {
        guard var b = CIDR.parseAddress(ip) else { return false }
        if b.count == 16 && address.count == 4 && b[0..<10].allSatisfy({ $0 == 0 }) && b[10] == 0xFF && b[11] == 0xFF { b = Array(b[12...]) }
        guard b.count == address.count else { return false }
        var bits = prefix
        for i in 0..<b.count where bits > 0 {
            let mask: UInt8 = bits >= 8 ? 0xFF : UInt8(0xFF << (8 - bits))
            if b[i] & mask != address[i] & mask { return false }
            bits -= 8
        }
        return true
    }

    /// 4 or 16 bytes, or nil.
    public static func parseAddress(_ s: String) -> [UInt8]? {
        var v4 = in_addr()
        if inet_pton(AF_INET, s, &v4) == 1 { return withUnsafeBytes(of: v4) { Array($0) } }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, s, &v6) == 1 { return withUnsafeBytes(of: v6) { Array($0) } }
        return nil
    }
}
