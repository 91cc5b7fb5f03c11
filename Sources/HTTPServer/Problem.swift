/// An RFC 9457 problem-details error: the one way every error leaves this server.
public struct Problem: Error, Sendable {
    public struct FieldError: Sendable {
        public let field: String
        public let message: String
        public init(field: String, message: String) {
            self.field = field
            self.message = message
        }
    }

    public let status: Int
    /// Stable snake_case code clients branch on.
    public let code: String
    public let detail: String
    public var errors: [FieldError]
    /// Extra headers (`Allow`, `Retry-After`...).
    public var headers: [(String, String)]
    /// Extension members (RFC 9457 §3.2), after the standard ones.
    public var extensions: [(String, JSON)] = []

    public init(_ status: Int, _ code: String, _ detail: String, errors: [FieldError] = [], headers: [(String, String)] = []) {
        self.status = status
        self.code = code
        self.detail = detail
        self.errors = errors
        self.headers = headers
    }

    public static func validation(_ errors: [FieldError], detail: String = "The request is not valid.") -> Problem {
        Problem(400, "validation_error", detail, errors: errors)
    }

    public static func validation(field: String, _ message: String) -> Problem {
        validation([FieldError(field: field, message: message)], detail: "\(field): \(message)")
    }

    public static func notFound(_ detail: String = "No such resource.") -> Problem {
        Problem(404, "resource_not_found", detail)
    }

    /// The response: `application/problem+json` with `type`, `title`, `status`, `detail`, `code`, `request_id`.
    public func response(requestID: String) -> Response {
        var members: [(String, JSON)] = [
            ("type", .string("https://chimerax-supervisor.invalid/problems/\(code)")),
            ("title", .string(reasonPhrase(status))),
            ("status", .int(status)),
            ("detail", .string(detail)),
            ("code", .string(code)),
            ("request_id", .string(requestID)),
        ]
        members.append(contentsOf: extensions)
        if !errors.isEmpty {
            members.append(("errors", .array(errors.map { .object([("field", .string($0.field)), ("message", .string($0.message))]) })))
        }
        var h = HTTPHeaders([("Content-Type", "application/problem+json")])
        for (n, v) in headers { h.add(n, v) }
        return Response(status: status, headers: h, body: JSON.object(members).serialized())
    }
}

extension Response {
    /// A JSON response (`application/json; charset=utf-8`).
    public static func json(_ value: JSON, status: Int = 200) -> Response {
        Response(status: status, headers: jsonHeaders, body: value.serialized())
    }

    /// A JSON response whose text is already written (`JSONObjectWriter`).
    public static func json(serialized body: [UInt8], status: Int = 200) -> Response {
        Response(status: status, headers: jsonHeaders, body: body)
    }

    /// Shared by every JSON answer (one header list, not one per response).
    private static let jsonHeaders = HTTPHeaders([("Content-Type", "application/json; charset=utf-8")])
}

extension Request {
    /// The body as a JSON object, or a `400 validation_error` / `415` problem that says what is wrong.
    public func jsonObject(limit: Int = 1 << 20) throws(Problem) -> JSON {
        if let ct = headers["Content-Type"] {
            let mediaType = ct.split(separator: ";").first.map { FramingRules.trim($0).lowercased() } ?? ""
            if mediaType != "application/json" && !mediaType.hasSuffix("+json") {
                throw Problem(415, "unsupported_format", "Send the body as application/json.")
            }
        }
        guard let bytes = body.readAll(limit: limit) else {
            throw Problem(413, "payload_too_large", "The JSON body is larger than \(limit) bytes.")
        }
        if bytes.isEmpty { return .object([]) }
        let value: JSON
        do {
            value = try JSON.parse(bytes)
        } catch {
            throw Problem.validation([Problem.FieldError(field: "body", message: "invalid JSON: \(error)")],
                                     detail: "The body is not valid JSON: \(error).")
        }
        guard case .object = value else {
            throw Problem.validation(field: "body", "must be a JSON object")
        }
        return value
    }
}
