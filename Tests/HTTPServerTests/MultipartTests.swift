import Testing
@testable import HTTPServer

@Suite("multipart/form-data")
struct MultipartTests {
    func parts(_ body: String, boundary: String = "XyZ") throws(Problem) -> [(String, String?, String)] {
        var out: [(String, String?, String)] = []
        try Multipart.parse(.bytes(Array(body.utf8)), boundary: boundary) { p in
            out.append((p.name, p.filename, String(decoding: p.data, as: UTF8.self)))
        }
        return out
    }

    @Test func boundaryComesFromTheContentType() {
        #expect(Multipart.boundary(of: "multipart/form-data; boundary=XyZ") == "XyZ")
        #expect(Multipart.boundary(of: "Multipart/Form-Data; charset=utf-8; boundary=\"a b\"") == "a b")
        #expect(Multipart.boundary(of: "multipart/mixed; boundary=x") == nil)
        #expect(Multipart.boundary(of: "multipart/form-data") == nil)
        #expect(Multipart.boundary(of: "multipart/form-data; boundary=" + String(repeating: "x", count: 71)) == nil)
    }

    @Test func partsWithNamesFilenamesAndBinaryContent() throws {
        let body = "preamble\r\n--XyZ\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\nmy session\r\n"
            + "--XyZ\r\nContent-Disposition: form-data; name=\"structure\"; filename=\"a \\\"b\\\".pdb\"\r\nContent-Type: chemical/x-pdb\r\n\r\n"
            + "ATOM\r\n--X not the boundary\r\nEND\r\n--XyZ--\r\nepilogue"
        let p = try parts(body)
        #expect(p.count == 2)
        #expect(p[0].0 == "name" && p[0].1 == nil && p[0].2 == "my session")
        #expect(p[1].0 == "structure" && p[1].1 == "a \"b\".pdb" && p[1].2 == "ATOM\r\n--X not the boundary\r\nEND")
    }

    @Test func malformedBodiesAreValidationErrors() {
        let bad = [
            "no boundary here",
            "--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nno closing boundary",
            "--XyZ\r\nContent-Disposition: attachment; name=\"a\"\r\n\r\nx\r\n--XyZ--",
            "--XyZ\r\nContent-Disposition: form-data\r\n\r\nx\r\n--XyZ--",
            "--XyZ\r\nBroken header line\r\n\r\nx\r\n--XyZ--",
            "--XyZX\r\n",
            String(repeating: "--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nx\r\n", count: 17) + "--XyZ--",
        ]
        for b in bad {
            #expect(throws: Problem.self, "\(b.prefix(40))") { try parts(b) }
        }
        #expect(throws: Problem.self) { try Multipart.parse(.empty, boundary: "x") { _ in } }
    }
}
