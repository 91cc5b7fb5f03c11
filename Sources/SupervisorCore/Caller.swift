import HTTPServer
import SupervisorIdentity
import SupervisorStore

/// Who is calling (API.md §3): a user (bearer token or `cxs_auth` cookie), an anonymous browser
/// (`cxs_anon` cookie), a local operator on the Unix socket, or nobody.
public enum Caller: Sendable {
    case user(SignedIn, viaCookie: Bool)
    case browser(AnonymousSession)
    case localOperator(uid: UInt32)
    case anonymous

    public var isAdmin: Bool {
        switch self {
        case .localOperator: return true
        case .user(let s, _): return s.user.isAdmin
        default: return false
        }
    }

    /// The identity that can own sessions: (`user`, id) or (`anonymous`, id).
    public var owner: (type: String, id: String)? {
        switch self {
        case .user(let s, _): return ("user", s.user.id)
        case .browser(let a): return ("anonymous", a.id)
        default: return nil
        }
    }

    /// The key quotas use: `user:<id>` or `anonymous:<id>`.
    public var identityKey: String? { owner.map { StoreState.ownerKey(type: $0.type, id: $0.id) } }

    /// Whether the caller may act on a session of this owner (its own, or any for admins).
    public func mayActOn(ownerType: String, ownerID: String) -> Bool {
        switch self {
        case .localOperator: return true
        case .user(let s, _): return s.user.isAdmin || (ownerType == "user" && s.user.id == ownerID)
        case .browser(let a): return ownerType == "anonymous" && a.id == ownerID
        case .anonymous: return false
        }
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

    public func isLocalOperator(_ request: Request) -> UInt32? {
        if case .unix(_, let uid, let gid) = request.peer {
            if uid == 0 || uid == daemonUID || (socketGID != nil && gid == socketGID) { return uid }
        }
        return nil
    }
}
