/// How a request's body is delimited (RFC 9112 §6).
public enum BodyFraming: Sendable, Equatable {
    case none
    case length(Int)
    case chunked
}

/// A parsed request line and header section.
///
/// A class: a request's head is handed from the decoder to the connection, the router, the `Request` and the
/// handler, and as a struct of five strings and an array it cost dozens of reference-count operations per
/// request in copies (seen in profiles of the heartbeat route).
public final class RequestHead: @unchecked Sendable {
    // @unchecked Sendable: the fields are set only by the parser (this module), before the head is handed to
    // anyone; from then on it is never mutated, so sharing it between threads is safe.
    public internal(set) var method: HTTPMethod
    /// The request target as sent (origin-form; absolute-form is reduced to its path and query).
    public internal(set) var target: String
    /// The raw path (before `?`), still percent-encoded.
    public internal(set) var path: String
    /// The raw query (after `?`), or empty.
    public internal(set) var query: String
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    public internal(set) var versionMinor: Int
    public internal(set) var headers: HTTPHeaders
    public internal(set) var framing: BodyFraming
    /// The client asked for `100 Continue` before sending its body.
    public internal(set) var expectContinue: Bool
    /// Whether the client allows the connection to stay open after this exchange.
    public internal(set) var keepAlive: Bool

    public init(
        method: HTTPMethod, target: String, path: String, query: String, versionMinor: Int,
        headers: HTTPHeaders, framing: BodyFraming, expectContinue: Bool, keepAlive: Bool
    ) {
        self.method = method
        self.target = target
        self.path = path
        self.query = query
        self.versionMinor = versionMinor
        self.headers = headers
        self.framing = framing
        self.expectContinue = expectContinue
        self.keepAlive = keepAlive
    }
}

/// A protocol error found while parsing: the status to answer with, a stable code, a message for the client.
/// After any of these the connection is closed: the framing of what follows cannot be trusted.
public struct HTTPParseError: Error, Equatable, Sendable, CustomStringConvertible {
    public let status: Int
    public let code: String
    public let message: String

    public init(_ status: Int, _ code: String, _ message: String) {
        self.status = status
        self.code = code
        self.message = message
    }

    public var description: String { "\(status) \(code): \(message)" }

    static func bad(_ message: String) -> HTTPParseError { HTTPParseError(400, "bad_request", message) }
}

/// Parser limits. Defaults follow common servers (nginx: 8 KiB request line; 32 KiB of header fields).
public struct ParserLimits: Sendable {
    public var maxRequestLine = 8 * 1024
    public var maxHeaderBytes = 32 * 1024
    public var maxHeaderCount = 100
    public var maxChunkLine = 4 * 1024
    public var maxTrailerBytes = 8 * 1024
    public init() {}
}
