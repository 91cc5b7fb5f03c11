import Foundation
import SupervisorIdentity
import SupervisorSessions

/// Session directories made ahead of need: `<work-dir>/<id>` with `home`, `start` and `tmp`, mode 0700, each
/// under the id its session will have. Making them took four `mkdir`s on the way from the request to the spawn
/// (0.2 ms at the median; one took 0.97 ms in a trace, while the store's writer was in `fdatasync`). Each id is handed out once (see `Spares`); when none is spare one is made on the
/// spot. Spares left by an earlier run are swept away at start with every other directory of the work
/// directory that is named like a session id and belongs to no session.
final class SessionDirectories: Sendable {
    let workDir: String
    private let spares: Spares<String>

    /// Removes the directories of `workDir` named like a session id that `isSession` does not claim (nothing
    /// else there is touched), then makes `spares` ahead.
    init(workDir: String, spares: Int, isSession: (String) -> Bool) {
        self.workDir = workDir
        for name in (try? FileManager.default.contentsOfDirectory(atPath: workDir)) ?? [] where IdentityService.isUUID(name) && !isSession(name) {
            var isDir: ObjCBool = false
            if FileManager.default.fileExists(atPath: workDir + "/" + name, isDirectory: &isDir), isDir.boolValue {
                try? FileManager.default.removeItem(atPath: workDir + "/" + name)
            }
        }
        self.spares = Spares(label: "session-directories", target: spares) { try? SessionDirectories.make(in: workDir).get() }
    }

    /// A new session id and its directory, or the reason none could be made.
    func take() -> Result<(id: String, directory: String), SessionDirectoryError> {
        if let spare = spares.take() { return .success((spare, workDir + "/" + spare)) }
        return SessionDirectories.make(in: workDir).map { ($0, workDir + "/" + $0) }
    }

    /// An id taken but not used (the start was refused before anything was in it): a spare again.
    func giveBack(_ id: String) { spares.giveBack(id) }

    /// How many are ready now (tests).
    var spareCount: Int { spares.count }

    /// A new id with its directory made.
    private static func make(in workDir: String) -> Result<String, SessionDirectoryError> {
        let id = IdentityService.newUUID()
        let dir = workDir + "/" + id
        for d in [workDir, dir, dir + "/home", dir + "/start", dir + "/tmp"] where mkdir(d, 0o700) != 0 && errno != EEXIST {
            let why = SessionDirectoryError(message: "cannot create \(d): \(String(cString: strerror(errno)))")
            try? FileManager.default.removeItem(atPath: dir)
            return .failure(why)
        }
        return .success(id)
    }
}

struct SessionDirectoryError: Error {
    let message: String
}
