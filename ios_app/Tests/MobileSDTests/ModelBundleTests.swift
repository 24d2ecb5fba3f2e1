import Foundation
import XCTest
@testable import MobileSD

/// Opening a bundle: the manifest against the repository's schema (same file as the Python side), format
/// version, and every file's SHA-256 before anything runs.
final class ModelBundleTests: XCTestCase {
    var root: URL!

    override func setUpWithError() throws { root = try SyntheticBundle.write(chunks: 2) }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: root) }

    func schema() throws -> JSONSchemaValidator { try JSONSchemaValidator(contentsOf: SyntheticBundle.manifestSchema) }

    func testValidBundleOpens() throws {
        let bundle = try ModelBundle(url: root, schema: try schema())
        XCTAssertEqual(bundle.manifest.unetChunks, ["unet_chunk0", "unet_chunk1"])
        XCTAssertEqual(bundle.verifiedFiles, 7)
        XCTAssertEqual(try bundle.manifest.unetGraphs()[0].aliases.map(\.alias), ["skip_0"])
        XCTAssertEqual(bundle.manifestSHA256, try SHA256.hexDigest(ofFile: root.appendingPathComponent("manifest.json"), portable: true))
    }

    func testFusedLoRAsAreRead() throws {
        var m = try SyntheticBundle.manifestJSON(root).object!
        var source = m["source"]!.object!
        source["loras"] = [["file": "/models/pixel-art.safetensors", "sha256": .string(String(repeating: "a", count: 64)),
                            "scale": 0.8, "format": "kohya"]]
        m["source"] = .object(source)
        try JSONValue.object(m).serialized().write(to: root.appendingPathComponent("manifest.json"))
        let bundle = try ModelBundle(url: root, schema: try schema())
        XCTAssertEqual(bundle.manifest.fusedLoRAs.map(\.file), ["pixel-art.safetensors"])
        XCTAssertEqual(bundle.manifest.fusedLoRAs.map(\.scale), [0.8])
    }

    func testOneChangedByteIsRefusedNamingTheFile() throws {
        let file = root.appendingPathComponent("unet_chunk1.onnx")
        var data = try Data(contentsOf: file)
        data[3] ^= 0x01
        try data.write(to: file)
        XCTAssertThrowsError(try ModelBundle(url: root)) { error in
            XCTAssertTrue("\(error)".contains("bundle file unet_chunk1.onnx does not match its SHA-256"), "\(error)")
        }
    }

    func testMissingFileIsRefused() throws {
        try FileManager.default.removeItem(at: root.appendingPathComponent("tokenizer/merges.txt"))
        XCTAssertThrowsError(try ModelBundle(url: root)) { XCTAssertTrue("\($0)".contains("tokenizer/merges.txt is missing"), "\($0)") }
    }

    func testOtherFormatVersionIsRefusedWithAMessage() throws {
        var m = try SyntheticBundle.manifestJSON(root).object!
        m["format_version"] = 1
        try JSONValue.object(m).serialized().write(to: root.appendingPathComponent("manifest.json"))
        XCTAssertThrowsError(try ModelBundle(url: root, schema: try schema())) { error in
            XCTAssertTrue("\(error)".contains("bundle format version 1 is not supported: this client reads version 2"), "\(error)")
        }
    }

    func testSchemaViolationsAreNamed() throws {
        let good = try SyntheticBundle.manifestJSON(root)
        XCTAssertEqual(try schema().problems(good), [])
        func mutated(_ change: (inout [String: JSONValue]) -> Void) -> JSONValue {
            var m = good.object!
            change(&m)
            return .object(m)
        }
        let cases: [(JSONValue, String)] = [
            (mutated { $0["bundle_id"] = "Not An Id" }, "bundle_id"),
            (mutated { $0.removeValue(forKey: "cfg") }, "cfg: is missing"),
            (mutated { $0["files"] = ["../outside": ["sha256": .string(String(repeating: "0", count: 64)), "size": 1]] }, "files: bad key"),
            (mutated { var s = $0["scheduler"]!.object!; s["default"] = "pndm"; $0["scheduler"] = .object(s) }, "scheduler.default"),
            (mutated { var g = $0["graphs"]!.array!; var u = g[1].object!; var meta = u["meta"]!.object!
                meta.removeValue(forKey: "aliases"); u["meta"] = .object(meta); g[1] = .object(u); $0["graphs"] = .array(g) },
             "graphs[1].meta.aliases: is missing"),
            (mutated { $0["quantization"] = "none" }, "quantization: matches 0 of the oneOf"),
            (mutated { var v = $0["verification"]!.object!; v["passed"] = false; $0["verification"] = .object(v) }, "verification.passed"),
        ]
        for (manifest, expected) in cases {
            let problems = try schema().problems(manifest)
            XCTAssertTrue(problems.contains { $0.contains(expected) }, "expected a problem with \(expected), got \(problems)")
        }
    }

    func testPathsOutsideTheBundleAreRefused() {
        for bad in ["/etc/passwd", "../x", "a/../../b", "a//b", ""] {
            XCTAssertThrowsError(try ModelBundle.resolve(bad, in: root), bad)
        }
        XCTAssertNoThrow(try ModelBundle.resolve("tokenizer/vocab.json", in: root))
    }

    func testFolderChecksumMatchesPython() {
        // mobilesd.bundle.folder_sha256 of {"pkg/a": "aa", "pkg/b/c": "bb"}:
        // hashlib.sha256(json.dumps({"a": "aa", "b/c": "bb"}, sort_keys=True, separators=(",", ":")).encode())
        let files: [String: (sha256: String, size: Int)] = ["pkg/b/c": ("bb", 1), "pkg/a": ("aa", 1), "other/x": ("cc", 1)]
        XCTAssertEqual(ModelBundle.folderSHA256(files, folder: "pkg"), SHA256.hexDigest(of: Array(#"{"a":"aa","b/c":"bb"}"#.utf8)))
        XCTAssertEqual(ModelBundle.pythonJSONString("é\"\\\n"), #""\u00e9\"\\\n""#)
    }
}
