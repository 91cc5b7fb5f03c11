import HTTPServer

/// Builds the OpenAPI 3.1 document from the route table, so it lists exactly what is served.
public enum OpenAPIDocument {
    public static func generate(router: Router, version: String) -> JSON {
        var paths: [(String, JSON)] = []
        var order: [String] = []
        var byPath: [String: [(String, JSON)]] = [:]
        for r in router.routes {
            if byPath[r.pattern] == nil { order.append(r.pattern) }
            byPath[r.pattern, default: []].append((r.method.rawValue.lowercased(), operation(r)))
        }
        for p in order { paths.append((p, .object(byPath[p]!))) }
        let problem: JSON = .object([
            ("type", .string("object")),
            ("required", .array([.string("type"), .string("title"), .string("status"), .string("code"), .string("request_id")])),
            ("properties", .object([
                ("type", .object([("type", .string("string"))])),
                ("title", .object([("type", .string("string"))])),
                ("status", .object([("type", .string("integer"))])),
                ("detail", .object([("type", .string("string"))])),
                ("code", .object([("type", .string("string"))])),
                ("request_id", .object([("type", .string("string"))])),
                ("errors", .object([
                    ("type", .string("array")),
                    ("items", .object([
                        ("type", .string("object")),
                        ("properties", .object([
                            ("field", .object([("type", .string("string"))])),
                            ("message", .object([("type", .string("string"))])),
                        ])),
                    ])),
                ])),
            ])),
        ])
        return .object([
            ("openapi", .string("3.1.0")),
            ("info", .object([
                ("title", .string("chimerax-supervisor")),
                ("version", .string(version)),
                ("description", .string(
                    "Supervises one headless UCSF ChimeraX per web session. HEAD is answered wherever GET is; "
                        + "a wrong method is 405 with Allow; every error is RFC 9457 problem details; trailing slashes "
                        + "are insignificant; every response carries X-Request-ID.")),
            ])),
            ("paths", .object(paths)),
            ("components", .object([
                ("schemas", .object([("Problem", problem)])),
                ("securitySchemes", .object([
                    ("bearer", .object([("type", .string("http")), ("scheme", .string("bearer"))])),
                    ("localOperator", .object([
                        ("type", .string("apiKey")), ("in", .string("header")), ("name", .string("X-Unix-Peer")),
                        ("description", .string("Not a header: a peer on the Unix socket whose uid is 0, the daemon's, or in --socket-group.")),
                    ])),
                ])),
            ])),
        ])
    }

    static func operation(_ r: Route) -> JSON {
        var params: [JSON] = []
        for s in r.segments {
            if case .parameter(let name) = s {
                params.append(.object([("name", .string(name)), ("in", .string("path")), ("required", .bool(true)),
                                       ("schema", .object([("type", .string("string"))]))]))
            }
        }
        for (name, desc) in r.doc.query {
            params.append(.object([("name", .string(name)), ("in", .string("query")), ("required", .bool(false)),
                                   ("description", .string(desc)), ("schema", .object([("type", .string("string"))]))]))
        }
        var responses: [(String, JSON)] = []
        for (code, desc) in r.doc.responses {
            let isError = (Int(code) ?? 0) >= 400
            let media = isError ? "application/problem+json" : r.doc.produces
            var resp: [(String, JSON)] = [("description", .string(desc))]
            if code != "204" {
                let schema: JSON = isError ? .object([("$ref", .string("#/components/schemas/Problem"))]) : .object([])
                resp.append(("content", .object([(media, .object([("schema", schema)]))])))
            }
            responses.append((code, .object(resp)))
        }
        var op: [(String, JSON)] = [
            ("operationId", .string(operationID(r))),
            ("summary", .string(r.doc.summary)),
        ]
        if !r.doc.tags.isEmpty { op.append(("tags", .array(r.doc.tags.map { .string($0) }))) }
        if !params.isEmpty { op.append(("parameters", .array(params))) }
        op.append(("responses", .object(responses)))
        op.append(("security", r.doc.isPublic ? .array([]) : .array([.object([("bearer", .array([]))]), .object([("localOperator", .array([]))])])))
        return .object(op)
    }

    static func operationID(_ r: Route) -> String {
        let parts = r.segments.map { s -> String in
            switch s {
            case .literal(let l): return l.replacingOccurrences(of: ".", with: "_").replacingOccurrences(of: "-", with: "_")
            case .parameter(let p): return "by_" + p
            }
        }
        return ([r.method.rawValue.lowercased()] + parts).joined(separator: "_")
    }
}
