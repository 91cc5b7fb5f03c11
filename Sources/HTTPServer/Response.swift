/// A response. The server adds `Date`, `Content-Length`, `Connection` and the request id.
public struct Response: Sendable {
    public var status: Int
    public var headers: HTTPHeaders
    public var body: [UInt8]
    /// Set by the server for a streamed response (no Content-Length).
    var streaming = false

    public init(status: Int, headers: HTTPHeaders = HTTPHeaders(), body: [UInt8] = []) {
        self.status = status
        self.headers = headers
        self.body = body
    }

    public init(status: Int, contentType: String, body: String) {
        self.init(status: status, headers: HTTPHeaders([("Content-Type", contentType)]), body: Array(body.utf8))
    }

    /// Whether this status carries no body by definition (RFC 9110 §6.4.1).
    var forbidsBody: Bool { status == 204 || status == 304 || (100..<200).contains(status) }
}
