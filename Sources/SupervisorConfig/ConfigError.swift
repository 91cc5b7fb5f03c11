/// A configuration problem: one message that names the option and where its value came from. The daemon
/// prints it and exits with status 2 before binding or writing anything.
public struct ConfigError: Error, CustomStringConvertible, Sendable, Equatable {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// Where an effective value came from.
public enum ValueSource: Sendable, Equatable, CustomStringConvertible {
    case defaultValue
    case derived(String)
    case file(path: String, line: Int)
    case environment(String)
    case flag(String)

    public var description: String {
        switch self {
        case .defaultValue: return "default"
        case .derived(let why): return "default (\(why))"
        case .file(let p, let l): return "file \(p):\(l)"
        case .environment(let n): return "environment \(n)"
        case .flag(let f): return "flag \(f)"
        }
    }
}
