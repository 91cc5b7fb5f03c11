import Foundation
import HTTPServer
import SupervisorIdentity
import SupervisorStore

/// API.md §5 user administration (admins only): create, list, delete, and a new password.
struct UserAdminRoutes {
    let state: DaemonState

    func register(on router: inout Router) {
        let state = self.state
        let identity = state.identity
        let logger = state.logger

        router.addBlocking(.POST, "/management/users", doc: RouteDoc(
            "Create a user.", tags: ["management"],
            responses: [("201", "the user"), ("400", "validation_error"), ("401", "unauthorized"), ("403", "forbidden"), ("409", "conflict: the name is taken")])) { req throws(Problem) in
            try state.requireAdmin(req)
            let body = try req.jsonObject(limit: 8 << 10)
            var errors: [Problem.FieldError] = []
            guard case .string(let username)? = body["username"] else { throw Problem.validation(field: "username", "required string") }
            guard case .string(let password)? = body["password"] else { throw Problem.validation(field: "password", "required string") }
            var isAdmin = false
            if let v = body["is_admin"] {
                if case .bool(let b) = v { isAdmin = b } else { errors.append(.init(field: "is_admin", message: "must be true or false")) }
            }
            if !errors.isEmpty { throw Problem.validation(errors) }
            do throws(IdentityError) {
                let u = try identity.createUser(username: username, password: password, isAdmin: isAdmin)
                logger.notice("user created", [("event", "user_created"), ("USER_ID", u.id), ("username", u.username), ("is_admin", "\(u.isAdmin)")])
                var r = Response.json(userJSON(u), status: 201)
                r.headers.add("Location", "/management/users/\(u.id)")
                return r
            } catch {
                throw Problem(error)
            }
        }

        router.add(.GET, "/management/users", doc: RouteDoc(
            "Every user, list envelope.", tags: ["management"], responses: [("200", "list envelope of users"), ("400", "validation_error"),
                                                                            ("401", "unauthorized"), ("403", "forbidden")],
            query: [("limit", "1..200, default 50"), ("offset", "default 0")])) { req throws(Problem) in
            try state.requireAdmin(req)
            let (limit, offset) = try pagination(req)
            let all = identity.users()
            return Response.json(listEnvelope(all.dropFirst(offset).prefix(limit).map(userJSON), total: all.count, limit: limit, offset: offset))
        }

        router.addBlocking(.DELETE, "/management/users/{id}", doc: RouteDoc(
            "Delete a user: its tokens are revoked at once.", tags: ["management"],
            responses: [("204", "deleted"), ("401", "unauthorized"), ("403", "forbidden"), ("404", "resource_not_found")])) { req throws(Problem) in
            try state.requireAdmin(req)
            let id = req.params["id"] ?? ""
            do throws(IdentityError) {
                let u = try identity.deleteUser(id: id)
                let ended = state.endSessions(ownerType: "user", ownerID: u.id, reason: "admin")
                logger.notice("user deleted", [("event", "user_deleted"), ("USER_ID", u.id), ("username", u.username), ("sessions_ended", "\(ended)")])
                return Response(status: 204)
            } catch {
                throw Problem(error)
            }
        }

        router.addBlocking(.POST, "/management/users/{id}/password", doc: RouteDoc(
            "Set a user's password; every device session of the user is revoked.", tags: ["management"],
            responses: [("204", "changed"), ("400", "validation_error"), ("401", "unauthorized"), ("403", "forbidden"), ("404", "resource_not_found")])) { req throws(Problem) in
            try state.requireAdmin(req)
            let body = try req.jsonObject(limit: 8 << 10)
            guard case .string(let password)? = body["password"] else { throw Problem.validation(field: "password", "required string") }
            let id = req.params["id"] ?? ""
            do throws(IdentityError) {
                try identity.setPassword(userID: id, password: password)
                logger.notice("password changed", [("event", "password_changed"), ("USER_ID", id)])
                return Response(status: 204)
            } catch {
                throw Problem(error)
            }
        }
    }
}

/// `limit` (1..200, default 50) and `offset` (≥ 0) from the query, or `400 validation_error`.
func pagination(_ req: Request) throws(Problem) -> (Int, Int) {
    var errors: [Problem.FieldError] = []
    var limit = 50, offset = 0
    if let v = req.query("limit") {
        if let n = Int(v), (1...200).contains(n) { limit = n } else { errors.append(.init(field: "limit", message: "an integer from 1 to 200")) }
    }
    if let v = req.query("offset") {
        if let n = Int(v), n >= 0 { offset = n } else { errors.append(.init(field: "offset", message: "a non-negative integer")) }
    }
    if !errors.isEmpty { throw Problem.validation(errors) }
    return (limit, offset)
}

/// `{"items", "total_count", "limit", "offset", "next_offset", "prev_offset"}` (API.md §2).
func listEnvelope(_ items: [JSON], total: Int, limit: Int, offset: Int) -> JSON {
    .object([
        ("items", .array(items)), ("total_count", .int(total)), ("limit", .int(limit)), ("offset", .int(offset)),
        ("next_offset", offset + limit < total ? .int(offset + limit) : .null),
        ("prev_offset", offset > 0 ? .int(max(0, offset - limit)) : .null),
    ])
}
