import Foundation
import Testing
@testable import SupervisorCore

@Suite("Session directories made ahead")
struct SessionDirectoriesTests {
    private func tempDir() -> String {
        let d = NSTemporaryDirectory() + "cxs-dirs-" + UUID().uuidString.lowercased()
        try? FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
        return d
    }

    private func eventually(_ condition: () -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(10)
        while !condition() && Date() < deadline { usleep(5_000) }
        return condition()
    }

    @Test func eachTakeIsANewIdWithItsPrivateLayoutAndSparesComeBack() throws {
        let work = tempDir() + "/work"
        let pool = SessionDirectories(workDir: work, spares: 2) { _ in false }
        #expect(eventually { pool.spareCount == 2 })
        var ids = Set<String>()
        for _ in 0..<5 {
            let (id, dir) = try pool.take().get()
            #expect(dir == work + "/" + id && ids.insert(id).inserted)
            for sub in ["", "/home", "/start", "/tmp"] {
                let a = try FileManager.default.attributesOfItem(atPath: dir + sub)
                #expect(a[.type] as? FileAttributeType == .typeDirectory && (a[.posixPermissions] as? Int) == 0o700, "\(dir + sub)")
            }
            #expect(try FileManager.default.contentsOfDirectory(atPath: dir).sorted() == ["home", "start", "tmp"])
        }
        #expect(eventually { pool.spareCount == 2 })
        // An id given back (its start was refused) is handed out again.
        let plain = SessionDirectories(workDir: work, spares: 0) { _ in true }
        let (kept, _) = try plain.take().get()
        plain.giveBack(kept)
        #expect(try plain.take().get().id == kept)
    }

    @Test func atStartDirectoriesOfNoSessionGoAndNothingElseIsTouched() throws {
        let work = tempDir()
        let known = UUID().uuidString.lowercased(), stray = UUID().uuidString.lowercased()
        for d in [known, stray, "not-a-session", ".hidden"] { try FileManager.default.createDirectory(atPath: work + "/" + d, withIntermediateDirectories: true) }
        _ = FileManager.default.createFile(atPath: work + "/" + UUID().uuidString.lowercased(), contents: Data("a file".utf8))
        let pool = SessionDirectories(workDir: work, spares: 0) { $0 == known }
        let left = Set(try FileManager.default.contentsOfDirectory(atPath: work))
        #expect(left.contains(known) && !left.contains(stray) && left.contains("not-a-session") && left.contains(".hidden") && left.count == 4, "\(left)")
        // Without spares, a take makes one on the spot; a work directory that cannot be made is a clear error.
        #expect(try pool.take().get().directory.hasPrefix(work + "/"))
        let blocked = SessionDirectories(workDir: "/proc/no-such/work", spares: 0) { _ in false }
        guard case .failure(let e) = blocked.take() else { Issue.record("a take under /proc succeeded"); return }
        #expect(e.message.contains("cannot create /proc/no-such"), "\(e.message)")
    }
}
