import Foundation
import Glibc
import HTTPServer
import SupervisorConfig
import SupervisorIdentity
import SupervisorStore

/// `chimerax-supervisor users add|list|delete|passwd`: directly on the state directory when no daemon holds
/// it, else through the daemon's Unix socket (as a local operator).
struct UsersCommand {
    let config: Configuration
    let json: Bool

    func run(_ sub: String, _ args: [String]) -> Int32 {
        let name = args.first { !$0.hasPrefix("-") }
        let admin = args.contains("--admin")
        let fromStdin = args.contains("--password-stdin")
        switch sub {
        case "add", "passwd":
            guard let name else { fail("usage: chimerax-supervisor users \(sub) NAME [--password-stdin]\(sub == "add" ? " [--admin]" : "")") }
            let password = readPassword(fromStdin: fromStdin)
            return withStore(offline: { identity throws(IdentityError) in
                if sub == "add" {
                    let u = try identity.createUser(username: name, password: password, isAdmin: admin)
                    print("created user \(u.username) (id \(u.id)\(u.isAdmin ? ", admin" : ""))")
                } else {
                    guard let u = identity.user(named: name) else { throw .notFound }
                    try identity.setPassword(userID: u.id, password: password)
                    print("changed the password of \(u.username); its device sessions were logged out")
                }
            }, online: { client in
                if sub == "add" {
                    let body = JSON.object([("username", .string(name)), ("password", .string(password)), ("is_admin", .bool(admin))])
                    let r = try client.request("POST", "/management/users", body: body)
                    guard r.status == 201 else { return r }
                    print("created user \(name) (through the running daemon)")
                } else {
                    guard let id = try userID(named: name, client) else { fail("no user named \(name)", status: 1) }
                    let r = try client.request("POST", "/management/users/\(id)/password", body: .object([("password", .string(password))]))
                    guard r.status == 204 else { return r }
                    print("changed the password of \(name); its device sessions were logged out")
                }
                return nil
            })
        case "delete":
            guard let name else { fail("usage: chimerax-supervisor users delete NAME") }
            return withStore(offline: { identity throws(IdentityError) in
                guard let u = identity.user(named: name) else { throw .notFound }
                try identity.deleteUser(id: u.id)
                print("deleted user \(u.username)")
            }, online: { client in
                guard let id = try userID(named: name, client) else { fail("no user named \(name)", status: 1) }
                let r = try client.request("DELETE", "/management/users/\(id)")
                guard r.status == 204 else { return r }
                print("deleted user \(name)")
                return nil
            })
        case "list":
            return withStore(offline: { identity throws(IdentityError) in
                printUsers(identity.users().map { ($0.id, $0.username, $0.isAdmin, $0.createdAt) })
            }, online: { client in
                let r = try client.request("GET", "/management/users?limit=200")
                guard r.status == 200, case .array(let items)? = try? JSON.parse(r.body)["items"] else { return r }
                printUsers(items.map { u in
                    let s = { (k: String) -> String in if case .string(let v)? = u[k] { v } else { "" } }
                    return (s("id"), s("username"), u["is_admin"] == .bool(true), 0)
                })
                return nil
            })
        default:
            fail("usage: chimerax-supervisor users add|list|delete|passwd NAME [--admin] [--password-stdin] [--state-dir PATH]")
        }
    }

    private func printUsers(_ users: [(String, String, Bool, Int64)]) {
        if json {
            print(String(decoding: JSON.array(users.map { .object([("id", .string($0.0)), ("username", .string($0.1)), ("is_admin", .bool($0.2))]) })
                .serialized(), as: UTF8.self))
            return
        }
        let width = max(8, users.map(\.1.count).max() ?? 0)
        print("USERNAME".padding(toLength: width + 2, withPad: " ", startingAt: 0) + "ADMIN  ID")
        for u in users { print(u.1.padding(toLength: width + 2, withPad: " ", startingAt: 0) + (u.2 ? "yes    " : "no     ") + u.0) }
    }

    private func userID(named name: String, _ client: UnixHTTPClient) throws -> String? {
        let r = try client.request("GET", "/management/users?limit=200")
        guard r.status == 200, case .array(let items)? = try? JSON.parse(r.body)["items"] else { return nil }
        for u in items where u["username"].map({ if case .string(let s) = $0 { s.lowercased() == name.lowercased() } else { false } }) ?? false {
            if case .string(let id)? = u["id"] { return id }
        }
        return nil
    }

    /// Runs `offline` on the store when this process can lock it, else `online` through the daemon's socket.
    private func withStore(offline: (IdentityService) throws(IdentityError) -> Void,
                           online: (UnixHTTPClient) throws -> UnixHTTPClient.Reply?) -> Int32
    {
        let store: Store
        do {
            store = try Store(stateDirectory: config.stateDir)
        } catch {
            guard error.code == .locked else { fail(error.description, status: 1) }
            guard let path = config.socketPath else { fail("a daemon holds \(config.stateDir) and --socket is none", status: 1) }
            do {
                if let bad = try online(UnixHTTPClient(path: path)) {
                    let detail = (try? JSON.parse(bad.body)["detail"]).flatMap { if case .string(let s) = $0 { s } else { nil } }
                    fail("the daemon answered \(bad.status): \(detail ?? String(decoding: bad.body, as: UTF8.self))", status: 1)
                }
                return 0
            } catch {
                fail("a daemon holds \(config.stateDir), and its socket \(path) does not answer: \(error)", status: 1)
            }
        }
        defer { store.close() }
        do throws(IdentityError) {
            try offline(IdentityService(store: store))
            return 0
        } catch {
            switch error {
            case .notFound: fail("no such user", status: 1)
            case .conflict(let m): fail(m, status: 1)
            case .validation(let f, let m): fail("\(f): \(m)", status: 1)
            case .storage(let e): fail(e.description, status: 1)
            default: fail("\(error)", status: 1)
            }
        }
    }

    /// The password: the first line of stdin with `--password-stdin`, else asked twice on the terminal.
    private func readPassword(fromStdin: Bool) -> String {
        if fromStdin {
            guard let line = readLine(strippingNewline: true), !line.isEmpty else { fail("no password on standard input") }
            return line
        }
        guard isatty(0) == 1 else { fail("standard input is not a terminal: use --password-stdin") }
        func ask(_ prompt: String) -> String {
            var old = termios()
            tcgetattr(0, &old)
            var quiet = old
            quiet.c_lflag &= ~tcflag_t(ECHO)
            tcsetattr(0, TCSANOW, &quiet)
            defer {
                tcsetattr(0, TCSANOW, &old)
                FileHandle.standardError.write(Data("\n".utf8))
            }
            FileHandle.standardError.write(Data(prompt.utf8))
            return readLine(strippingNewline: true) ?? ""
        }
        let a = ask("Password: ")
        guard a == ask("Again: ") else { fail("the passwords differ") }
        return a
    }
}

/// A minimal HTTP/1.1 client over a Unix socket: one request per connection (`Connection: close`).
struct UnixHTTPClient {
    struct Reply {
        let status: Int
        let body: [UInt8]
    }

    let path: String

    func request(_ method: String, _ target: String, body: JSON? = nil) throws -> Reply {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw StoreError(.unavailable, "socket", errno: errno) }
        defer { close(fd) }
        var tv = timeval(tv_sec: 30, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: addr.sun_path) else { throw StoreError(.unusable, "socket path too long") }
        withUnsafeMutableBytes(of: &addr.sun_path) { p in for (i, b) in bytes.enumerated() { p[i] = b } }
        let ok = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard ok == 0 else { throw StoreError(.unavailable, "connect \(path)", errno: errno) }
        let payload = body?.serialized() ?? []
        var req = "\(method) \(target) HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nUser-Agent: chimerax-supervisor-cli\r\n"
        if body != nil { req += "Content-Type: application/json\r\nContent-Length: \(payload.count)\r\n" }
        let out = Array((req + "\r\n").utf8) + payload
        var sent = 0
        while sent < out.count {
            let n = out.withUnsafeBytes { send(fd, $0.baseAddress! + sent, out.count - sent, Int32(MSG_NOSIGNAL)) }
            guard n > 0 else { throw StoreError(.unavailable, "send", errno: errno) }
            sent += n
        }
        var data: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = recv(fd, &buf, buf.count, 0)
            if n <= 0 { break }
            data.append(contentsOf: buf[0..<n])
            // Our own daemon's answers are small; anything this large is not one.
            guard data.count <= 16 << 20 else { throw StoreError(.unavailable, "the answer from \(path) is larger than 16 MiB") }
        }
        // Status line, headers, then the body up to close (Content-Length bodies; the daemon closes after).
        guard let end = data.indices.first(where: { $0 + 3 < data.count && data[$0] == 13 && data[$0 + 1] == 10 && data[$0 + 2] == 13 && data[$0 + 3] == 10 }) else {
            throw StoreError(.unavailable, "no HTTP answer from \(path)")
        }
        let head = String(decoding: data[..<end], as: UTF8.self)
        let status = head.split(separator: " ").dropFirst().first.flatMap { Int($0) } ?? 0
        return Reply(status: status, body: Array(data[(end + 4)...]))
    }
}
