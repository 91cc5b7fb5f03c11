import Foundation

/// What may be opened: PDB ids (API.md §4, chimerax.md) and uploaded structure files, checked by name and
/// by content.
public enum StructureRules {
    /// A PDB id as ChimeraX takes it after `open`: classic ids (a digit and three alphanumerics) lower-cased;
    /// extended ids (`pdb_` and eight alphanumerics) without `pdb_`, and `pdb_0000XXXX` as `XXXX`. Nil for
    /// anything else.
    public static func pdbIDForOpen(_ raw: String) -> String? {
        let s = raw.lowercased()
        let u = Array(s.utf8)
        func alnum(_ c: UInt8) -> Bool { (c >= 0x30 && c <= 0x39) || (c >= 0x61 && c <= 0x7A) }
        if u.count == 4, u[0] >= 0x30, u[0] <= 0x39, u[1...].allSatisfy(alnum) { return s }
        if u.count == 12, s.hasPrefix("pdb_"), u[4...].allSatisfy(alnum) {
            let body = String(s.dropFirst(4))
            if body.hasPrefix("0000") {
                let classic = String(body.dropFirst(4))
                return pdbIDForOpen(classic) ?? body
            }
            return body
        }
        return nil
    }

    /// Structure formats we accept for upload, by extension (lower case, without the dot).
    public enum Format: String, Sendable, CaseIterable {
        case pdb, mmcif, mmtf, mol2, sdf, gro, pdbqt, pqr, session = "cxs"
    }

    /// The format a file name claims: `.pdb .pdb1 .ent` (and `.gz` of them), `.pqr`, `.cif .mmcif`, `.mmtf`,
    /// `.mol2`, `.sdf .mol`, `.gro`, `.pdbqt`, `.cxs`. Nil for anything else (scripts above all: `.py`, `.cxc`).
    public static func format(ofFilename name: String) -> (Format, gzipped: Bool)? {
        var n = name.lowercased()
        var gz = false
        if n.hasSuffix(".gz") {
            gz = true
            n.removeLast(3)
        }
        guard let dot = n.lastIndex(of: ".") else { return nil }
        let ext = String(n[n.index(after: dot)...])
        let f: Format
        switch ext {
        case "pdb", "pdb1", "ent": f = .pdb
        case "pqr": f = .pqr
        case "cif", "mmcif": f = .mmcif
        case "mmtf": f = .mmtf
        case "mol2": f = .mol2
        case "sdf", "mol": f = .sdf
        case "gro": f = .gro
        case "pdbqt": f = .pdbqt
        case "cxs": f = .session
        default: return nil
        }
        // ChimeraX opens compressed PDB-family files only; compressed mmCIF and others are not read.
        if gz && !(f == .pdb || f == .pqr || f == .pdbqt) { return nil }
        return (f, gz)
    }

    /// Whether the first bytes of a file are what its format says (the whole file is not needed: the first
    /// 64 KiB are plenty).
    public static func contentMatches(_ head: [UInt8], format: Format, gzipped: Bool) -> Bool {
        if gzipped { return head.starts(with: [0x1F, 0x8B]) }
        switch format {
        case .mmtf:
            // MessagePack map at the top level.
            guard let b = head.first else { return false }
            return (0x80...0x8F).contains(b) || b == 0xDE || b == 0xDF
        case .session:
            // "# ChimeraX Session version N", or the same compressed (gzip, LZ4 frame).
            return head.starts(with: Array("# ChimeraX Session version".utf8)) || head.starts(with: [0x1F, 0x8B])
                || head.starts(with: [0x04, 0x22, 0x4D, 0x18])
        default:
            break
        }
        // Text formats: no NUL, mostly printable.
        guard !head.isEmpty, !head.contains(0) else { return false }
        let text = String(decoding: head, as: UTF8.self)
        let lines = text.split(omittingEmptySubsequences: true, whereSeparator: { $0 == "\n" || $0 == "\r\n" || $0 == "\r" })
            .map { String($0) }
        switch format {
        case .pdb, .pqr, .pdbqt:
            let records: Set<String> = ["HEADER", "TITLE ", "COMPND", "SOURCE", "KEYWDS", "EXPDTA", "AUTHOR", "REVDAT", "JRNL  ", "REMARK",
                                        "SEQRES", "HELIX ", "SHEET ", "CRYST1", "ORIGX1", "SCALE1", "MODEL ", "ATOM  ", "HETATM", "TER   ",
                                        "ENDMDL", "CONECT", "MASTER", "END   ", "DBREF ", "HET   ", "HETNAM", "FORMUL", "LINK  ", "SSBOND",
                                        "ROOT  ", "BRANCH", "TORSDOF", "SPLIT ", "OBSLTE", "NUMMDL", "MDLTYP", "CISPEP", "SITE  ", "ANISOU"]
            let atoms = lines.contains { $0.hasPrefix("ATOM") || $0.hasPrefix("HETATM") }
            let known = lines.prefix(200).filter { l in records.contains(String((l + "      ").prefix(6))) || l == "END" || l == "TER" }.count
            return atoms || known >= 2
        case .mmcif:
            guard let first = lines.first(where: { !$0.hasPrefix("#") && !$0.trimmingCharacters(in: .whitespaces).isEmpty }) else { return false }
            return first.hasPrefix("data_")
        case .mol2:
            return text.contains("@<TRIPOS>MOLECULE") || text.contains("@<TRIPOS>ATOM")
        case .sdf:
            return lines.prefix(10).contains { $0.contains("V2000") || $0.contains("V3000") }
        case .gro:
            guard lines.count >= 3 else { return false }
            return Int(lines[1].trimmingCharacters(in: .whitespaces)) != nil
        default:
            return false
        }
    }

    /// A safe name for an upload in the session directory: the structure's kind and the right extension,
    /// never the client's name (no path, no control characters, no surprises).
    public static func storedName(for format: Format, gzipped: Bool) -> String {
        let ext: String
        switch format {
        case .pdb: ext = "pdb"
        case .mmcif: ext = "cif"
        case .session: ext = "cxs"
        default: ext = format.rawValue
        }
        return "upload." + ext + (gzipped ? ".gz" : "")
    }
}
