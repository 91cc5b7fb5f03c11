import CShim
import Testing
@testable import SupervisorStore

/// One of each record, with every optional field set (or not, by `full`).
func sampleMutations(_ n: Int, full: Bool = true) -> [Mutation] {
    let t = Int64(1_790_000_000_000 + n)
    var session = SessionRecord(id: "s\(n)", name: "Session ✓ \(n)", ownerType: n % 2 == 0 ? "user" : "anonymous", ownerID: "o\(n % 3)",
                                status: ["starting", "ready", "terminated"][n % 3], createdAt: t, lastActivity: t + 5, expiresAt: t + 900_000,
                                idleTimeoutSeconds: 900, lifetimeEndsAt: t + 28_800_000, metadataJSON: #"{"k":"v\#(n)"}"#, backend: "process",
                                directory: "/var/lib/x/s\(n)")
    if full {
        session.readyAt = t + 1
        session.endedAt = t + 2
        session.terminationReason = "idle_timeout"
        session.exitCode = -1
        session.exitSignal = "SIGKILL"
        session.structureSource = "pdb"
        session.pdbID = "1abc"
        session.structureFilename = "1abc.cif"
        session.structureFormat = "mmcif"
        session.structureSizeBytes = 1 << 40
        session.cpuSeconds = 12.5
        session.memoryPeakBytes = 3 << 30
        session.pid = 4242
        session.unit = "chimerax-session-s\(n).service"
    }
    return [
        .putUser(User(id: "u\(n)", username: "User\(n)", passwordHash: "$y$j9T$salt$hash\(n)", isAdmin: n % 2 == 0, createdAt: t)),
        .putDeviceSession(DeviceSession(id: "d\(n)", userID: "u\(n)", tokenHash: (0..<32).map { UInt8(($0 + n) & 0xFF) }, ipAddress: "2001:db8::\(n)",
                                        userAgent: "Mozilla/5.0 \(n)", browser: "Firefox", os: "Linux", deviceType: "Desktop",
                                        deviceName: "Firefox on Linux", createdAt: t, lastActivity: t + 1, expiresAt: t + 86_400_000,
                                        revokedAt: full ? t + 2 : nil, revokeReason: full ? "logout" : nil)),
        .putAnonymousSession(AnonymousSession(id: "a\(n)", createdAt: t, lastActive: t, expiresAt: t + 1000, sessionsCreated: n, commandsRun: 2 * n, uploads: 1)),
        .putSession(session),
        .appendTranscript(TranscriptEntry(sessionID: "s\(n)", order: n, timestamp: t, kind: "reply", level: "warning", text: "line\nwith \"quotes\" \(n)",
                                          dataJSON: full ? #"{"a":[1,2]}"# : nil)),
    ]
}

@Suite("CRC-32C and record encoding")
struct CodecTests {
    @Test func crc32cMatchesTheRFC3720Vectors() {
        // RFC 3720 B.4, and the classic check value of "123456789".
        let vectors: [([UInt8], UInt32)] = [
            ([UInt8](repeating: 0, count: 32), 0x8A91_36AA),
            ([UInt8](repeating: 0xFF, count: 32), 0x62A8_AB43),
            ((0..<32).map { UInt8($0) }, 0x46DD_794E),
            ((0..<32).map { UInt8(31 - $0) }, 0x113F_DB5C),
            (Array("123456789".utf8), 0xE306_9283),
        ]
        for (bytes, expected) in vectors {
            #expect(cshim_crc32c(0, bytes, bytes.count) == expected)
            #expect(cshim_crc32c_software(0, bytes, bytes.count) == expected)
        }
    }

    @Test func hardwareAndTableCRCAgreeAtEveryLengthAndAlignment() {
        var rng = SystemRandomNumberGenerator()
        let data = (0..<300).map { _ in UInt8.random(in: 0...255, using: &rng) }
        data.withUnsafeBytes { raw in
            for start in 0..<9 {
                for len in 0..<(300 - start) {
                    let p = raw.baseAddress! + start
                    #expect(cshim_crc32c(0, p, len) == cshim_crc32c_software(0, p, len))
                }
            }
            // Continuing a CRC equals computing it in one go.
            let whole = cshim_crc32c(0, raw.baseAddress, 300)
            let split = cshim_crc32c(cshim_crc32c(0, raw.baseAddress, 123), raw.baseAddress! + 123, 177)
            #expect(whole == split)
        }
    }

    @Test func trimmingATranscriptDropsExactlyTheEntriesBeforeTheOrderGiven() {
        var state = StoreState()
        for o in 1...10 { state.apply(.appendTranscript(TranscriptEntry(sessionID: "s", order: o, timestamp: 0, kind: "log", level: "info", text: "\(o)"))) }
        state.apply(.trimTranscript(sessionID: "s", before: 4))
        #expect(state.transcripts["s"]?.map(\.order) == Array(4...10))
        state.apply(.trimTranscript(sessionID: "s", before: 1))
        #expect(state.transcripts["s"]?.count == 7, "nothing before 1")
        state.apply(.trimTranscript(sessionID: "other", before: 5))
        #expect(state.transcripts["other"] == nil)
        state.apply(.trimTranscript(sessionID: "s", before: 11))
        #expect(state.transcripts["s"] == nil, "everything dropped")
    }

    @Test func everyMutationRoundTrips() throws {
        for full in [true, false] {
            for m in sampleMutations(7, full: full) + [.deleteUser(id: "u"), .deleteDeviceSession(id: "d"), .deleteAnonymousSession(id: "a"),
                                                       .deleteSession(id: "s"), .deleteTranscript(sessionID: "s"), .trimTranscript(sessionID: "s", before: 42), .noop] {
                var bytes: [UInt8] = []
                m.encode(into: &bytes)
                #expect(try Mutation.decode(bytes[...]) == m)
            }
        }
    }

    @Test func unknownFieldsAreSkippedAndMissingOnesGetDefaults() throws {
        // A later version's user record with an extra field 40, and one from before field 6 existed.
        var w = RecordWriter()
        w.field(1, "u1")
        w.field(2, "alice")
        w.field(40, "something new")
        w.field(5, Int64(1234))
        let u = try User(RecordReader(w.bytes[...]))
        #expect(u.username == "alice" && u.createdAt == 1234 && u.passwordChangedAt == 1234 && !u.isAdmin && u.passwordHash.isEmpty)
        // Negative and large integers survive the zig-zag varint.
        for v: Int64 in [0, -1, 1, Int64.min, Int64.max, -1_790_000_000_000] {
            var w2 = RecordWriter()
            w2.field(3, v)
            #expect(try RecordReader(w2.bytes[...]).int(3) == v)
        }
    }

    @Test func truncatedOrUnknownRecordsAreErrorsNotCrashes() {
        var bytes: [UInt8] = []
        sampleMutations(1)[3].encode(into: &bytes)
        for cut in 1..<bytes.count {
            // Either it decodes (the cut fell between fields) or it is a clean error.
            _ = try? Mutation.decode(bytes[..<cut])
        }
        #expect(throws: StoreError.self) { try Mutation.decode([200, 1, 0][...]) }
        #expect(throws: StoreError.self) { try Mutation.decode([1, 1, 0xFF, 0xFF][...]) }
        #expect(throws: StoreError.self) { try Mutation.decode([][...]) }
    }

    @Test func expiryIndexFindsDueSessionsAndIgnoresMovedOnes() {
        var state = StoreState()
        for n in 0..<50 {
            let s = SessionRecord(id: "s\(n)", name: "", ownerType: "user", ownerID: "o", status: "ready", createdAt: 0, lastActivity: 0,
                                  expiresAt: Int64(1000 + n * 10), idleTimeoutSeconds: 900, lifetimeEndsAt: 99_999)
            state.apply(.putSession(s))
        }
        #expect(state.sessionsExpiring(before: 1095).map(\.id) == (0...9).map { "s\($0)" })
        // A heartbeat moves s0 later; an ended session is never due.
        var s0 = state.sessions["s0"]!
        s0.expiresAt = 5000
        state.apply(.putSession(s0))
        var s1 = state.sessions["s1"]!
        s1.status = "terminated"
        state.apply(.putSession(s1))
        #expect(state.sessionsExpiring(before: 1095).map(\.id) == (2...9).map { "s\($0)" })
        #expect(state.sessionsExpiring(before: 5000).map(\.id).last == "s0")
        // Many moves do not grow the index without bound.
        for k in 0..<10_000 {
            s0.expiresAt = Int64(6000 + k)
            state.apply(.putSession(s0))
        }
        #expect(state.sessionsExpiring(before: 20_000).filter { $0.id == "s0" }.count == 1)
        #expect(state.sessionExpiryEntries <= 2 * 50 + 64 + 1)
        #expect(state.sessions(withStatus: "terminated").map(\.id) == ["s1"])
        #expect(state.sessions(ownedBy: "user", "o").count == 50)
    }
}
