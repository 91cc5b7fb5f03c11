import HTTPServer

/// Who is calling, as far as the foundation knows: a local operator on the Unix socket, or nobody yet.
/// (Users and anonymous browsers arrive with the identity issue.)
public enum Caller: Sendable, Equatable {
    case localOperator(uid: UInt32)
    case anonymous

    public var isAdmin: Bool {
        if case .localOperator = self { return true }
        return false
    }
}

/// Decides who is a local operator (API.md §3): a Unix-socket peer whose uid is 0 or the daemon's own, or
/// whose gid is the `--socket-group`.
public struct CallerPolicy: Sendable {
    public let daemonUID: UInt32
    public let socketGID: UInt32?

    public init(daemonUID: UInt32, socketGID: UInt32?) {
        self.daemonUID = daemonUID
        self.socketGID = socketGID
    }

    public func caller(of request: Request) -> Caller {
        if case .unix(_, let uid, let gid) = request.peer {
            if uid == 0 || uid == daemonUID || (socketGID != nil && gid == socketGID) { return .localOperator(uid: uid) }
        }
        return .anonymous
    }
}
