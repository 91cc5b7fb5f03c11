import Foundation
import Glibc
import HTTPServer
import SystemdIntegration

/// `/healthz`, `/readyz`, `/metrics`, `/openapi.json` (API.md §6).
struct OperationalRoutes {
    let state: DaemonState

    func register(on router: inout Router) {
        let state = self.state
        router.add(.GET, "/healthz", doc: RouteDoc("Liveness: the process answers.", tags: ["operations"],
                                                   responses: [("200", "alive")], isPublic: true)) { _ in
            Response.json(.object([("status", .string("ok"))]))
        }
        router.add(.GET, "/readyz", doc: RouteDoc("Readiness: the state store is writable and a ChimeraX executable was found.",
                                                  tags: ["operations"], responses: [("200", "ready"), ("503", "not ready, with the failing checks")],
                                                  isPublic: true)) { req throws(Problem) in
            let checks = state.readinessChecks()
            let json: [(String, JSON)] = checks.map { c in
                (c.name, .object([("ok", .bool(c.ok)), ("detail", .string(c.detail))]))
            }
            if checks.allSatisfy(\.ok) {
                return Response.json(.object([("status", .string("ready")), ("checks", .object(json))]))
            }
            var p = Problem(503, "service_unavailable", "Not ready: " + checks.filter { !$0.ok }.map { "\($0.name): \($0.detail)" }.joined(separator: "; "))
            p.extensions = [("checks", .object(json))]
            throw p
        }
        router.add(.GET, "/metrics", doc: RouteDoc("Prometheus metrics (admins: bearer token or the Unix socket).", tags: ["operations"],
                                                   responses: [("200", "Prometheus text format 0.0.4"), ("401", "no credentials"), ("403", "not an admin")],
                                                   produces: "text/plain; version=0.0.4")) { req throws(Problem) in
            try state.requireAdmin(req)
            var headers = HTTPHeaders()
            headers.add("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            return Response(status: 200, headers: headers, body: Array(state.renderMetrics().utf8))
        }
        router.add(.GET, "/openapi.json", doc: RouteDoc("This OpenAPI 3.1 document, generated from the route table.",
                                                        tags: ["operations"], responses: [("200", "the document")], isPublic: true)) { _ in
            Response(status: 200, headers: HTTPHeaders([("Content-Type", "application/json; charset=utf-8")]), body: state.openAPIBytes())
        }
    }
}
