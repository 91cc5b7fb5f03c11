import MinHeap

/// Times to ids, earliest first: a min-heap with lazy deletion. An entry counts only while the record still
/// has that expiry (the owner of the heap checks), so moving an expiry is one push, not a search.
public struct ExpiryIndex: Sendable {
    struct Entry: Comparable, Sendable {
        let at: Int64
        let id: String
        static func < (a: Entry, b: Entry) -> Bool { (a.at, a.id) < (b.at, b.id) }
    }

    private var heap = MinHeap<Entry>()

    public init() {}

    public var count: Int { heap.count }

    mutating func push(_ at: Int64, _ id: String) { heap.push(Entry(at: at, id: id)) }

    var peek: (at: Int64, id: String)? { heap.min.map { ($0.at, $0.id) } }

    mutating func pop() { heap.popMin() }

    /// Drops stale entries when the heap has grown to more than twice the live count.
    mutating func compact(live: (String, Int64) -> Bool) { heap.removeAll { !live($0.id, $0.at) } }
}

/// A token hash (SHA-256, 32 bytes) as a dictionary key: four words, compared whole, hashed by the first
/// (the bytes are already uniform, and `Hasher` is seeded per process). An array key was hashed byte by byte
/// on every authenticated request.
public struct TokenKey: Hashable, Sendable {
    public let words: (UInt64, UInt64, UInt64, UInt64)

    /// The 32 bytes of a SHA-256 output, exactly. Other lengths (records are not trusted) are folded into a
    /// key too; a match found through such a key is still checked against the stored hash by its user.
    public init(_ bytes: [UInt8]) {
        var w: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)
        withUnsafeMutableBytes(of: &w) { out in
            for (i, b) in bytes.enumerated() { out[i % 32] ^= b }
        }
        if bytes.count != 32 { w.3 ^= UInt64(bytes.count &+ 1) &* 0x9E37_79B9_7F4A_7C15 }
        words = w
    }

    /// The four words as they are (the 32 bytes in memory order).
    public init(words: (UInt64, UInt64, UInt64, UInt64)) { self.words = words }

    /// Equality that takes the same time wherever the keys differ (the last check of a presented token).
    public func constantTimeEquals(_ other: TokenKey) -> Bool {
        ((words.0 ^ other.words.0) | (words.1 ^ other.words.1) | (words.2 ^ other.words.2) | (words.3 ^ other.words.3)) == 0
    }

    public static func == (a: TokenKey, b: TokenKey) -> Bool {
        a.words.0 == b.words.0 && a.words.1 == b.words.1 && a.words.2 == b.words.2 && a.words.3 == b.words.3
    }

    public func hash(into h: inout Hasher) { h.combine(words.0) }
}

/// Everything the store holds, with the indexes the API needs. A value: a copy is a consistent snapshot.
public struct StoreState: Sendable {
    public private(set) var users: [String: User] = [:]
    /// Lower-cased username → user id.
    public private(set) var userIDsByName: [String: String] = [:]
    public private(set) var deviceSessions: [String: DeviceSession] = [:]
    /// SHA-256 of the token → device session id.
    public private(set) var deviceSessionIDsByToken: [TokenKey: String] = [:]
    public private(set) var deviceSessionIDsByUser: [String: Set<String>] = [:]
    public private(set) var anonymousSessions: [String: AnonymousSession] = [:]
    public private(set) var sessions: [String: SessionRecord] = [:]
    /// `user:<id>` or `anonymous:<id>` → session ids.
    public private(set) var sessionIDsByOwner: [String: Set<String>] = [:]
    public private(set) var sessionIDsByStatus: [String: Set<String>] = [:]
    public private(set) var transcripts: [String: [TranscriptEntry]] = [:]
    private var deviceExpiry = ExpiryIndex()
    private var anonymousExpiry = ExpiryIndex()
    private var sessionExpiry = ExpiryIndex()
    /// Entries in the session expiry heap, stale ones included (tests check it stays bounded).
    var sessionExpiryEntries: Int { sessionExpiry.count }

    public init() {}

    public static func ownerKey(type: String, id: String) -> String { "\(type):\(id)" }

    public func user(named name: String) -> User? { userIDsByName[name.lowercased()].flatMap { users[$0] } }

    public func deviceSession(tokenHash: [UInt8]) -> DeviceSession? { deviceSession(token: TokenKey(tokenHash)) }

    public func deviceSession(token: TokenKey) -> DeviceSession? { deviceSessionIDsByToken[token].flatMap { deviceSessions[$0] } }

    public func deviceSessions(ofUser id: String) -> [DeviceSession] {
        (deviceSessionIDsByUser[id] ?? []).compactMap { deviceSessions[$0] }
    }

    public func sessions(ownedBy type: String, _ id: String) -> [SessionRecord] {
        (sessionIDsByOwner[StoreState.ownerKey(type: type, id: id)] ?? []).compactMap { sessions[$0] }
    }

    public func sessions(withStatus status: String) -> [SessionRecord] {
        (sessionIDsByStatus[status] ?? []).compactMap { sessions[$0] }
    }

    /// Live (not ended) sessions whose `expires_at` is at or before `time`, earliest first.
    public func sessionsExpiring(before time: Int64) -> [SessionRecord] {
        StoreState.due(sessionExpiry, before: time) { id, at in sessions[id].flatMap { !$0.isEnded && $0.expiresAt == at ? $0 : nil } }
    }

    /// Device sessions whose absolute expiry is at or before `time`.
    public func deviceSessionsExpiring(before time: Int64) -> [DeviceSession] {
        StoreState.due(deviceExpiry, before: time) { id, at in deviceSessions[id].flatMap { $0.expiresAt == at ? $0 : nil } }
    }

    /// Anonymous sessions whose expiry is at or before `time`.
    public func anonymousSessionsExpiring(before time: Int64) -> [AnonymousSession] {
        StoreState.due(anonymousExpiry, before: time) { id, at in anonymousSessions[id].flatMap { $0.expiresAt == at ? $0 : nil } }
    }

    /// Pops a copy of `index` up to `time`; `live` returns the record when the entry is still current.
    private static func due<R>(_ index: ExpiryIndex, before time: Int64, _ live: (String, Int64) -> R?) -> [R] {
        var index = index
        var out: [R] = []
        var seen = Set<String>()
        while let top = index.peek, top.at <= time {
            index.pop()
            if seen.contains(top.id) { continue }
            if let r = live(top.id, top.at) {
                seen.insert(top.id)
                out.append(r)
            }
        }
        return out
    }

    /// Number of live records (what a snapshot would write).
    public var recordCount: Int {
        users.count + deviceSessions.count + anonymousSessions.count + sessions.count + transcripts.values.reduce(0) { $0 + $1.count }
    }

    mutating func apply(_ m: Mutation) {
        switch m {
        case .noop: break
        case .putUser(let u):
            if let old = users[u.id] { userIDsByName[old.username.lowercased()] = nil }
            users[u.id] = u
            userIDsByName[u.username.lowercased()] = u.id
        case .deleteUser(let id):
            if let old = users.removeValue(forKey: id) { userIDsByName[old.username.lowercased()] = nil }
        case .putDeviceSession(let d):
            if let old = deviceSessions[d.id] { deviceSessionIDsByToken[TokenKey(old.tokenHash)] = nil }
            deviceSessions[d.id] = d
            deviceSessionIDsByToken[TokenKey(d.tokenHash)] = d.id
            deviceSessionIDsByUser[d.userID, default: []].insert(d.id)
            deviceExpiry.push(d.expiresAt, d.id)
            if deviceExpiry.count > 2 * deviceSessions.count + 64 {
                deviceExpiry.compact { id, at in deviceSessions[id]?.expiresAt == at }
            }
        case .deleteDeviceSession(let id):
            if let old = deviceSessions.removeValue(forKey: id) {
                deviceSessionIDsByToken[TokenKey(old.tokenHash)] = nil
                deviceSessionIDsByUser[old.userID]?.remove(id)
                if deviceSessionIDsByUser[old.userID]?.isEmpty == true { deviceSessionIDsByUser[old.userID] = nil }
            }
        case .putAnonymousSession(let a):
            anonymousSessions[a.id] = a
            anonymousExpiry.push(a.expiresAt, a.id)
            if anonymousExpiry.count > 2 * anonymousSessions.count + 64 {
                anonymousExpiry.compact { id, at in anonymousSessions[id]?.expiresAt == at }
            }
        case .deleteAnonymousSession(let id):
            anonymousSessions[id] = nil
        case .putSession(let s):
            if let old = sessions[s.id] {
                sessionIDsByStatus[old.status]?.remove(s.id)
                if old.ownerType != s.ownerType || old.ownerID != s.ownerID {
                    sessionIDsByOwner[StoreState.ownerKey(type: old.ownerType, id: old.ownerID)]?.remove(s.id)
                }
            }
            sessions[s.id] = s
            sessionIDsByStatus[s.status, default: []].insert(s.id)
            sessionIDsByOwner[StoreState.ownerKey(type: s.ownerType, id: s.ownerID), default: []].insert(s.id)
            if !s.isEnded { sessionExpiry.push(s.expiresAt, s.id) }
            if sessionExpiry.count > 2 * sessions.count + 64 {
                sessionExpiry.compact { id, at in sessions[id].map { !$0.isEnded && $0.expiresAt == at } ?? false }
            }
        case .deleteSession(let id):
            if let old = sessions.removeValue(forKey: id) {
                sessionIDsByStatus[old.status]?.remove(id)
                let key = StoreState.ownerKey(type: old.ownerType, id: old.ownerID)
                sessionIDsByOwner[key]?.remove(id)
                if sessionIDsByOwner[key]?.isEmpty == true { sessionIDsByOwner[key] = nil }
            }
            transcripts[id] = nil
        case .appendTranscript(let t):
            // Kept sorted by order: an entry written later than entries after it (a command is written with
            // its reply) goes in its place.
            if let last = transcripts[t.sessionID]?.last, last.order >= t.order {
                var list = transcripts.removeValue(forKey: t.sessionID)!
                var lo = 0, hi = list.count
                while lo < hi {
                    let mid = (lo + hi) / 2
                    if list[mid].order < t.order { lo = mid + 1 } else { hi = mid }
                }
                if lo < list.count && list[lo].order == t.order { list[lo] = t } else { list.insert(t, at: lo) }
                transcripts[t.sessionID] = list
            } else {
                transcripts[t.sessionID, default: []].append(t)
            }
        case .deleteTranscript(let id):
            transcripts[id] = nil
        case .trimTranscript(let id, let before):
            // Entries are appended in order: the ones to drop are a prefix.
            if let list = transcripts[id], let keep = list.firstIndex(where: { $0.order >= before }) {
                if keep > 0 { transcripts[id]!.removeFirst(keep) }
            } else if transcripts[id] != nil {
                transcripts[id] = nil
            }
        }
    }

    /// Every live record as the mutations that rebuild it (what a snapshot holds).
    func snapshotMutations() -> [Mutation] {
        var out: [Mutation] = []
        out.reserveCapacity(recordCount)
        for u in users.values.sorted(by: { $0.id < $1.id }) { out.append(.putUser(u)) }
        for d in deviceSessions.values.sorted(by: { $0.id < $1.id }) { out.append(.putDeviceSession(d)) }
        for a in anonymousSessions.values.sorted(by: { $0.id < $1.id }) { out.append(.putAnonymousSession(a)) }
        for s in sessions.values.sorted(by: { $0.id < $1.id }) { out.append(.putSession(s)) }
        for id in transcripts.keys.sorted() {
            for t in transcripts[id]! { out.append(.appendTranscript(t)) }
        }
        return out
    }

    /// The same records (indexes and counters aside): what snapshot + compaction must preserve.
    public func sameRecords(as other: StoreState) -> Bool {
        users == other.users && deviceSessions == other.deviceSessions && anonymousSessions == other.anonymousSessions
            && sessions == other.sessions && transcripts == other.transcripts
    }
}
