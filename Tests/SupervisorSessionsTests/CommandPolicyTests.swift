import Foundation
import Glibc
import Testing
@testable import SupervisorSessions

@Suite("Command policy")
struct CommandPolicyTests {
    let dir: String = {
        let d = FileManager.default.temporaryDirectory.appendingPathComponent("cp-\(UUID().uuidString)").path
        try? FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
        return d
    }()
    let policy = CommandPolicy()

    func allowed(_ c: String) -> Bool { policy.check(c, directory: dir) == nil }

    @Test func visualisationCommandsPass() {
        for c in ["open 1abc", "open PDB_00001ABC", "open pdb:2xyz format mmcif", "open upload.pdb", "open \(dir)/upload.cif",
                  "open 'my structure.pdb' name mine", "cartoon; color bychain; view", "style #1 stick", "label #1/A:12 text \"Bob's residue\"",
                  "save image.png width 800 height 600 supersample 3", "save session.cxs", "save \(dir)/view.jpg", "info models", "  ;  ; version  ",
                  "turn y 90", "wait 10", "close"] {
            #expect(allowed(c), "\(c): \(policy.check(c, directory: dir)?.reason ?? "")")
        }
    }

    @Test func everyRefusedFormIsRefused() {
        let refused = [
            "runscript evil.py", "remotecontrol rest stop", "exit", "quit", "pip install x", "toolshed install x", "cd /", "shell",
            // wrapped commands, plain and after ';'
            "alias x runscript evil.py", "perframe \"runscript evil.py\"", "time open 1abc", "view; alias x exit", "view ; runscript a.py",
            "color red;exit",
            // open of code, URLs and other formats
            "open evil.py", "open evil.pyc", "open script.cxc", "open x.pdb format python", "open x.pdb format cmd", "open x.cif format PYTHON",
            "open http://example.org/x.pdb", "open https://x/y.cif", "open ftp://x/y.pdb",
            // paths out of the directory
            "open ../other/upload.pdb", "open /etc/passwd.pdb", "open sub/../../x.pdb", "save ../escape.png", "save /tmp/x.png",
            "save ~/x.png", "open .hidden.pdb", "open *.pdb", "save \(dir)/../x.png",
            // save of anything but images and sessions, other file options
            "save evil.py", "save x.cxc", "save x.png format python", "save x.png logFile y", "info models saveFile out.txt",
            "hbonds saveFile /tmp/h.txt", "log save /tmp/x.html",
            // unknown names, odd names, quotes that could read two ways, control characters
            "frobnicate", "OPEN2 x", "\"open\" 1abc", "info models a'b saveFile x b'", "label text \"unterminated", "view\nexit", "view\rexit",
            "open", "save",
        ]
        for c in refused {
            #expect(!allowed(c), "\(c) was allowed")
        }
        #expect(policy.check("view; runscript a.py", directory: dir)?.command == "runscript a.py", "the refused part is named")
    }

    @Test func aSymbolicLinkOutOfTheDirectoryIsRefused() {
        symlink("/etc/passwd", dir + "/link.pdb")
        #expect(!allowed("open link.pdb"))
        symlink("/tmp/elsewhere.png", dir + "/out.png")
        #expect(!allowed("save out.png"))
    }

    @Test func theNeverListCannotBeConfiguredIn() {
        let p = CommandPolicy(allowed: ["view", "alias", "runscript", "time"])
        #expect(p.allowed == ["view"])
        #expect(p.check("alias x view", directory: dir) != nil)
    }
}
