import Testing
@testable import HTTPServer

@Suite("Router")
struct RouterTests {
    func router() -> Router {
        var r = Router()
        let doc = RouteDoc("t")
        r.add(.GET, "/api/sessions", doc: doc) { _ in Response(status: 200) }
        r.add(.POST, "/api/sessions", doc: doc) { _ in Response(status: 201) }
        r.add(.GET, "/api/sessions/{id}", doc: doc) { _ in Response(status: 200) }
        r.add(.DELETE, "/api/v1/auth/users/me/sessions/{id}", doc: doc) { _ in Response(status: 200) }
        return r
    }

    @Test func pathParametersArePercentDecoded() {
        guard case .matched(let route, let params) = router().resolve(method: .GET, path: "/api/sessions/a%2Fb") else {
            Issue.record("no match")
            return
        }
        #expect(route.pattern == "/api/sessions/{id}")
        #expect(params["id"] == "a/b")
    }

    @Test func trailingSlashIsInsignificant() {
        guard case .matched(_, let p) = router().resolve(method: .DELETE, path: "/api/v1/auth/users/me/sessions/7/") else {
            Issue.record("no match")
            return
        }
        #expect(p["id"] == "7")
        guard case .matched = router().resolve(method: .GET, path: "/api/sessions/") else {
            Issue.record("no match with trailing slash")
            return
        }
    }

    @Test func wrongMethodListsAllowedMethods() {
        guard case .methodNotAllowed(let allow) = router().resolve(method: .PUT, path: "/api/sessions") else {
            Issue.record("expected 405")
            return
        }
        #expect(allow == ["GET", "HEAD", "OPTIONS", "POST"])
    }

    @Test func headFallsBackToGet() {
        guard case .matched(let r, _) = router().resolve(method: .HEAD, path: "/api/sessions/x") else {
            Issue.record("HEAD not served")
            return
        }
        #expect(r.method == .GET)
    }

    @Test func unknownPathsAndEmptySegmentsAreNotFound() {
        guard case .notFound = router().resolve(method: .GET, path: "/api/nothing") else { Issue.record("expected 404"); return }
        guard case .notFound = router().resolve(method: .GET, path: "/api//sessions") else { Issue.record("expected 404"); return }
        guard case .notFound = router().resolve(method: .GET, path: "/api/sessions//") else { Issue.record("expected 404"); return }
    }

    @Test func literalSegmentsWinOverParametersWhateverTheOrder() {
        var r = Router()
        let doc = RouteDoc("t")
        r.add(.GET, "/api/sessions/{id}", doc: doc) { _ in Response(status: 200) }
        r.add(.GET, "/api/sessions/{id}/messages", doc: doc) { _ in Response(status: 200) }
        r.add(.GET, "/api/sessions/info", doc: doc) { _ in Response(status: 200) }
        r.add(.GET, "/api/{any}/x/messages", doc: doc) { _ in Response(status: 200) }
        r.add(.GET, "/api/sessions/info/messages", doc: doc) { _ in Response(status: 200) }
        for (path, pattern) in [("/api/sessions/info", "/api/sessions/info"), ("/api/sessions/info/", "/api/sessions/info"),
                                ("/api/sessions/abc", "/api/sessions/{id}"), ("/api/sessions/x/messages", "/api/sessions/{id}/messages"),
                                ("/api/sessions/info/messages", "/api/sessions/info/messages")] {
            for method in [HTTPMethod.GET, .HEAD] {
                guard case .matched(let route, _) = r.resolve(method: method, path: path) else {
                    Issue.record("\(method) \(path): no match")
                    continue
                }
                #expect(route.pattern == pattern, "\(method) \(path)")
            }
        }
        guard case .methodNotAllowed(let allow) = r.resolve(method: .POST, path: "/api/sessions/info") else {
            Issue.record("expected 405")
            return
        }
        #expect(allow == ["GET", "HEAD", "OPTIONS"])
    }

    @Test func theRootDeepPathsAndTiesBetweenPatterns() {
        var r = Router()
        let doc = RouteDoc("t")
        r.add(.GET, "/", doc: doc) { _ in Response(status: 200) }
        r.add(.GET, "/a/{x}", doc: doc) { _ in Response(status: 200) }
        r.add(.GET, "/{y}/b", doc: doc) { _ in Response(status: 200) }
        for path in ["/", ""] {
            guard case .matched(let root, _) = r.resolve(method: .GET, path: path) else {
                Issue.record("\(path.debugDescription): no match")
                continue
            }
            #expect(root.pattern == "/")
        }
        // Equally many literals: the pattern ending in a literal wins (registered second here).
        guard case .matched(let tie, let p) = r.resolve(method: .GET, path: "/a/b") else {
            Issue.record("/a/b: no match")
            return
        }
        #expect(tie.pattern == "/{y}/b" && p["y"] == "a")
        guard case .matched(_, let q) = r.resolve(method: .GET, path: "/a/%7E%20") else {
            Issue.record("/a/%7E%20: no match")
            return
        }
        #expect(q["x"] == "~ ")
        let deep = String(repeating: "/a", count: 5000)
        guard case .notFound = r.resolve(method: .GET, path: deep) else { Issue.record("a very deep path matched"); return }
        guard case .notFound = r.resolve(method: .GET, path: "/ab") else { Issue.record("/ab matched"); return }
        guard case .notFound = r.resolve(method: .GET, path: "/a") else { Issue.record("/a matched"); return }
    }
}
