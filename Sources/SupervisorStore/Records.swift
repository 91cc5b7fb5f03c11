/// The records the store keeps. Times are milliseconds since the Unix epoch (the API shows milliseconds).
/// Each type encodes itself as tagged fields (`RecordWriter`); a new field takes a new tag and a default.

/// A person who logs in.
public struct User: Sendable, Equatable {
    public var id: String
    public var username: String
    /// A `crypt(3)` hash string (`$y$…`).
    public var passwordHash: String
    public var isAdmin: Bool
    public var createdAt: Int64
    public var passwordChangedAt: Int64

    public init(id: String, username: String, passwordHash: String, isAdmin: Bool, createdAt: Int64, passwordChangedAt: Int64? = nil) {
        self.id = id
        self.username = username
        self.passwordHash = passwordHash
        self.isAdmin = isAdmin
        self.createdAt = createdAt
        self.passwordChangedAt = passwordChangedAt ?? createdAt
    }

    func encode(_ w: inout RecordWriter) {
        w.field(1, id)
        w.field(2, username)
        w.field(3, passwordHash)
        w.field(4, isAdmin)
        w.field(5, createdAt)
        w.field(6, passwordChangedAt)
    }

    init(_ r: RecordReader) throws(StoreError) {
        id = try r.required(1, "user id")
        username = r.string(2, default: "")
        passwordHash = r.string(3, default: "")
        isAdmin = r.bool(4)
        createdAt = r.int(5, default: 0)
        passwordChangedAt = r.int(6, default: createdAt)
    }
}

/// A login of a user on one device: what its bearer token or `cxs_auth` cookie stands for.
public struct DeviceSession: Sendable, Equatable {
    public var id: String
    public var userID: String
    /// SHA-256 of the token; the token itself is never stored.
    public var tokenHash: [UInt8]
    public var ipAddress: String
    public var userAgent: String
    public var browser: String
    public var os: String
    public var deviceType: String
    public var deviceName: String
    public var loginMethod: String
    public var createdAt: Int64
    public var lastActivity: Int64
    /// Absolute expiry; idle expiry is `lastActivity` + the configured idle time.
    public var expiresAt: Int64
    /// Set when logged out or terminated: the token is refused from then on.
    public var revokedAt: Int64?
    public var revokeReason: String?

    public init(id: String, userID: String, tokenHash: [UInt8], ipAddress: String, userAgent: String, browser: String, os: String,
                deviceType: String, deviceName: String, loginMethod: String = "password", createdAt: Int64, lastActivity: Int64,
                expiresAt: Int64, revokedAt: Int64? = nil, revokeReason: String? = nil)
    {
        self.id = id
        self.userID = userID
        self.tokenHash = tokenHash
        self.ipAddress = ipAddress
        self.userAgent = userAgent
        self.browser = browser
        self.os = os
        self.deviceType = deviceType
        self.deviceName = deviceName
        self.loginMethod = loginMethod
        self.createdAt = createdAt
        self.lastActivity = lastActivity
        self.expiresAt = expiresAt
        self.revokedAt = revokedAt
        self.revokeReason = revokeReason
    }

    func encode(_ w: inout RecordWriter) {
        w.field(1, id)
        w.field(2, userID)
        w.field(3, tokenHash)
        w.field(4, ipAddress)
        w.field(5, userAgent)
        w.field(6, browser)
        w.field(7, os)
        w.field(8, deviceType)
        w.field(9, deviceName)
        w.field(10, loginMethod)
        w.field(11, createdAt)
        w.field(12, lastActivity)
        w.field(13, expiresAt)
        w.field(14, revokedAt)
        w.field(15, revokeReason)
    }

    init(_ r: RecordReader) throws(StoreError) {
        id = try r.required(1, "device session id")
        userID = r.string(2, default: "")
        tokenHash = r.bytes(3) ?? []
        ipAddress = r.string(4, default: "")
        userAgent = r.string(5, default: "")
        browser = r.string(6, default: "Other")
        os = r.string(7, default: "Other")
        deviceType = r.string(8, default: "Other")
        deviceName = r.string(9, default: "")
        loginMethod = r.string(10, default: "password")
        createdAt = r.int(11, default: 0)
        lastActivity = r.int(12, default: createdAt)
        expiresAt = r.int(13, default: 0)
        revokedAt = r.int(14)
        revokeReason = r.string(15)
    }
}

/// An anonymous browser identity (`cxs_anon`) and what it has used.
public struct AnonymousSession: Sendable, Equatable {
    public var id: String
    public var createdAt: Int64
    public var lastActive: Int64
    public var expiresAt: Int64
    public var sessionsCreated: Int
    public var commandsRun: Int
    public var uploads: Int

    public init(id: String, createdAt: Int64, lastActive: Int64, expiresAt: Int64, sessionsCreated: Int = 0, commandsRun: Int = 0, uploads: Int = 0) {
        self.id = id
        self.createdAt = createdAt
        self.lastActive = lastActive
        self.expiresAt = expiresAt
        self.sessionsCreated = sessionsCreated
        self.commandsRun = commandsRun
        self.uploads = uploads
    }

    func encode(_ w: inout RecordWriter) {
        w.field(1, id)
        w.field(2, createdAt)
        w.field(3, lastActive)
        w.field(4, expiresAt)
        w.field(5, sessionsCreated)
        w.field(6, commandsRun)
        w.field(7, uploads)
    }

    init(_ r: RecordReader) throws(StoreError) {
        id = try r.required(1, "anonymous session id")
        createdAt = r.int(2, default: 0)
        lastActive = r.int(3, default: createdAt)
        expiresAt = r.int(4, default: 0)
        sessionsCreated = Int(r.int(5, default: 0))
        commandsRun = Int(r.int(6, default: 0))
        uploads = Int(r.int(7, default: 0))
    }
}

/// One ChimeraX session, from creation to its end (API.md §4).
public struct SessionRecord: Sendable, Equatable {
    public var id: String
    public var name: String
    /// `user` or `anonymous`.
    public var ownerType: String
    public var ownerID: String
    /// `starting`, `ready`, `busy`, `stopping`, `terminated`, `failed`, `finalized`.
    public var status: String
    public var createdAt: Int64
    public var readyAt: Int64?
    public var lastActivity: Int64
    public var expiresAt: Int64
    public var endedAt: Int64?
    public var idleTimeoutSeconds: Int
    /// `created_at` + the maximum lifetime: `extend_s` never goes past it.
    public var lifetimeEndsAt: Int64
    public var terminationReason: String?
    public var exitCode: Int?
    public var exitSignal: String?
    /// `upload` or `pdb`, nil without a structure.
    public var structureSource: String?
    public var pdbID: String?
    public var structureFilename: String?
    public var structureFormat: String?
    public var structureSizeBytes: Int?
    /// The client's `metadata` object, as JSON text.
    public var metadataJSON: String
    public var cpuSeconds: Double
    public var memoryPeakBytes: Int
    /// Where it runs: backend name, process id, unit name; for re-adoption and cleanup after a restart.
    public var backend: String
    public var pid: Int?
    public var unit: String?
    public var directory: String
    /// What opening the structure gave: nil (not tried yet), "" (opened) or ChimeraX's error message.
    public var structureOpenError: String?
    /// Commands of users run in the session (usage statistics).
    public var commandsRun = 0

    public init(id: String, name: String, ownerType: String, ownerID: String, status: String, createdAt: Int64, lastActivity: Int64,
                expiresAt: Int64, idleTimeoutSeconds: Int, lifetimeEndsAt: Int64, metadataJSON: String = "{}", backend: String = "",
                directory: String = "")
    {
        self.id = id
        self.name = name
        self.ownerType = ownerType
        self.ownerID = ownerID
        self.status = status
        self.createdAt = createdAt
        self.lastActivity = lastActivity
        self.expiresAt = expiresAt
        self.idleTimeoutSeconds = idleTimeoutSeconds
        self.lifetimeEndsAt = lifetimeEndsAt
        self.metadataJSON = metadataJSON
        self.cpuSeconds = 0
        self.memoryPeakBytes = 0
        self.backend = backend
        self.directory = directory
    }

    /// Whether the session has ended (no process behind it).
    public var isEnded: Bool { status == "terminated" || status == "failed" || status == "finalized" }

    func encode(_ w: inout RecordWriter) {
        w.field(1, id)
        w.field(2, name)
        w.field(3, ownerType)
        w.field(4, ownerID)
        w.field(5, status)
        w.field(6, createdAt)
        w.field(7, readyAt)
        w.field(8, lastActivity)
        w.field(9, expiresAt)
        w.field(10, endedAt)
        w.field(11, idleTimeoutSeconds)
        w.field(12, lifetimeEndsAt)
        w.field(13, terminationReason)
        w.field(14, exitCode)
        w.field(15, exitSignal)
        w.field(16, structureSource)
        w.field(17, pdbID)
        w.field(18, structureFilename)
        w.field(19, structureFormat)
        w.field(20, structureSizeBytes)
        w.field(21, metadataJSON)
        w.field(22, cpuSeconds)
        w.field(23, memoryPeakBytes)
        w.field(24, backend)
        w.field(25, pid)
        w.field(26, unit)
        w.field(27, directory)
        w.field(28, structureOpenError)
        w.field(29, commandsRun)
    }

    init(_ r: RecordReader) throws(StoreError) {
        id = try r.required(1, "session id")
        name = r.string(2, default: "")
        ownerType = r.string(3, default: "user")
        ownerID = r.string(4, default: "")
        status = r.string(5, default: "failed")
        createdAt = r.int(6, default: 0)
        readyAt = r.int(7)
        lastActivity = r.int(8, default: createdAt)
        expiresAt = r.int(9, default: 0)
        endedAt = r.int(10)
        idleTimeoutSeconds = Int(r.int(11, default: 900))
        lifetimeEndsAt = r.int(12, default: expiresAt)
        terminationReason = r.string(13)
        exitCode = r.int(14).map { Int($0) }
        exitSignal = r.string(15)
        structureSource = r.string(16)
        pdbID = r.string(17)
        structureFilename = r.string(18)
        structureFormat = r.string(19)
        structureSizeBytes = r.int(20).map { Int($0) }
        metadataJSON = r.string(21, default: "{}")
        cpuSeconds = r.double(22) ?? 0
        memoryPeakBytes = Int(r.int(23, default: 0))
        backend = r.string(24, default: "")
        pid = r.int(25).map { Int($0) }
        unit = r.string(26)
        directory = r.string(27, default: "")
        structureOpenError = r.string(28)
        commandsRun = Int(r.int(29, default: 0))
    }
}

/// One line of a session's transcript: a command, ChimeraX's reply, a log line or an event.
public struct TranscriptEntry: Sendable, Equatable {
    public var sessionID: String
    /// 1, 2, 3… within the session.
    public var order: Int
    public var timestamp: Int64
    /// `command`, `reply`, `log`, `event`.
    public var kind: String
    public var level: String
    public var text: String
    /// Structured data as JSON text, or nil.
    public var dataJSON: String?

    public init(sessionID: String, order: Int, timestamp: Int64, kind: String, level: String, text: String, dataJSON: String? = nil) {
        self.sessionID = sessionID
        self.order = order
        self.timestamp = timestamp
        self.kind = kind
        self.level = level
        self.text = text
        self.dataJSON = dataJSON
    }

    func encode(_ w: inout RecordWriter) {
        w.field(1, sessionID)
        w.field(2, order)
        w.field(3, timestamp)
        w.field(4, kind)
        w.field(5, level)
        w.field(6, text)
        w.field(7, dataJSON)
    }

    init(_ r: RecordReader) throws(StoreError) {
        sessionID = try r.required(1, "transcript session id")
        order = Int(r.int(2, default: 0))
        timestamp = r.int(3, default: 0)
        kind = r.string(4, default: "log")
        level = r.string(5, default: "info")
        text = r.string(6, default: "")
        dataJSON = r.string(7)
    }
}

/// One change to the store. A write is a list of them, applied together or not at all.
public enum Mutation: Sendable, Equatable {
    case putUser(User)
    case deleteUser(id: String)
    case putDeviceSession(DeviceSession)
    case deleteDeviceSession(id: String)
    case putAnonymousSession(AnonymousSession)
    case deleteAnonymousSession(id: String)
    case putSession(SessionRecord)
    /// Removes the session record and its transcript.
    case deleteSession(id: String)
    case appendTranscript(TranscriptEntry)
    /// Removes the transcript of a session, keeping the record.
    case deleteTranscript(sessionID: String)
    /// Removes the entries of a session's transcript before `order` (the per-session bound).
    case trimTranscript(sessionID: String, before: Int)
    /// Writes nothing of substance; used to probe whether the disk takes writes again.
    case noop

    /// Whether it changes a user or a device session (what authentication reads).
    public var changesIdentity: Bool {
        switch self {
        case .putUser, .deleteUser, .putDeviceSession, .deleteDeviceSession: return true
        default: return false
        }
    }

    /// Record type bytes. Never reuse a number.
    enum Kind: UInt8 {
        case noop = 0, putUser = 1, deleteUser = 2, putDeviceSession = 3, deleteDeviceSession = 4, putAnonymousSession = 5,
            deleteAnonymousSession = 6, putSession = 7, deleteSession = 8, appendTranscript = 9, deleteTranscript = 10,
            trimTranscript = 11
    }

    /// `kind byte · fields`.
    func encode(into out: inout [UInt8]) {
        var w = RecordWriter()
        let kind: Kind
        switch self {
        case .putUser(let u): kind = .putUser; u.encode(&w)
        case .deleteUser(let id): kind = .deleteUser; w.field(1, id)
        case .putDeviceSession(let d): kind = .putDeviceSession; d.encode(&w)
        case .deleteDeviceSession(let id): kind = .deleteDeviceSession; w.field(1, id)
        case .putAnonymousSession(let a): kind = .putAnonymousSession; a.encode(&w)
        case .deleteAnonymousSession(let id): kind = .deleteAnonymousSession; w.field(1, id)
        case .putSession(let s): kind = .putSession; s.encode(&w)
        case .deleteSession(let id): kind = .deleteSession; w.field(1, id)
        case .appendTranscript(let t): kind = .appendTranscript; t.encode(&w)
        case .deleteTranscript(let id): kind = .deleteTranscript; w.field(1, id)
        case .trimTranscript(let id, let before):
            kind = .trimTranscript
            w.field(1, id)
            w.field(2, before)
        case .noop: kind = .noop
        }
        out.append(kind.rawValue)
        out.append(contentsOf: w.bytes)
    }

    /// Decodes one record; unknown record types are an error (a newer program wrote them: the file version
    /// says so before we get here).
    static func decode(_ b: ArraySlice<UInt8>) throws(StoreError) -> Mutation {
        guard let first = b.first, let kind = Kind(rawValue: first) else {
            throw StoreError(.corrupt, "unknown record type \(b.first.map(String.init) ?? "(empty)")")
        }
        let r = try RecordReader(b.dropFirst())
        switch kind {
        case .noop: return .noop
        case .putUser: return .putUser(try User(r))
        case .deleteUser: return .deleteUser(id: try r.required(1, "id"))
        case .putDeviceSession: return .putDeviceSession(try DeviceSession(r))
        case .deleteDeviceSession: return .deleteDeviceSession(id: try r.required(1, "id"))
        case .putAnonymousSession: return .putAnonymousSession(try AnonymousSession(r))
        case .deleteAnonymousSession: return .deleteAnonymousSession(id: try r.required(1, "id"))
        case .putSession: return .putSession(try SessionRecord(r))
        case .deleteSession: return .deleteSession(id: try r.required(1, "id"))
        case .appendTranscript: return .appendTranscript(try TranscriptEntry(r))
        case .deleteTranscript: return .deleteTranscript(sessionID: try r.required(1, "session id"))
        case .trimTranscript: return .trimTranscript(sessionID: try r.required(1, "session id"), before: Int(r.int(2, default: 0)))
        }
    }
}
