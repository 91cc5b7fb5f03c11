import Foundation
import Glibc
import Testing
import TestSupport
@testable import SupervisorStore

func tempStateDirectory() -> String { DaemonProcess.makeTempDirectory() + "/state" }

/// Writes `writes` separate writes (one frame each) of five records and returns the log's bytes and the
/// state after each write.
private func writeLog(writes: Int) throws -> (bytes: [UInt8], states: [StoreState]) {
    let dir = tempStateDirectory()
    defer { try? FileManager.default.removeItem(atPath: (dir as NSString).deletingLastPathComponent) }
    let store = try Store(stateDirectory: dir)
    var states = [StoreState()]
    var reference = StoreState()
    for n in 0..<writes {
        let m = sampleMutations(n, full: n % 2 == 0)
        try store.write(m)
        for x in m { reference.apply(x) }
        states.append(reference)
    }
    store.close()
    return (try FileIO.readAll(dir + "/store/" + StoreFiles.log(1)), states)
}

/// A store directory holding only `bytes` as its first log.
private func directoryWithLog(_ bytes: [UInt8]) throws -> String {
    let dir = DaemonProcess.makeTempDirectory()
    try Data(bytes).write(to: URL(fileURLWithPath: dir + "/" + StoreFiles.log(1)))
    return dir
}

@Suite("Store recovery")
struct RecoveryTests {
    @Test func aTornTailAtEveryByteOffsetIsDroppedAndEverythingBeforeItKept() throws {
        let (bytes, states) = try writeLog(writes: 6)
        let frames = LogFormat.scan(bytes)!.frames
        #expect(frames.count == 6)
        for cut in 0...bytes.count {
            let dir = try directoryWithLog(Array(bytes[..<cut]))
            defer { try? FileManager.default.removeItem(atPath: dir) }
            let whole = frames.filter { $0.end <= cut }.count
            do {
                let r = try Recovery.recover(directory: dir, format: .current)
                #expect(r.state.sameRecords(as: states[whole]), "cut at \(cut): expected \(whole) writes")
                #expect(r.droppedTailBytes == (cut >= LogFormat.headerSize ? cut - (frames.last { $0.end <= cut }?.end ?? LogFormat.headerSize) : 0))
            } catch {
                Issue.record("cut at \(cut): \(error)")
            }
        }
    }

    @Test func aFlippedByteInTheMiddleStopsRecoveryWithFileAndOffset() throws {
        let (bytes, states) = try writeLog(writes: 5)
        let frames = LogFormat.scan(bytes)!.frames
        for i in 0..<bytes.count {
            var damaged = bytes
            damaged[i] ^= 0x20
            let dir = try directoryWithLog(damaged)
            defer { try? FileManager.default.removeItem(atPath: dir) }
            let path = dir + "/" + StoreFiles.log(1)
            if i < LogFormat.headerSize {
                #expect(throws: StoreError.self) { try Recovery.recover(directory: dir, format: .current) }
                continue
            }
            let frame = frames.firstIndex { i < $0.end }!
            if frame == frames.count - 1 {
                // The last frame is indistinguishable from a torn write: dropped, never acknowledged.
                let r = try Recovery.recover(directory: dir, format: .current)
                #expect(r.state.sameRecords(as: states[frames.count - 1]))
                continue
            }
            do {
                _ = try Recovery.recover(directory: dir, format: .current)
                Issue.record("flipped byte \(i) was not noticed")
            } catch {
                #expect(error.code == .corrupt)
                #expect(error.file == path)
                #expect(error.offset == frames[frame].offset, "byte \(i)")
                #expect(error.message.contains("\(path) is damaged at byte \(frames[frame].offset)"))
            }
        }
    }

    @Test func repairKeepsEverythingBeforeTheDamageAndCopiesTheRestAside() throws {
        let (bytes, states) = try writeLog(writes: 5)
        let frames = LogFormat.scan(bytes)!.frames
        var damaged = bytes
        damaged[frames[2].offset + 30] ^= 0xFF
        let state = DaemonProcess.makeTempDirectory()
        let dir = state + "/store"
        mkdir(dir, 0o700)
        try Data(damaged).write(to: URL(fileURLWithPath: dir + "/" + StoreFiles.log(1)))
        #expect(throws: StoreError.self) { try Store(stateDirectory: state) }
        let report = try Store.check(stateDirectory: state)
        #expect(report.count == 1 && report[0].damageOffset == frames[2].offset && !report[0].tornTail)
        let actions = try Store.repair(stateDirectory: state)
        #expect(actions.count == 1)
        let aside = try FileIO.list(dir).filter { $0.contains(".damaged-") }
        #expect(aside.count == 1)
        #expect(try FileIO.readAll(dir + "/" + aside[0]) == Array(damaged[frames[2].offset...]))
        let store = try Store(stateDirectory: state)
        #expect(store.state.sameRecords(as: states[2]))
        try store.write(sampleMutations(99))
        store.close()
        #expect(try Store.check(stateDirectory: state).allSatisfy { $0.problem == nil })
    }

    @Test func snapshotsAndCompactionKeepExactlyTheSameRecords() throws {
        let dir = tempStateDirectory()
        var o = Store.Options()
        o.compactionBytes = 8 << 10
        o.maxRecordsPerFrame = 7
        var store = try Store(stateDirectory: dir, options: o)
        var reference = StoreState()
        var rng = SystemRandomNumberGenerator()
        for n in 0..<600 {
            var m: [Mutation]
            switch Int.random(in: 0..<10, using: &rng) {
            case 0: m = [.deleteUser(id: "u\(Int.random(in: 0..<n + 1, using: &rng))")]
            case 1: m = [.deleteSession(id: "s\(Int.random(in: 0..<n + 1, using: &rng))")]
            case 2:
                let s = "s\(Int.random(in: 0..<n + 1, using: &rng))"
                m = n % 2 == 0 ? [.deleteTranscript(sessionID: s)] : [.trimTranscript(sessionID: s, before: Int.random(in: 0..<4, using: &rng))]
            case 3: m = [.deleteDeviceSession(id: "d\(Int.random(in: 0..<n + 1, using: &rng))"), .deleteAnonymousSession(id: "a\(n / 2)")]
            default: m = sampleMutations(n % 150, full: n % 3 == 0)
            }
            try store.write(m)
            for x in m { reference.apply(x) }
            if n % 100 == 0 { #expect(store.state.sameRecords(as: reference)) }
        }
        store.close()
        let names = try FileIO.list(dir + "/store")
        let snapshots = names.filter { $0.hasPrefix("snapshot-") }
        #expect(snapshots.count == 1, "\(names)")
        #expect(names.filter { $0.hasPrefix("log-") }.count <= 2, "\(names)")
        store = try Store(stateDirectory: dir, options: o)
        #expect(store.state.sameRecords(as: reference))
        #expect(store.state.user(named: reference.users.values.first?.username.uppercased() ?? "")?.id == reference.users.values.first?.id)
        store.close()
    }

    @Test func theFirstFormatOpensAsTheCurrentOneWithItsTranscriptsAndTrims() throws {
        // Files written by a version 1 program: sessions with transcripts.
        let dir = tempStateDirectory()
        var o = Store.Options()
        o.format = StoreFormat(version: 1)
        var store = try Store(stateDirectory: dir, options: o)
        let m = sampleMutations(5) + (1...3).map { .appendTranscript(TranscriptEntry(sessionID: "sx", order: $0, timestamp: 0, kind: "log", level: "info", text: "\($0)")) }
        try store.write(m)
        let before = store.state
        store.close()
        store = try Store(stateDirectory: dir)
        #expect(StoreFormat.current.version == 2)
        #expect(store.recoveryReport.contains("upgraded from format version 1 to 2"))
        #expect(store.state.sameRecords(as: before))
        // And the record type version 2 added works on them.
        try store.write([.trimTranscript(sessionID: "sx", before: 2)])
        #expect(store.state.transcripts["sx"]?.map(\.order) == [2, 3])
        store.close()
    }

    @Test func anOlderFormatIsUpgradedAndANewerOneRefused() throws {
        let dir = tempStateDirectory()
        let v1 = StoreFormat(version: 1)
        // Version 2 of this test's format stores user names lower-case; its upgrade step rewrites version 1
        // user records.
        let v2 = StoreFormat(version: 2, upgrades: [1: { record in
            guard record.first == 1, let r = try? RecordReader(record.dropFirst()), var u = try? User(r) else { return record }
            u.username = u.username.lowercased()
            var out: [UInt8] = [1]
            var w = RecordWriter()
            u.encode(&w)
            out.append(contentsOf: w.bytes)
            return out
        }])
        var o = Store.Options()
        o.format = v1
        var store = try Store(stateDirectory: dir, options: o)
        try store.write([.putUser(User(id: "u1", username: "Alice", passwordHash: "x", isAdmin: true, createdAt: 1))])
        try store.write([.putUser(User(id: "u2", username: "BOB", passwordHash: "y", isAdmin: false, createdAt: 2))])
        store.close()

        o.format = v2
        store = try Store(stateDirectory: dir, options: o)
        #expect(store.recoveryReport.contains("upgraded from format version 1 to 2"))
        #expect(store.state.users["u1"]?.username == "alice" && store.state.users["u2"]?.username == "bob")
        #expect(store.state.users["u1"]?.isAdmin == true)
        try store.write([.putUser(User(id: "u3", username: "carol", passwordHash: "z", isAdmin: false, createdAt: 3))])
        store.close()
        let reports = try Store.check(stateDirectory: dir)
        #expect(!reports.isEmpty && reports.allSatisfy { $0.version == 2 && $0.problem == nil })
        #expect(try FileIO.list(dir + "/store").contains { $0.hasPrefix("upgrade-backup-v1-") })

        store = try Store(stateDirectory: dir, options: o)
        #expect(store.state.users.count == 3)
        store.close()
        o.format = v1
        do {
            _ = try Store(stateDirectory: dir, options: o)
            Issue.record("a version 1 program opened a version 2 store")
        } catch {
            #expect(error.code == .tooNew)
        }
    }

    @Test func aSecondStoreOnTheSameDirectoryIsRefusedWithTheHoldersPid() throws {
        let dir = tempStateDirectory()
        let first = try Store(stateDirectory: dir)
        do {
            _ = try Store(stateDirectory: dir)
            Issue.record("second store opened")
        } catch {
            #expect(error.code == .locked)
            #expect(error.message.contains("in use by process \(getpid())"))
        }
        first.close()
        let again = try Store(stateDirectory: dir)
        again.close()
    }

    @Test func filesArePrivate() throws {
        let dir = tempStateDirectory()
        mkdir(dir, 0o755)
        let store = try Store(stateDirectory: dir)
        try store.write(sampleMutations(1))
        store.close()
        func mode(_ p: String) -> mode_t {
            var st = stat()
            stat(p, &st)
            return st.st_mode & 0o777
        }
        #expect(mode(dir) == 0o700)
        #expect(mode(dir + "/store") == 0o700)
        #expect(mode(dir + "/lock") == 0o600)
        for name in try FileIO.list(dir + "/store") { #expect(mode(dir + "/store/" + name) == 0o600, "\(name)") }
    }

    @Test func concurrentWritersShareFramesAndEveryAcknowledgedWriteIsVisible() throws {
        let dir = tempStateDirectory()
        let store = try Store(stateDirectory: dir)
        let writers = 64, each = 40
        let failures = DispatchSemaphore(value: 0)
        let done = DispatchSemaphore(value: 0)
        // Real threads (concurrentPerform would use one per CPU), so 64 writes can wait on one fsync.
        for w in 0..<writers {
            Thread {
                defer { done.signal() }
                for n in 0..<each {
                let id = "w\(w)-\(n)"
                do {
                    try store.write([.putUser(User(id: id, username: id, passwordHash: "h", isAdmin: false, createdAt: 0))])
                    // Acknowledged means applied: this thread sees its own write at once.
                    if store.state.users[id] == nil { failures.signal() }
                } catch {
                    failures.signal()
                }
                }
            }.start()
        }
        for _ in 0..<writers { done.wait() }
        #expect(failures.wait(timeout: .now()) == .timedOut)
        store.close()
        let scan = LogFormat.scan(try FileIO.readAll(dir + "/store/" + StoreFiles.log(1)))!
        let records = scan.frames.reduce(0) { $0 + $1.records.count }
        #expect(records == writers * each)
        #expect(scan.frames.count < writers * each, "every write had its own fsync")
        print("group commit: \(writers * each) writes in \(scan.frames.count) frames")
    }
}
