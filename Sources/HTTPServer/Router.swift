/// Answers a request, now or later, from any thread, exactly once.
public typealias Handler = @Sendable (Request, Responder) -> Void

/// Documentation of a route; the OpenAPI document is generated from it, so the two cannot drift.
public struct RouteDoc: Sendable {
    public var summary: String
    public var tags: [String]
    /// Status codes and what they mean (`"200": "the session"`).
    public var responses: [(String, String)]
    /// Query parameters and what they mean.
    public var query: [(String, String)]
    /// Whether the route is open to anyone (no credentials).
    public var isPublic: Bool
    /// Response media type for the success case.
    public var produces: String

    public init(
        _ summary: String, tags: [String] = [], responses: [(String, String)] = [("200", "OK")],
        query: [(String, String)] = [], isPublic: Bool = false, produces: String = "application/json"
    ) {
        self.summary = summary
        self.tags = tags
        self.responses = responses
        self.query = query
        self.isPublic = isPublic
        self.produces = produces
    }
}

/// One route: method, pattern with `{param}` segments, body limit, handler, documentation. A class: every
/// request carries its route, and passing a reference is one retain where a struct copy was a dozen.
public final class Route: Sendable {
    public let method: HTTPMethod
    public let pattern: String
    public let segments: [Segment]
    public let bodyLimit: Int
    public let handler: Handler
    public let doc: RouteDoc
    let literalCount: Int

    init(method: HTTPMethod, pattern: String, segments: [Segment], bodyLimit: Int, handler: @escaping Handler, doc: RouteDoc) {
        self.method = method
        self.pattern = pattern
        self.segments = segments
        self.bodyLimit = bodyLimit
        self.handler = handler
        self.doc = doc
        literalCount = segments.reduce(0) { if case .literal = $1 { $0 + 1 } else { $0 } }
    }

    public enum Segment: Sendable, Equatable {
        case literal(String)
        case parameter(String)
    }
}

/// What the router made of a method and path.
public enum RouteResolution: Sendable {
    case matched(Route, PathParameters)
    /// The path exists, the method does not: answer 405 with these methods in `Allow`.
    case methodNotAllowed([String])
    case notFound
}

/// Route table. Trailing slashes are insignificant; path parameters are percent-decoded; HEAD is served by
/// the GET route when there is no HEAD route of its own.
public struct Router: Sendable {
    public private(set) var routes: [Route] = []
    /// Routes by segment count and last segment: those ending in a literal under that literal, those ending
    /// in a parameter under nil. A path is matched only against routes that could match it.
    private var byShape: [Shape: [Int]] = [:]

    private struct Shape: Hashable {
        let count: Int
        let last: Substring?
    }
    /// Routes without parameters by normalised path: most requests resolve with one hash lookup.
    private var staticRoutes: [String: [Int]] = [:]

    public init() {}

    /// Adds a route answered later through its `Responder`.
    public mutating func add(_ method: HTTPMethod, _ pattern: String, bodyLimit: Int = 64 * 1024, doc: RouteDoc, handler: @escaping Handler) {
        let segments = Router.split(pattern).map { s -> Route.Segment in
            if s.hasPrefix("{") && s.hasSuffix("}") { return .parameter(String(s.dropFirst().dropLast())) }
            return .literal(String(s))
        }
        precondition(!routes.contains { $0.method == method && $0.segments == segments }, "duplicate route \(method) \(pattern)")
        routes.append(Route(method: method, pattern: pattern, segments: segments, bodyLimit: bodyLimit, handler: handler, doc: doc))
        let last: Substring? = if case .literal(let l)? = segments.last { Substring(l) } else { nil }
        byShape[Shape(count: segments.count, last: last), default: []].append(routes.count - 1)
        if segments.allSatisfy({ if case .literal = $0 { true } else { false } }) {
            staticRoutes["/" + segments.map { if case .literal(let l) = $0 { l } else { "" } }.joined(separator: "/"), default: []]
                .append(routes.count - 1)
        }
    }

    /// Adds a route answered synchronously; a thrown `Problem` becomes its problem-details response.
    public mutating func add(
        _ method: HTTPMethod, _ pattern: String, bodyLimit: Int = 64 * 1024, doc: RouteDoc,
        sync: @escaping @Sendable (Request) throws(Problem) -> Response
    ) {
        add(method, pattern, bodyLimit: bodyLimit, doc: doc) { req, responder in
            do throws(Problem) {
                responder.send(try sync(req))
            } catch {
                responder.send(error)
            }
        }
    }

    public func resolve(method: HTTPMethod, path: String) -> RouteResolution {
        // Fast path: a parameterless route with this exact method. A literal route wins over a pattern
        // with a parameter in the same place, so the slow path below cannot disagree with it.
        let trimmed = path.utf8.count > 1 && path.utf8.last == UInt8(ascii: "/") ? String(path.dropLast()) : path
        if let candidates = staticRoutes[trimmed] {
            for i in candidates where routes[i].method == method { return .matched(routes[i], [:]) }
        }
        let parts = Router.split(path)
        let endingInLiteral = byShape[Shape(count: parts.count, last: parts.last)] ?? []
        let endingInParameter = byShape[Shape(count: parts.count, last: nil)] ?? []
        if endingInLiteral.isEmpty && endingInParameter.isEmpty { return .notFound }
        var getMatch: Route?
        var exact: Route?
        var otherMethods = false
        // Which routes match is decided without allocating; only the winner's parameters are decoded, and the
        // methods for `Allow` are gathered only when none matched.
        func consider(_ i: Int) {
            let r = routes[i]
            guard Router.matches(r.segments, parts) else { return }
            if r.method == method {
                // The most specific pattern (most literal segments) wins, whatever the order of registration.
                if exact.map({ $0.literalCount < r.literalCount }) ?? true { exact = r }
                return
            }
            otherMethods = true
            if r.method == .GET, getMatch.map({ $0.literalCount < r.literalCount }) ?? true { getMatch = r }
        }
        for i in endingInLiteral { consider(i) }
        for i in endingInParameter { consider(i) }
        if let exact { return .matched(exact, Router.parameters(exact.segments, parts)) }
        if method == .HEAD, let g = getMatch { return .matched(g, Router.parameters(g.segments, parts)) }
        if !otherMethods { return .notFound }
        var allowed: [String] = []
        for i in endingInLiteral + endingInParameter where Router.matches(routes[i].segments, parts) && !allowed.contains(routes[i].method.rawValue) {
            allowed.append(routes[i].method.rawValue)
        }
        if allowed.contains("GET") && !allowed.contains("HEAD") { allowed.append("HEAD") }
        if !allowed.contains("OPTIONS") { allowed.append("OPTIONS") }
        return .methodNotAllowed(allowed.sorted())
    }

    /// Literal segments equal, parameter segments not empty.
    private static func matches(_ segments: [Route.Segment], _ parts: [Substring]) -> Bool {
        for (s, p) in zip(segments, parts) {
            switch s {
            case .literal(let l): if l != p { return false }
            case .parameter: if p.isEmpty { return false }
            }
        }
        return true
    }

    /// The percent-decoded parameters of a matching path.
    private static func parameters(_ segments: [Route.Segment], _ parts: [Substring]) -> PathParameters {
        var params: PathParameters = [:]
        for (s, p) in zip(segments, parts) {
            if case .parameter(let name) = s {
                params[name] = p.utf8.contains(UInt8(ascii: "%")) ? QueryString.decode(p, plusIsSpace: false) : String(p)
            }
        }
        return params
    }

    /// `/a/b/` → `["a", "b"]`; `/` → `[]`. Empty segments in the middle are kept (and match nothing).
    static func split(_ path: String) -> [Substring] {
        var parts: [Substring] = []
        parts.reserveCapacity(8)
        let u = path.utf8
        var start = u.startIndex
        var i = u.startIndex
        while i != u.endIndex {
            if u[i] == UInt8(ascii: "/") {
                parts.append(Substring(path[start..<i]))
                start = u.index(after: i)
            }
            i = u.index(after: i)
        }
        parts.append(Substring(path[start..<u.endIndex]))
        if parts.first == "" { parts.removeFirst() }
        if parts.last == "" { parts.removeLast() }
        return parts
    }
}
