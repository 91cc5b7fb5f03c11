/// Limits and timeouts of the HTTP server. Every input path has a bound.
public struct ServerConfiguration: Sendable {
    public var limits = ParserLimits()
    /// Most connections open at once; past it the listeners pause (the kernel backlog holds new ones).
    public var maxConnections = 16_384
    /// From the first byte of a request head to its end.
    public var headerTimeout: Double = 10
    /// Longest pause between two reads of a request body.
    public var bodyIdleTimeout: Double = 30
    /// How long an idle keep-alive connection is kept.
    public var keepAliveTimeout: Double = 75
    /// Longest a client may leave a response unread.
    public var writeTimeout: Double = 60
    /// Bodies up to this size stay in memory; larger ones go to an unlinked temporary file.
    public var memoryBodyThreshold = 64 * 1024
    /// Where bodies are spooled (must support O_TMPFILE).
    public var spoolDirectory = "/tmp"
    /// Most unparsed input buffered per connection while a request is being handled.
    public var maxBufferedInput = 1 << 20
    /// Unsent bytes a streamed response may accumulate before a client that does not read is cut off.
    public var maxStreamBacklog = 1 << 20
    /// Headers added to every response that does not set them itself.
    public var defaultHeaders: [(String, String)] = []
    /// Event loop threads.
    public var eventLoops = 1
    /// Called with every response before it is written, errors and preflights included (CORS headers).
    public var responseFilter: (@Sendable (RequestHead, inout Response) -> Void)?

    public init() {}
}

/// Log levels, as syslog orders them.
public enum LogLevel: Int, Sendable, Comparable, CaseIterable {
    case debug = 7, info = 6, notice = 5, warning = 4, error = 3

    public static func < (a: LogLevel, b: LogLevel) -> Bool { a.rawValue > b.rawValue }

    public var name: String {
        switch self {
        case .debug: return "debug"
        case .info: return "info"
        case .notice: return "notice"
        case .warning: return "warning"
        case .error: return "error"
        }
    }
}

/// What the server reports to the application: finished requests (for metrics) and log records.
public protocol HTTPServerObserver: Sendable {
    func requestCompleted(route: String?, method: HTTPMethod, status: Int, nanos: UInt64)
    func log(_ level: LogLevel, _ message: String, _ fields: [String: String])
}
