import Testing
@testable import SupervisorSessions

@Suite("ChimeraX output and structures")
struct OutputAndStructureTests {
    /// What the stand-in (and ChimeraX) prints at start, with the traps.
    let startOutput = "INFO:\nExecuting: remotecontrol rest start port 0 json true\ncmd> REST server started on host 127.0.0.1 port 34719\n"
        + "INFO:\nREST server started on host 127.0.0.1 port 34719\nVisit http://127.0.0.1:34719/cmdline.html for CLI interface\n"

    @Test func thePortComesFromThePortLineNotFromTheEchoAtEveryByteBoundary() {
        let bytes = Array(startOutput.utf8)
        for cut in 0...bytes.count {
            var s = OutputScanner()
            _ = s.feed(bytes[..<cut])
            _ = s.feed(bytes[cut...])
            #expect(s.port == 34719 && s.host == "127.0.0.1", "cut at \(cut)")
        }
        // An unfinished line is not read: "port 4" could still become "port 41000".
        var s = OutputScanner()
        _ = s.feed(Array("cmd> REST server started on host 127.0.0.1 port 4".utf8))
        #expect(s.port == nil)
        _ = s.feed(Array("1000\n".utf8))
        #expect(s.port == 41000)
    }

    @Test func portLinesThatAreNotOneAreIgnored() {
        #expect(OutputScanner.portLine("Executing: remotecontrol rest start port 0 json true") == nil)
        #expect(OutputScanner.portLine("REST server started on host 127.0.0.1 port 0") == nil)
        #expect(OutputScanner.portLine("REST server started on host 127.0.0.1 port 99999") == nil)
        #expect(OutputScanner.portLine("REST server started on host  port 5") == nil)
        #expect(OutputScanner.portLine("xx REST server started on host ::1 port 8080 yy")! == ("::1", 8080))
    }

    @Test func linesAreBoundedAndTheTailKept() {
        var s = OutputScanner(maxLineBytes: 10, tailLines: 3)
        let lines = s.feed(Array("0123456789ABCDEF\nb\r\nc\nd\n".utf8))
        #expect(lines == ["0123456789 […]", "b", "c", "d"])
        #expect(s.tail == ["b", "c", "d"] && s.droppedBytes == 6)
        _ = s.feed(Array("partial".utf8))
        #expect(s.flush() == "partial")
        #expect(s.flush() == nil)
    }

    @Test func pdbIDsClassicAndExtended() {
        #expect(StructureRules.pdbIDForOpen("1ABC") == "1abc")
        #expect(StructureRules.pdbIDForOpen("9xyz") == "9xyz")
        #expect(StructureRules.pdbIDForOpen("pdb_00001abc") == "1abc")
        #expect(StructureRules.pdbIDForOpen("PDB_00001ABC") == "1abc")
        #expect(StructureRules.pdbIDForOpen("pdb_12345678") == "12345678")
        for bad in ["", "abcd", "1ab", "1abcd", "1ab!", "pdb_1abc", "pdb_0000abcde", "pdb-00001abc", "1ab c", "../1a", "1abc;", "１abc"] {
            #expect(StructureRules.pdbIDForOpen(bad) == nil, "\(bad)")
        }
    }

    @Test func uploadsMustAgreeByNameAndContent() {
        let pdb = Array("HEADER    PLANT PROTEIN\nATOM      1  N   THR A   1      17.047  14.099   3.625  1.00 13.79           N\nEND\n".utf8)
        let cif = Array("# comment\ndata_1ABC\n_entry.id 1ABC\n".utf8)
        let mol2 = Array("@<TRIPOS>MOLECULE\nx\n".utf8)
        let sdf = Array("name\n  prog\n\n  3  2  0  0  0  0  0  0  0  0999 V2000\n".utf8)
        let gro = Array("title\n  3\n    1SOL     OW    1   0.126   1.624   1.679\n".utf8)
        let session = Array("# ChimeraX Session version 3\n".utf8) + [0x80, 0x01]
        func ok(_ name: String, _ bytes: [UInt8]) -> Bool {
            guard let (f, gz) = StructureRules.format(ofFilename: name) else { return false }
            return StructureRules.contentMatches(bytes, format: f, gzipped: gz)
        }
        #expect(ok("x.pdb", pdb) && ok("X.ENT", pdb) && ok("a.pdb1", pdb) && ok("a.pqr", pdb))
        #expect(ok("x.cif", cif) && ok("x.mmcif", cif))
        #expect(ok("x.mol2", mol2) && ok("x.sdf", sdf) && ok("x.mol", sdf) && ok("x.gro", gro) && ok("s.cxs", session))
        #expect(ok("x.pdb.gz", [0x1F, 0x8B, 8, 0]))
        #expect(!ok("x.cif.gz", [0x1F, 0x8B, 8, 0]), "ChimeraX does not read compressed mmCIF")
        // Name and content disagree, or the name is not a structure at all.
        #expect(!ok("x.pdb", cif) && !ok("x.cif", pdb) && !ok("x.pdb", Array("hello world\n".utf8)))
        #expect(!ok("x.pdb", [0x7F, 0x45, 0x4C, 0x46, 0]) && !ok("x.pdb.gz", pdb))
        for name in ["x.py", "x.cxc", "x.pyc", "x", "x.xyz", "x.html", "pdb", ".pdb.sh"] { #expect(!ok(name, pdb), "\(name)") }
        #expect(StructureRules.storedName(for: .mmcif, gzipped: false) == "upload.cif")
        #expect(StructureRules.storedName(for: .pdb, gzipped: true) == "upload.pdb.gz")
    }
}
