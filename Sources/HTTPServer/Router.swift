import Glibc

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
    /// Which of two matching routes wins: more literal segments, then ending in a literal.
    let rank: Int
    /// Each segment's bytes when literal, nil for a parameter (matched against the path's bytes in place).
    let literalBytes: [[UInt8]?]

    init(method: HTTPMethod, pattern: String, segments: [Segment], bodyLimit: Int, handler: @escaping Handler, doc: RouteDoc) {
        self.method = method
        self.pattern = pattern
        self.segments = segments
        self.bodyLimit = bodyLimit
        self.handler = handler
        self.doc = doc
        literalBytes = segments.map { if case .literal(let l) = $0 { Array(l.utf8) } else { nil } }
        let literalCount = literalBytes.reduce(0) { $1 == nil ? $0 : $0 + 1 }
        rank = literalCount * 2 + (literalBytes.last.map { $0 == nil ? 0 : 1 } ?? 1)
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
    /// Routes by segment count: a path is matched only against routes with as many segments, byte by byte
    /// over the path where it lies (no split into strings, no hashing: this runs for every request).
    private var bySegmentCount: [[Route]] = []

    /// Paths with more segments than this match nothing (no route is that deep).
    static let maxSegments = 32

    public init() {}

    /// Adds a route answered later through its `Responder`.
    public mutating func add(_ method: HTTPMethod, _ pattern: String, bodyLimit: Int = 64 * 1024, doc: RouteDoc, handler: @escaping Handler) {
        let segments = Router.split(pattern).map { s -> Route.Segment in
            if s.hasPrefix("{") && s.hasSuffix("}") { return .parameter(String(s.dropFirst().dropLast())) }
            return .literal(String(s))
        }
        precondition(!routes.contains { $0.method == method && $0.segments == segments }, "duplicate route \(method) \(pattern)")
        precondition(segments.count <= Router.maxSegments, "route \(pattern) is deeper than \(Router.maxSegments) segments")
        let route = Route(method: method, pattern: pattern, segments: segments, bodyLimit: bodyLimit, handler: handler, doc: doc)
        routes.append(route)
        while bySegmentCount.count <= segments.count { bySegmentCount.append([]) }
        bySegmentCount[segments.count].append(route)
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
        if let r = path.utf8.withContiguousStorageIfAvailable({ resolve(method: method, bytes: $0) }) { return r }
        return Array(path.utf8).withUnsafeBufferPointer { resolve(method: method, bytes: $0) }
    }

    private func resolve(method: HTTPMethod, bytes: UnsafeBufferPointer<UInt8>) -> RouteResolution {
        // Segment bounds, on the stack: `/a/b/` → a, b; `/` → none. Empty segments in the middle are kept
        // (and match nothing).
        withUnsafeTemporaryAllocation(of: Range<Int>.self, capacity: Router.maxSegments + 1) { bounds in
            var count = 0
            var start = 0
            for i in 0...bytes.count {
                guard i == bytes.count || bytes[i] == UInt8(ascii: "/") else { continue }
                if count > Router.maxSegments { return .notFound }
                bounds[count] = start..<i
                count += 1
                start = i + 1
            }
            var first = 0
            if count > 0 && bounds[0].isEmpty { first = 1 }
            if count > first && bounds[count - 1].isEmpty { count -= 1 }
            let parts = UnsafeBufferPointer(rebasing: bounds[first..<count])
            guard parts.count < bySegmentCount.count, parts.count <= Router.maxSegments else { return .notFound }
            let candidates = bySegmentCount[parts.count]
            var getMatch: Route?
            var exact: Route?
            var otherMethods = false
            for r in candidates where Router.matches(r, bytes, parts) {
                if r.method == method {
                    // The most specific pattern wins, whatever the order of registration.
                    if exact.map({ $0.rank < r.rank }) ?? true { exact = r }
                } else {
                    otherMethods = true
                    if r.method == .GET, getMatch.map({ $0.rank < r.rank }) ?? true { getMatch = r }
                }
            }
            if let exact { return .matched(exact, Router.parameters(exact, bytes, parts)) }
            if method == .HEAD, let g = getMatch { return .matched(g, Router.parameters(g, bytes, parts)) }
            if !otherMethods { return .notFound }
            var allowed: [String] = []
            for r in candidates where Router.matches(r, bytes, parts) && !allowed.contains(r.method.rawValue) {
                allowed.append(r.method.rawValue)
            }
            if allowed.contains("GET") && !allowed.contains("HEAD") { allowed.append("HEAD") }
            if !allowed.contains("OPTIONS") { allowed.append("OPTIONS") }
            return .methodNotAllowed(allowed.sorted())
        }
    }

    /// Literal segments equal byte for byte, parameter segments not empty.
    private static func matches(_ route: Route, _ bytes: UnsafeBufferPointer<UInt8>, _ parts: UnsafeBufferPointer<Range<Int>>) -> Bool {
        for (i, part) in parts.enumerated() {
            guard let literal = route.literalBytes[i] else {
                if part.isEmpty { return false }
                continue
            }
            guard literal.count == part.count else { return false }
            let equal = literal.withUnsafeBufferPointer { l in memcmp(l.baseAddress!, bytes.baseAddress! + part.lowerBound, part.count) == 0 }
            if !equal { return false }
        }
        return true
    }

    /// The percent-decoded parameters of a matching path.
    private static func parameters(_ route: Route, _ bytes: UnsafeBufferPointer<UInt8>, _ parts: UnsafeBufferPointer<Range<Int>>) -> PathParameters {
        var params: PathParameters = [:]
        for (i, part) in parts.enumerated() {
            guard case .parameter(let name) = route.segments[i] else { continue }
            let raw = String(decoding: UnsafeBufferPointer(rebasing: bytes[part]), as: UTF8.self)
            params[name] = raw.utf8.contains(UInt8(ascii: "%")) ? QueryString.decode(raw[...], plusIsSpace: false) : raw
        }
        return params
    }

    /// `/a/b/` → `["a", "b"]`; `/` → `[]`. Empty segments in the middle are kept (and match nothing).
    static func split(_ path: String) -> [Substring] {
        var parts = path.split(separator: "/", omittingEmptySubsequences: false)
        if parts.first == "" { parts.removeFirst() }
        if parts.last == "" { parts.removeLast() }
        return parts
    }
}
