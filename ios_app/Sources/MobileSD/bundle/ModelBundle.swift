import Foundation

/// A bundle folder opened for running: its manifest read and checked, every file's size and SHA-256 verified
/// against the manifest before any graph is loaded (a bundle that fails is refused, with the file named).
public final class ModelBundle: @unchecked Sendable {
    public let url: URL
    public let manifest: BundleManifest
    /// SHA-256 of the manifest.json bytes (latency reports name the bundle by it).
    public let manifestSHA256: String
    public let verifiedFiles: Int
    public let verifiedBytes: Int
    public let verifySeconds: Double

    /// - Parameters:
    ///   - schema: also validate manifest.json against this JSON Schema (the repository's
    ///     mobilesd/schemas/manifest.schema.json); the checks of `BundleManifest` run in any case.
    ///   - verifyChecksums: false only for tools that inspect a bundle without running it.
    public init(url: URL, schema: JSONSchemaValidator? = nil, verifyChecksums: Bool = true) throws {
        self.url = url
        let manifestURL = url.appendingPathComponent("manifest.json")
        guard FileManager.default.fileExists(atPath: manifestURL.path) else {
            throw MobileSDError("\(url.path) is not a mobilesd bundle (no manifest.json)",
                                fix: "pass a folder written by `mobilesd export`")
        }
        let data: Data
        do { data = try Data(contentsOf: manifestURL) } catch {
            throw MobileSDError("cannot read \(manifestURL.path)", fix: "check the bundle is complete and readable")
        }
        let json: JSONValue
        do { json = try JSONValue.parse(data) } catch {
            throw MobileSDError("\(manifestURL.path) is not valid JSON", fix: "re-export or re-copy the bundle")
        }
        manifestSHA256 = SHA256.hexDigest(of: data)
        // version first: a manifest of another version is refused with that reason, not a list of schema errors
        let manifest = try BundleManifest(json: json)
        if let schema {
            let problems = try schema.problems(json)
            if !problems.isEmpty {
                let shown = problems.prefix(8).joined(separator: "\n  ")
                let more = problems.count > 8 ? "\n  ... and \(problems.count - 8) more" : ""
                throw MobileSDError("manifest.json does not follow the bundle schema:\n  \(shown)\(more)",
                                    fix: "re-export the bundle with this mobilesd")
            }
        }
        self.manifest = manifest
        let t0 = ContinuousClock.now
        var bytes = 0
        if verifyChecksums {
            for (rel, info) in manifest.files.sorted(by: { $0.key < $1.key }) {
                let file = try Self.resolve(rel, in: url)
                let attributes = try? FileManager.default.attributesOfItem(atPath: file.path)
                guard let size = (attributes?[.size] as? NSNumber)?.intValue,
                      (attributes?[.type] as? FileAttributeType) == .typeRegular else {
                    throw MobileSDError("bundle file \(rel) is missing", fix: "re-export the bundle or copy it whole")
                }
                guard size == info.size, try SHA256.hexDigest(ofFile: file) == info.sha256 else {
                    throw MobileSDError("bundle file \(rel) does not match its SHA-256 in the manifest (corrupt or edited)",
                                        fix: "re-export the bundle or copy it again")
                }
                bytes += size
            }
            for g in manifest.graphs {
                let expected = manifest.files[g.file]?.sha256 ?? Self.folderSHA256(manifest.files, folder: g.file)
                guard expected == g.sha256 else {
                    throw MobileSDError("graph \(g.name): its sha256 in the manifest does not match its file(s)",
                                        fix: "re-export the bundle")
                }
            }
        }
        verifiedFiles = verifyChecksums ? manifest.files.count : 0
        verifiedBytes = bytes
        verifySeconds = (ContinuousClock.now - t0).seconds
    }

    /// The URL of a bundle path, refusing absolute paths and `..` (a manifest never points outside its bundle).
    public static func resolve(_ rel: String, in root: URL) throws -> URL {
        let parts = rel.split(separator: "/", omittingEmptySubsequences: false)
        guard !rel.hasPrefix("/"), !rel.isEmpty, !parts.contains(".."), !parts.contains("") else {
            throw MobileSDError("manifest.json names the path \(rel), which is outside the bundle",
                                fix: "re-export the bundle")
        }
        return root.appendingPathComponent(rel)
    }

    public func fileURL(_ rel: String) throws -> URL { try Self.resolve(rel, in: url) }

    /// Checksum of a graph that is a folder (a Core ML .mlpackage), as mobilesd.bundle.folder_sha256: the
    /// SHA-256 of `json.dumps({path inside the folder: sha256}, sort_keys=True, separators=(",", ":"))`.
    public static func folderSHA256(_ files: [String: (sha256: String, size: Int)], folder: String) -> String {
        let prefix = folder.hasSuffix("/") ? folder : folder + "/"
        let inner = files.filter { $0.key.hasPrefix(prefix) }
            .map { (String($0.key.dropFirst(prefix.count)), $0.value.sha256) }
            .sorted { $0.0.unicodeScalars.lexicographicallyPrecedes($1.0.unicodeScalars) }
        let body = inner.map { "\(pythonJSONString($0.0)):\(pythonJSONString($0.1))" }.joined(separator: ",")
        return SHA256.hexDigest(of: Array("{\(body)}".utf8))
    }

    /// A string as Python's json.dumps writes it (ensure_ascii: non-ASCII as \uXXXX, surrogate pairs above FFFF).
    static func pythonJSONString(_ s: String) -> String {
        var out = "\""
        for unit in s.utf16 {
            switch unit {
            case 0x22: out += "\\\""
            case 0x5C: out += "\\\\"
            case 0x0A: out += "\\n"
            case 0x0D: out += "\\r"
            case 0x09: out += "\\t"
            case 0x08: out += "\\b"
            case 0x0C: out += "\\f"
            case 0x20...0x7F: out.unicodeScalars.append(Unicode.Scalar(unit)!)
            default: out += String(format: "\\u%04x", unit)
            }
        }
        return out + "\""
    }

    /// The bundle's raw diffusers scheduler config.
    public func schedulerConfig() throws -> [String: JSONValue] {
        guard let o = try JSONValue.parse(contentsOf: try fileURL(manifest.schedulerConfigPath)).object else {
            throw MobileSDError("\(manifest.schedulerConfigPath) is not a JSON object", fix: "re-export the bundle")
        }
        return o
    }

    public func makeTokenizer() throws -> BPETokenizer {
        let t = manifest.tokenizer
        return try BPETokenizer(vocabularyURL: try fileURL(t.vocab), mergesURL: try fileURL(t.merges), bosId: t.bosId,
                                eosId: t.eosId, padId: t.padId, maxLength: t.maxLength, lowercase: t.lowercase)
    }
}

extension Duration {
    /// Seconds as a Double.
    public var seconds: Double {
        let c = components
        return Double(c.seconds) + Double(c.attoseconds) * 1e-18
    }
}
